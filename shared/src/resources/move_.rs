//! `move`: a move's battle figures, type and English effect, into `moves`. (`move` is a Rust
//! keyword, hence the module's name.)

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::doc::{self, Effect, FlavorText, Link, LocalName, Named};
use super::{MalformedPayload, Record, Resource};

/// The `move` resource.
pub struct Kind;

impl Resource for Kind {
    fn name(&self) -> &'static str {
        "move"
    }

    fn table(&self) -> &'static str {
        "moves"
    }

    fn transform(&self, requested_id: i32, body: &[u8]) -> Result<Record, MalformedPayload> {
        let game_move = transform(requested_id, body)?;
        Record::new(&Kind, game_move.id, Some(&game_move.name), &game_move, body)
    }

    fn upsert_sql(&self) -> &'static str {
        UPSERT
    }
}

/// One row of `moves`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub id: i32,
    pub name: String,
    pub display_name: Option<String>,
    pub generation: Option<i32>,
    pub type_id: Option<i32>,
    /// The type's name, as `pokemon.types` holds types.
    pub type_name: Option<String>,
    /// `physical`, `special` or `status`.
    pub damage_class: Option<String>,
    /// `None` for moves that deal no direct damage.
    pub power: Option<i32>,
    /// `None` for moves that never miss.
    pub accuracy: Option<i32>,
    pub pp: Option<i32>,
    pub priority: Option<i32>,
    /// Percent chance of the effect (`None`: always, or no chance involved).
    pub effect_chance: Option<i32>,
    /// The English `effect_entries[].effect`, `$effect_chance` replaced by the chance.
    pub effect: Option<String>,
    /// The English `effect_entries[].short_effect`, `$effect_chance` replaced by the chance.
    pub short_effect: Option<String>,
    /// The English flavour text of the latest version group, on one line.
    pub flavor_text: Option<String>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    id: i32,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    names: Vec<LocalName<'a>>,
    #[serde(borrow)]
    generation: Option<Link<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Link<'a>>,
    #[serde(borrow)]
    damage_class: Option<Named<'a>>,
    power: Option<i32>,
    accuracy: Option<i32>,
    pp: Option<i32>,
    priority: Option<i32>,
    effect_chance: Option<i32>,
    #[serde(borrow, default)]
    effect_entries: Vec<Effect<'a>>,
    #[serde(borrow, default)]
    flavor_text_entries: Vec<FlavorText<'a>>,
}

/// The effect text as the game would print it: PokeAPI writes the chance as a placeholder.
/// Without a chance the placeholder stays, so that a reader sees something is missing.
fn with_chance(text: &str, chance: Option<i32>) -> String {
    match chance {
        Some(chance) => text.replace("$effect_chance", &chance.to_string()),
        None => text.to_owned(),
    }
}

/// Decodes and checks the move document fetched for `requested_id`.
pub fn transform(requested_id: i32, body: &[u8]) -> Result<Move, MalformedPayload> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| doc::not_a("move", e))?;
    doc::same_id("move", raw.id, requested_id)?;
    doc::named(&raw.name)?;
    let effect = doc::english_effect(&raw.effect_entries);
    let game_move = Move {
        id: raw.id,
        name: raw.name.clone().into_owned(),
        display_name: doc::english_name(&raw.names),
        generation: raw
            .generation
            .as_ref()
            .map(|generation| generation.id("generation"))
            .transpose()?,
        type_id: raw.kind.as_ref().map(|kind| kind.id("type")).transpose()?,
        type_name: raw.kind.as_ref().and_then(Link::name),
        damage_class: raw
            .damage_class
            .as_ref()
            .map(|class| class.name.clone().into_owned()),
        power: raw.power,
        accuracy: raw.accuracy,
        pp: raw.pp,
        priority: raw.priority,
        effect_chance: raw.effect_chance,
        effect: effect.map(|e| with_chance(&e.effect, raw.effect_chance)),
        short_effect: effect
            .and_then(|e| e.short_effect.as_deref())
            .map(|text| with_chance(text, raw.effect_chance)),
        flavor_text: doc::latest_english_flavor(&raw.flavor_text_entries).map(|(text, _)| text),
    };
    doc::refuse_nul([
        ("name", Some(game_move.name.as_str())),
        ("names[en].name", game_move.display_name.as_deref()),
        ("type.name", game_move.type_name.as_deref()),
        ("damage_class.name", game_move.damage_class.as_deref()),
        ("effect_entries[en].effect", game_move.effect.as_deref()),
        (
            "effect_entries[en].short_effect",
            game_move.short_effect.as_deref(),
        ),
        (
            "flavor_text_entries[en].flavor_text",
            game_move.flavor_text.as_deref(),
        ),
    ])?;
    Ok(game_move)
}

/// Upserts `$1`, a `jsonb` array of [`Move`]s.
const UPSERT: &str = "insert into moves (id, name, display_name, generation, type_id, type_name,
        damage_class, power, accuracy, pp, priority, effect_chance, effect, short_effect,
        flavor_text)
     select id, name, display_name, generation, type_id, type_name, damage_class, power,
            accuracy, pp, priority, effect_chance, effect, short_effect, flavor_text
     from jsonb_to_recordset($1) as r(id int, name text, display_name text, generation int,
        type_id int, type_name text, damage_class text, power int, accuracy int, pp int,
        priority int, effect_chance int, effect text, short_effect text, flavor_text text)
     order by id
     on conflict (id) do update
        set name = excluded.name, display_name = excluded.display_name,
            generation = excluded.generation, type_id = excluded.type_id,
            type_name = excluded.type_name, damage_class = excluded.damage_class,
            power = excluded.power, accuracy = excluded.accuracy, pp = excluded.pp,
            priority = excluded.priority, effect_chance = excluded.effect_chance,
            effect = excluded.effect, short_effect = excluded.short_effect,
            flavor_text = excluded.flavor_text, ingested_at = now()";

#[cfg(test)]
mod tests {
    use super::*;

    const THUNDERBOLT: &str = r#"{"id":85,"name":"thunderbolt","accuracy":100,"power":90,
        "pp":15,"priority":0,"effect_chance":10,
        "damage_class":{"name":"special","url":"/c/3/"},
        "type":{"name":"electric","url":"/api/v2/type/13/"},
        "generation":{"name":"generation-i","url":"/api/v2/generation/1/"},
        "names":[{"language":{"name":"en"},"name":"Thunderbolt"}],
        "effect_entries":[{"effect":"Inflicts regular damage.  Has a $effect_chance% chance to paralyze the target.",
            "language":{"name":"en"},"short_effect":"Has a $effect_chance% chance to paralyze the target."}],
        "learned_by_pokemon":[{"name":"pikachu","url":"/api/v2/pokemon/25/"}]}"#;

    #[test]
    fn keeps_figures_type_and_the_effect_with_its_chance() {
        let m = transform(85, THUNDERBOLT.as_bytes()).unwrap();
        assert_eq!((m.power, m.accuracy, m.pp), (Some(90), Some(100), Some(15)));
        assert_eq!(
            (m.type_id, m.type_name.as_deref()),
            (Some(13), Some("electric"))
        );
        assert_eq!(m.damage_class.as_deref(), Some("special"));
        assert_eq!(
            m.short_effect.as_deref(),
            Some("Has a 10% chance to paralyze the target.")
        );
        assert!(
            m.effect
                .as_deref()
                .is_some_and(|e| e.contains("a 10% chance"))
        );
        let no_chance = THUNDERBOLT.replace(r#""effect_chance":10"#, r#""effect_chance":null"#);
        let m = transform(85, no_chance.as_bytes()).unwrap();
        assert!(
            m.short_effect
                .as_deref()
                .is_some_and(|e| e.contains("$effect_chance"))
        );
    }

    #[test]
    fn refuses_wrong_ids_bad_links_and_nul() {
        assert!(
            transform(1, THUNDERBOLT.as_bytes())
                .unwrap_err()
                .0
                .contains("differs")
        );
        let bad_type = THUNDERBOLT.replace("/api/v2/type/13/", "/api/v2/type/electric/");
        assert!(
            transform(85, bad_type.as_bytes())
                .unwrap_err()
                .0
                .contains("type.url")
        );
        let nul = THUNDERBOLT.replace(r#""name":"Thunderbolt""#, r#""name":"Thunder\u0000bolt""#);
        let error = transform(85, nul.as_bytes()).unwrap_err();
        assert!(error.0.starts_with("names[en].name"), "{error}");
    }
}
