//! `type`: a type's names, generation and damage relations, into `types`. (`type` is a Rust
//! keyword, hence the module's name.)

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::doc::{self, Link, LocalName, Named};
use super::{MalformedPayload, Record, Resource};

/// The `type` resource.
pub struct Kind;

impl Resource for Kind {
    fn name(&self) -> &'static str {
        "type"
    }

    fn table(&self) -> &'static str {
        "types"
    }

    fn transform(&self, requested_id: i32, body: &[u8]) -> Result<Record, MalformedPayload> {
        let kind = transform(requested_id, body)?;
        Record::new(&Kind, kind.id, Some(&kind.name), &kind, body)
    }

    fn upsert_sql(&self) -> &'static str {
        UPSERT
    }
}

/// One row of `types`. The damage relations are type names, as `pokemon.types` holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Type {
    pub id: i32,
    pub name: String,
    pub display_name: Option<String>,
    pub generation: Option<i32>,
    /// Before generation IV a move's type made it `physical` or `special`; `None` for types
    /// introduced since.
    pub damage_class: Option<String>,
    pub double_damage_to: Vec<String>,
    pub half_damage_to: Vec<String>,
    pub no_damage_to: Vec<String>,
    pub double_damage_from: Vec<String>,
    pub half_damage_from: Vec<String>,
    pub no_damage_from: Vec<String>,
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
    #[serde(borrow)]
    move_damage_class: Option<Named<'a>>,
    #[serde(borrow, default)]
    damage_relations: Relations<'a>,
}

#[derive(Default, Deserialize)]
struct Relations<'a> {
    #[serde(borrow, default)]
    double_damage_to: Vec<Named<'a>>,
    #[serde(borrow, default)]
    half_damage_to: Vec<Named<'a>>,
    #[serde(borrow, default)]
    no_damage_to: Vec<Named<'a>>,
    #[serde(borrow, default)]
    double_damage_from: Vec<Named<'a>>,
    #[serde(borrow, default)]
    half_damage_from: Vec<Named<'a>>,
    #[serde(borrow, default)]
    no_damage_from: Vec<Named<'a>>,
}

fn names(types: &[Named]) -> Vec<String> {
    types.iter().map(|t| t.name.clone().into_owned()).collect()
}

/// Decodes and checks the type document fetched for `requested_id`.
pub fn transform(requested_id: i32, body: &[u8]) -> Result<Type, MalformedPayload> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| doc::not_a("type", e))?;
    doc::same_id("type", raw.id, requested_id)?;
    doc::named(&raw.name)?;
    let relations = &raw.damage_relations;
    let kind = Type {
        id: raw.id,
        name: raw.name.clone().into_owned(),
        display_name: doc::english_name(&raw.names),
        generation: raw
            .generation
            .as_ref()
            .map(|generation| generation.id("generation"))
            .transpose()?,
        damage_class: raw
            .move_damage_class
            .as_ref()
            .map(|class| class.name.clone().into_owned()),
        double_damage_to: names(&relations.double_damage_to),
        half_damage_to: names(&relations.half_damage_to),
        no_damage_to: names(&relations.no_damage_to),
        double_damage_from: names(&relations.double_damage_from),
        half_damage_from: names(&relations.half_damage_from),
        no_damage_from: names(&relations.no_damage_from),
    };
    doc::refuse_nul([
        ("name", Some(kind.name.as_str())),
        ("names[en].name", kind.display_name.as_deref()),
        ("move_damage_class.name", kind.damage_class.as_deref()),
    ])?;
    let related = [
        &kind.double_damage_to,
        &kind.half_damage_to,
        &kind.no_damage_to,
        &kind.double_damage_from,
        &kind.half_damage_from,
        &kind.no_damage_from,
    ];
    doc::refuse_nul(
        related
            .into_iter()
            .flatten()
            .map(|name| ("a damage relation's type name", Some(name.as_str()))),
    )?;
    Ok(kind)
}

/// Upserts `$1`, a `jsonb` array of [`Type`]s.
const UPSERT: &str = "insert into types (id, name, display_name, generation, damage_class,
        double_damage_to, half_damage_to, no_damage_to, double_damage_from, half_damage_from,
        no_damage_from)
     select id, name, display_name, generation, damage_class, double_damage_to,
            half_damage_to, no_damage_to, double_damage_from, half_damage_from, no_damage_from
     from jsonb_to_recordset($1) as r(id int, name text, display_name text, generation int,
        damage_class text, double_damage_to text[], half_damage_to text[],
        no_damage_to text[], double_damage_from text[], half_damage_from text[],
        no_damage_from text[])
     order by id
     on conflict (id) do update
        set name = excluded.name, display_name = excluded.display_name,
            generation = excluded.generation, damage_class = excluded.damage_class,
            double_damage_to = excluded.double_damage_to,
            half_damage_to = excluded.half_damage_to, no_damage_to = excluded.no_damage_to,
            double_damage_from = excluded.double_damage_from,
            half_damage_from = excluded.half_damage_from,
            no_damage_from = excluded.no_damage_from, ingested_at = now()";

#[cfg(test)]
mod tests {
    use super::*;

    const ELECTRIC: &str = r#"{"id":13,"name":"electric",
        "names":[{"language":{"name":"en","url":"/l/9/"},"name":"Electric"}],
        "generation":{"name":"generation-i","url":"/api/v2/generation/1/"},
        "move_damage_class":{"name":"special","url":"/c/3/"},
        "damage_relations":{"double_damage_to":[{"name":"flying","url":"/t/3/"},
            {"name":"water","url":"/t/11/"}],"no_damage_to":[{"name":"ground","url":"/t/5/"}],
            "double_damage_from":[{"name":"ground","url":"/t/5/"}],"half_damage_from":[],
            "half_damage_to":[],"no_damage_from":[]},
        "pokemon":[{"pokemon":{"name":"pikachu","url":"/api/v2/pokemon/25/"},"slot":1}]}"#;

    #[test]
    fn keeps_names_and_damage_relations() {
        let t = transform(13, ELECTRIC.as_bytes()).unwrap();
        assert_eq!(t.display_name.as_deref(), Some("Electric"));
        assert_eq!(
            (t.generation, t.damage_class.as_deref()),
            (Some(1), Some("special"))
        );
        assert_eq!(t.double_damage_to, ["flying", "water"]);
        assert_eq!(t.no_damage_to, ["ground"]);
        let shadow = transform(
            10002,
            br#"{"id":10002,"name":"shadow","generation":null,
            "move_damage_class":null}"#,
        )
        .unwrap();
        assert!(shadow.double_damage_from.is_empty() && shadow.damage_class.is_none());
    }

    #[test]
    fn refuses_wrong_ids_and_nul() {
        assert!(
            transform(14, ELECTRIC.as_bytes())
                .unwrap_err()
                .0
                .contains("differs")
        );
        let nul = ELECTRIC.replace(r#""water""#, r#""wa\u0000ter""#);
        let error = transform(13, nul.as_bytes()).unwrap_err();
        assert!(
            error.0.starts_with("a damage relation's type name"),
            "{error}"
        );
    }
}
