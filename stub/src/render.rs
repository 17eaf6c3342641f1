//! Hand-written JSON text for synthetic payloads.
//!
//! Written straight into a byte buffer rather than through `serde_json::Value`, because the
//! per-request part of a payload (everything except `moves`) is rendered on every detail request
//! and must cost microseconds. Keys are emitted in alphabetical order and compactly, like a
//! re-serialised real payload. All vocabulary is internal ASCII; only [`string`] escapes.

use crate::sprites;
use crate::synth::Spec;
use crate::vocab::{
    GENERATIONS, ITEMS, LEARN_METHODS, STATS, TYPES, VERSION_GROUPS, VERSIONS, ability_name,
    move_name,
};

const CRY_BASE: &str = "https://raw.githubusercontent.com/PokeAPI/cries/main/cries/pokemon/";

pub(crate) fn raw(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

/// A quoted, escaped JSON string.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    raw(out, if b { "true" } else { "false" });
}

/// `{"name":"<parts joined by '-'>","url":"/api/v2/<kind>/<id>/"}`
fn named(out: &mut Vec<u8>, parts: &[&str], kind: &str, id: i64) {
    raw(out, "{\"name\":\"");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'-');
        }
        raw(out, part);
    }
    raw(out, "\",\"url\":\"/api/v2/");
    raw(out, kind);
    out.push(b'/');
    int(out, id);
    raw(out, "/\"}");
}

/// One `version_group_details[]` element of a move entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Detail {
    /// Index into [`VERSION_GROUPS`].
    pub group: u8,
    /// Index into [`LEARN_METHODS`].
    pub method: u8,
    pub level: u8,
    pub order: Option<u8>,
}

/// `{"move":{...},"version_group_details":[...]}` for move `move_index`.
pub(crate) fn move_entry(out: &mut Vec<u8>, move_index: usize, details: &[Detail]) {
    raw(out, "{\"move\":");
    named(out, &move_name(move_index), "move", move_index as i64 + 1);
    raw(out, ",\"version_group_details\":[");
    for (i, d) in details.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        raw(out, "{\"level_learned_at\":");
        int(out, i64::from(d.level));
        raw(out, ",\"move_learn_method\":");
        let (method, method_id) = LEARN_METHODS[usize::from(d.method)];
        named(out, &[method], "move-learn-method", i64::from(method_id));
        raw(out, ",\"order\":");
        match d.order {
            Some(o) => int(out, i64::from(o)),
            None => raw(out, "null"),
        }
        raw(out, ",\"version_group\":");
        let (group, group_id) = VERSION_GROUPS[usize::from(d.group)];
        named(out, &[group], "version-group", i64::from(group_id));
        out.push(b'}');
    }
    raw(out, "]}");
}

/// Everything before the moves' contents: `{"abilities":...,"moves":[`.
///
/// `served_id` is the top-level `id` written; it differs from `spec.id` only for the WrongId fault.
pub(crate) fn head(out: &mut Vec<u8>, spec: &Spec, served_id: i32, name: &str) {
    let id = i64::from(spec.id);
    raw(out, "{\"abilities\":[");
    for (i, a) in spec.abilities().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        raw(out, "{\"ability\":");
        let index = usize::from(a.index);
        named(out, &ability_name(index), "ability", index as i64 + 1);
        raw(out, ",\"is_hidden\":");
        boolean(out, a.hidden);
        raw(out, ",\"slot\":");
        int(out, i64::from(a.slot));
        out.push(b'}');
    }
    raw(out, "],\"base_experience\":");
    match spec.base_experience {
        Some(b) => int(out, i64::from(b)),
        None => raw(out, "null"),
    }
    raw(out, ",\"cries\":{\"latest\":\"");
    raw(out, CRY_BASE);
    raw(out, "latest/");
    int(out, id);
    raw(out, ".ogg\",\"legacy\":");
    if spec.legacy_cry {
        out.push(b'"');
        raw(out, CRY_BASE);
        raw(out, "legacy/");
        int(out, id);
        raw(out, ".ogg\"");
    } else {
        raw(out, "null");
    }
    raw(out, "},\"forms\":[");
    named(out, &[name], "pokemon-form", i64::from(spec.form_id));
    raw(out, "],\"game_indices\":[");
    if spec.game_indices {
        let versions = VERSIONS.iter().filter(|v| v.2 >= spec.generation);
        for (i, &(version, version_id, _)) in versions.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            raw(out, "{\"game_index\":");
            int(out, id);
            raw(out, ",\"version\":");
            named(out, &[version], "version", i64::from(version_id));
            out.push(b'}');
        }
    }
    raw(out, "],\"height\":");
    int(out, i64::from(spec.height));
    raw(out, ",\"held_items\":[");
    if let Some((item, rarity)) = spec.held_item {
        let (item_name, item_id) = ITEMS[usize::from(item)];
        raw(out, "{\"item\":");
        named(out, &[item_name], "item", i64::from(item_id));
        raw(out, ",\"version_details\":[");
        for (i, &(version, version_id, _)) in VERSIONS[VERSIONS.len() - 4..].iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            raw(out, "{\"rarity\":");
            int(out, i64::from(rarity));
            raw(out, ",\"version\":");
            named(out, &[version], "version", i64::from(version_id));
            out.push(b'}');
        }
        raw(out, "]}");
    }
    raw(out, "],\"id\":");
    int(out, i64::from(served_id));
    raw(out, ",\"is_default\":");
    boolean(out, !spec.is_form);
    raw(out, ",\"location_area_encounters\":\"/api/v2/pokemon/");
    int(out, id);
    raw(out, "/encounters\",\"moves\":[");
}

/// Everything after the moves' contents: `],"name":...,"weight":N}`.
pub(crate) fn tail(out: &mut Vec<u8>, spec: &Spec, name: &str, species_name: &str) {
    raw(out, "],\"name\":");
    string(out, name);
    raw(out, ",\"order\":");
    int(out, i64::from(spec.order));
    raw(out, ",\"past_abilities\":[");
    if spec.past_ability {
        raw(
            out,
            "{\"abilities\":[{\"ability\":null,\"is_hidden\":true,\"slot\":3}],\"generation\":",
        );
        named(out, &[GENERATIONS[3]], "generation", 4);
        out.push(b'}');
    }
    raw(out, "],\"past_stats\":[");
    if let Some(special) = spec.past_special {
        raw(out, "{\"generation\":");
        named(out, &[GENERATIONS[0]], "generation", 1);
        raw(out, ",\"stats\":[{\"base_stat\":");
        int(out, i64::from(special));
        raw(out, ",\"effort\":0,\"stat\":");
        named(out, &["special"], "stat", 9);
        raw(out, "}]}");
    }
    raw(out, "],\"past_types\":[");
    if let Some(t) = spec.past_type {
        let (type_name, type_id) = TYPES[usize::from(t)];
        raw(out, "{\"generation\":");
        named(out, &[GENERATIONS[4]], "generation", 5);
        raw(out, ",\"types\":[{\"slot\":1,\"type\":");
        named(out, &[type_name], "type", i64::from(type_id));
        raw(out, "}]}");
    }
    raw(out, "],\"species\":");
    named(
        out,
        &[species_name],
        "pokemon-species",
        i64::from(spec.species_id),
    );
    raw(out, ",\"sprites\":");
    sprites::write(out, spec);
    raw(out, ",\"stats\":[");
    for (i, &(stat, stat_id)) in STATS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        raw(out, "{\"base_stat\":");
        int(out, i64::from(spec.stats[i]));
        raw(out, ",\"effort\":");
        int(out, i64::from(spec.efforts[i]));
        raw(out, ",\"stat\":");
        named(out, &[stat], "stat", i64::from(stat_id));
        out.push(b'}');
    }
    raw(out, "],\"types\":[");
    for (i, &t) in spec.types().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (type_name, type_id) = TYPES[usize::from(t)];
        raw(out, "{\"slot\":");
        int(out, i as i64 + 1);
        raw(out, ",\"type\":");
        named(out, &[type_name], "type", i64::from(type_id));
        out.push(b'}');
    }
    raw(out, "],\"weight\":");
    int(out, i64::from(spec.weight));
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_and_strings() {
        let mut out = Vec::new();
        for n in [0i64, 7, -1, 10301, i64::MIN, i64::MAX] {
            out.clear();
            int(&mut out, n);
            assert_eq!(String::from_utf8_lossy(&out), n.to_string());
        }
        out.clear();
        string(&mut out, "a\"b\\c\n\u{1}é");
        let back: String = serde_json::from_slice(&out).expect("valid json string");
        assert_eq!(back, "a\"b\\c\n\u{1}é");
    }
}
