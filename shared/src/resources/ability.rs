//! `ability`: an ability's names and what it does, in English, into `abilities`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::doc::{self, Effect, FlavorText, Link, LocalName};
use super::{MalformedPayload, Record, Resource};

/// The `ability` resource.
pub struct Kind;

impl Resource for Kind {
    fn name(&self) -> &'static str {
        "ability"
    }

    fn table(&self) -> &'static str {
        "abilities"
    }

    fn transform(&self, requested_id: i32, body: &[u8]) -> Result<Record, MalformedPayload> {
        let ability = transform(requested_id, body)?;
        Record::new(&Kind, ability.id, Some(&ability.name), &ability, body)
    }

    fn upsert_sql(&self) -> &'static str {
        UPSERT
    }
}

/// One row of `abilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ability {
    pub id: i32,
    pub name: String,
    pub display_name: Option<String>,
    pub generation: Option<i32>,
    /// False for abilities of spin-off games (ids from 10001).
    pub is_main_series: Option<bool>,
    /// The English `effect_entries[].effect`: the whole rule, in paragraphs.
    pub effect: Option<String>,
    /// The English `effect_entries[].short_effect`: one sentence.
    pub short_effect: Option<String>,
    /// The English flavour text of the latest version group, on one line; newer abilities
    /// often have this but no effect text.
    pub flavor_text: Option<String>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    id: i32,
    #[serde(borrow)]
    name: Cow<'a, str>,
    is_main_series: Option<bool>,
    #[serde(borrow, default)]
    names: Vec<LocalName<'a>>,
    #[serde(borrow)]
    generation: Option<Link<'a>>,
    #[serde(borrow, default)]
    effect_entries: Vec<Effect<'a>>,
    #[serde(borrow, default)]
    flavor_text_entries: Vec<FlavorText<'a>>,
}

/// Decodes and checks the ability document fetched for `requested_id`.
pub fn transform(requested_id: i32, body: &[u8]) -> Result<Ability, MalformedPayload> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| doc::not_a("ability", e))?;
    doc::same_id("ability", raw.id, requested_id)?;
    doc::named(&raw.name)?;
    let effect = doc::english_effect(&raw.effect_entries);
    let ability = Ability {
        id: raw.id,
        name: raw.name.clone().into_owned(),
        display_name: doc::english_name(&raw.names),
        generation: raw
            .generation
            .as_ref()
            .map(|generation| generation.id("generation"))
            .transpose()?,
        is_main_series: raw.is_main_series,
        effect: effect.map(|e| e.effect.clone().into_owned()),
        short_effect: effect.and_then(|e| e.short_effect.clone().map(Cow::into_owned)),
        flavor_text: doc::latest_english_flavor(&raw.flavor_text_entries).map(|(text, _)| text),
    };
    doc::refuse_nul([
        ("name", Some(ability.name.as_str())),
        ("names[en].name", ability.display_name.as_deref()),
        ("effect_entries[en].effect", ability.effect.as_deref()),
        (
            "effect_entries[en].short_effect",
            ability.short_effect.as_deref(),
        ),
        (
            "flavor_text_entries[en].flavor_text",
            ability.flavor_text.as_deref(),
        ),
    ])?;
    Ok(ability)
}

/// Upserts `$1`, a `jsonb` array of [`Ability`]s.
const UPSERT: &str = "insert into abilities (id, name, display_name, generation, is_main_series,
        effect, short_effect, flavor_text)
     select id, name, display_name, generation, is_main_series, effect, short_effect,
            flavor_text
     from jsonb_to_recordset($1) as r(id int, name text, display_name text, generation int,
        is_main_series boolean, effect text, short_effect text, flavor_text text)
     order by id
     on conflict (id) do update
        set name = excluded.name, display_name = excluded.display_name,
            generation = excluded.generation, is_main_series = excluded.is_main_series,
            effect = excluded.effect, short_effect = excluded.short_effect,
            flavor_text = excluded.flavor_text, ingested_at = now()";

#[cfg(test)]
mod tests {
    use super::*;

    const STATIC: &str = r#"{"id":9,"name":"static","is_main_series":true,
        "generation":{"name":"generation-iii","url":"/api/v2/generation/3/"},
        "names":[{"language":{"name":"en","url":"/l/9/"},"name":"Static"}],
        "effect_entries":[{"effect":"Kontakt paralysiert.","language":{"name":"de"},
                           "short_effect":"Paralysiert."},
                          {"effect":"Whenever a move makes contact...\n\nOverworld: more.",
                           "language":{"name":"en"},"short_effect":"Has a 30% chance."}],
        "flavor_text_entries":[{"flavor_text":"Paralyzes on\ncontact.","language":{"name":"en"},
            "version_group":{"name":"ruby-sapphire","url":"/api/v2/version-group/5/"}}],
        "pokemon":[{"is_hidden":false,"pokemon":{"name":"pikachu","url":"/api/v2/pokemon/25/"},
                    "slot":1}]}"#;

    #[test]
    fn keeps_the_english_effect() {
        let a = transform(9, STATIC.as_bytes()).unwrap();
        assert_eq!(a.display_name.as_deref(), Some("Static"));
        assert_eq!(a.short_effect.as_deref(), Some("Has a 30% chance."));
        assert!(
            a.effect
                .as_deref()
                .is_some_and(|e| e.ends_with("Overworld: more."))
        );
        assert_eq!(a.flavor_text.as_deref(), Some("Paralyzes on contact."));
        assert_eq!((a.generation, a.is_main_series), (Some(3), Some(true)));
        let bare = transform(
            10060,
            br#"{"id":10060,"name":"x","is_main_series":false,
            "generation":{"url":"/api/v2/generation/4/"}}"#,
        )
        .unwrap();
        assert_eq!((bare.effect, bare.flavor_text), (None, None));
    }

    #[test]
    fn refuses_wrong_ids_blank_names_and_nul() {
        assert!(
            transform(8, STATIC.as_bytes())
                .unwrap_err()
                .0
                .contains("differs")
        );
        let blank = STATIC.replace(r#""name":"static""#, r#""name":" ""#);
        assert!(
            transform(9, blank.as_bytes())
                .unwrap_err()
                .0
                .contains("empty")
        );
        let nul = STATIC.replace("Has a 30%", "Has a\\u0000 30%");
        let error = transform(9, nul.as_bytes()).unwrap_err();
        assert!(
            error.0.starts_with("effect_entries[en].short_effect"),
            "{error}"
        );
    }
}
