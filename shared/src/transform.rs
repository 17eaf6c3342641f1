//! From a PokeAPI detail document to the row pokeq stores.
//!
//! Only the fields the row needs are decoded: serde_json reads the document into [`Raw`] and
//! skips every other member (`moves` is most of every payload) as `IgnoredAny`, which it
//! validates without building anything. A document that lacks a required field, has the wrong
//! type, or contradicts the request is a permanent failure whose reason names what was wrong.
//!
//! A hand-made SIMD scanner once cut the fields out before serde_json saw them, twice as fast
//! as this, but only because it checked nothing but the brackets of what it skipped. Made to
//! refuse what serde_json refuses, it was no faster on compact documents, the form the API
//! sends (issue #13; `bench scan` and bench/README.md), and it went.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pokemon {
    pub id: i32,
    pub name: String,
    /// Decimetres, as PokeAPI gives it; stored as `height_m = height / 10`.
    pub height: i32,
    /// Hectograms, as PokeAPI gives it; stored as `weight_kg = weight / 10`.
    pub weight: i32,
    pub base_experience: Option<i32>,
    /// Type names in slot order.
    pub types: Vec<String>,
    /// Ability names in slot order.
    pub abilities: Vec<String>,
    pub stats: Vec<Stat>,
    pub sprite: Option<String>,
    pub species: Option<String>,
    pub is_default: Option<bool>,
    pub order: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stat {
    pub name: String,
    pub base_stat: i32,
    pub effort: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedPayload(pub String);

#[derive(Deserialize)]
struct Raw {
    id: i32,
    name: String,
    height: i32,
    weight: i32,
    base_experience: Option<i32>,
    types: Vec<RawType>,
    #[serde(default)]
    abilities: Vec<RawAbility>,
    #[serde(default)]
    stats: Vec<RawStat>,
    sprites: Option<RawSprites>,
    species: Option<Named>,
    is_default: Option<bool>,
    order: Option<i32>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct RawType {
    slot: i32,
    #[serde(rename = "type")]
    kind: Named,
}

#[derive(Deserialize)]
struct RawAbility {
    slot: i32,
    ability: Option<Named>,
}

#[derive(Deserialize)]
struct RawStat {
    base_stat: i32,
    effort: i32,
    stat: Named,
}

#[derive(Deserialize)]
struct RawSprites {
    front_default: Option<String>,
}

/// Decodes and checks the detail document fetched for `requested_id`.
pub fn transform(requested_id: i32, body: &[u8]) -> Result<Pokemon, MalformedPayload> {
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| MalformedPayload(format!("payload is not a PokeAPI pokemon: {e}")))?;
    if raw.id != requested_id {
        return Err(MalformedPayload(format!(
            "payload id {} differs from the requested id {requested_id}",
            raw.id
        )));
    }
    if raw.name.trim().is_empty() {
        return Err(MalformedPayload("payload name is empty".into()));
    }
    if raw.height < 0 || raw.weight < 0 {
        return Err(MalformedPayload(format!(
            "negative height {} or weight {}",
            raw.height, raw.weight
        )));
    }
    if raw.types.is_empty() {
        return Err(MalformedPayload("payload has no types".into()));
    }
    let mut types = raw.types;
    types.sort_by_key(|t| t.slot);
    let mut abilities: Vec<_> = raw
        .abilities
        .into_iter()
        .filter_map(|a| a.ability.map(|named| (a.slot, named.name)))
        .collect();
    abilities.sort_by_key(|(slot, _)| *slot);
    let pokemon = Pokemon {
        id: raw.id,
        name: raw.name,
        height: raw.height,
        weight: raw.weight,
        base_experience: raw.base_experience,
        types: types.into_iter().map(|t| t.kind.name).collect(),
        abilities: abilities.into_iter().map(|(_, name)| name).collect(),
        stats: raw
            .stats
            .into_iter()
            .map(|s| Stat {
                name: s.stat.name,
                base_stat: s.base_stat,
                effort: s.effort,
            })
            .collect(),
        sprite: raw.sprites.and_then(|s| s.front_default),
        species: raw.species.map(|s| s.name),
        is_default: raw.is_default,
        order: raw.order,
    };
    if let Some(field) = pokemon.field_with_nul() {
        return Err(MalformedPayload(format!(
            "{field} contains a NUL character (\\u0000), which Postgres cannot store"
        )));
    }
    Ok(pokemon)
}

impl Pokemon {
    /// The first stored string holding U+0000, which no Postgres `text` or `jsonb` value can
    /// hold: refused here, the document fails as malformed with a reason naming the field,
    /// instead of as an error in a group commit shared with other items.
    fn field_with_nul(&self) -> Option<&'static str> {
        let nul = |text: &str| text.contains('\0');
        if nul(&self.name) {
            Some("name")
        } else if self.types.iter().any(|t| nul(t)) {
            Some("a type name")
        } else if self.abilities.iter().any(|a| nul(a)) {
            Some("an ability name")
        } else if self.stats.iter().any(|s| nul(&s.name)) {
            Some("a stat name")
        } else if self.sprite.as_deref().is_some_and(nul) {
            Some("sprites.front_default")
        } else if self.species.as_deref().is_some_and(nul) {
            Some("species.name")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIKACHU: &str = r#"{"id":25,"name":"pikachu","height":4,"weight":60,
        "base_experience":112,"moves":[{"move":{"name":"mega-punch"}}],
        "types":[{"slot":1,"type":{"name":"electric","url":"/api/v2/type/13/"}}],
        "abilities":[{"slot":3,"is_hidden":true,"ability":{"name":"lightning-rod"}},
                     {"slot":1,"is_hidden":false,"ability":{"name":"static"}}],
        "stats":[{"base_stat":35,"effort":0,"stat":{"name":"hp"}}],
        "sprites":{"front_default":"https://example.org/25.png"},
        "species":{"name":"pikachu"},"is_default":true,"order":35}"#;

    #[test]
    fn keeps_what_the_row_needs_in_slot_order() {
        let p = transform(25, PIKACHU.as_bytes()).unwrap();
        assert_eq!(p.name, "pikachu");
        assert_eq!((p.height, p.weight), (4, 60));
        assert_eq!(p.types, ["electric"]);
        assert_eq!(p.abilities, ["static", "lightning-rod"]);
        assert_eq!(p.stats[0].name, "hp");
        assert_eq!(p.sprite.as_deref(), Some("https://example.org/25.png"));
    }

    #[test]
    fn refuses_documents_that_are_not_the_requested_pokemon() {
        let wrong_id = transform(26, PIKACHU.as_bytes()).unwrap_err();
        assert!(wrong_id.0.contains("differs"), "{wrong_id}");
        let missing = transform(25, br#"{"id":25,"name":"x","height":1}"#).unwrap_err();
        assert!(missing.0.contains("missing field"), "{missing}");
        let negative = PIKACHU.replace(r#""height":4"#, r#""height":-4"#);
        assert!(
            transform(25, negative.as_bytes())
                .unwrap_err()
                .0
                .contains("negative")
        );
        assert!(transform(25, b"{\"id\":25,").is_err());
        assert!(transform(25, b"[]").is_err());
    }

    /// A member the row does not read is still checked (issue #13): `moves` broken in any way
    /// serde_json refuses makes the whole document malformed.
    #[test]
    fn refuses_a_damaged_member_it_does_not_read() {
        let moves = r#""moves":[{"move":{"name":"mega-punch"}}]"#;
        for member in [
            "[1,,2]",
            "[1,]",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            "[tru]",
            "[01]",
            "[1.]",
            "[-]",
            r#"["\x"]"#,
            r#"["\u12"]"#,
            "[\"a\tb\"]",
        ] {
            let body = PIKACHU.replace(moves, &format!(r#""moves":{member}"#));
            assert_ne!(body, PIKACHU, "the test changes the document");
            let error = transform(25, body.as_bytes()).unwrap_err();
            assert!(
                error.0.starts_with("payload is not a PokeAPI pokemon: "),
                "{member}: {error}"
            );
        }
    }

    #[test]
    fn refuses_nul_in_any_stored_string() {
        for (field, from, to) in [
            ("name", r#""name":"pikachu""#, r#""name":"pika\u0000chu""#),
            (
                "species.name",
                r#"{"name":"pikachu"}"#,
                r#"{"name":"pikachu\u0000"}"#,
            ),
            ("a type name", r#""electric""#, r#""elec\u0000tric""#),
            ("an ability name", r#""static""#, r#""\u0000static""#),
            ("a stat name", r#""hp""#, r#""h\u0000p""#),
            ("sprites.front_default", "25.png", "25\\u0000.png"),
        ] {
            let body = PIKACHU.replacen(from, to, 1);
            assert_ne!(body, PIKACHU, "{field}: the test changes the document");
            let error = transform(25, body.as_bytes()).unwrap_err();
            assert!(
                error.0.starts_with(field) && error.0.contains("NUL"),
                "{field}: {error}"
            );
        }
        let escaped_backslash = PIKACHU.replace("pikachu", r"pika\\u0000chu");
        assert!(
            transform(25, escaped_backslash.as_bytes()).is_ok(),
            "an escaped backslash followed by u0000 is no NUL"
        );
    }

    /// Every real payload in `POKEAPI_SAMPLES` (set by `.ci/run`) transforms. Under CI a missing
    /// `POKEAPI_SAMPLES` fails the test, as `testkit::samples_dir` does for the other crates
    /// (the testkit is not built for this crate's own tests).
    #[test]
    fn transforms_every_real_sample() {
        let Some(dir) = std::env::var_os("POKEAPI_SAMPLES") else {
            let on_ci =
                std::env::var("CI").is_ok_and(|ci| !matches!(ci.as_str(), "" | "false" | "0"));
            assert!(
                !on_ci,
                "POKEAPI_SAMPLES is not set, and under CI it must be: set it to the absolute path \
                 of a folder of real PokeAPI payloads (`.ci/run` uses ../shared/pokeapi-samples)"
            );
            eprintln!("POKEAPI_SAMPLES not set: real samples not checked");
            return;
        };
        let dir = std::path::Path::new(&dir).join("pokemon");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let id: i32 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            let body = std::fs::read(&path).unwrap();
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let p = transform(id, &body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(p.name, value["name"].as_str().unwrap());
            assert_eq!(i64::from(p.height), value["height"].as_i64().unwrap());
            assert_eq!(i64::from(p.weight), value["weight"].as_i64().unwrap());
            assert_eq!(
                p.base_experience.map(i64::from),
                value["base_experience"].as_i64()
            );
            let types: Vec<_> = value["types"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["type"]["name"].as_str().unwrap())
                .collect();
            assert_eq!(p.types, types);
            checked += 1;
        }
        assert!(checked > 0, "no samples in {}", dir.display());
    }
}
