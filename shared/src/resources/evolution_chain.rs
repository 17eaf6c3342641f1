//! `evolution-chain`: a family's evolution tree (`chain`, each node's `evolves_to[]` nested),
//! flattened into `evolutions`, one row per species of the chain.
//!
//! A species can evolve in several ways (`evolution_details[]`: other games, other places,
//! an item instead of a place); its row keeps one of them, the one PokeAPI marks `is_default`
//! (the first such), or the first if none is marked (documents from before PokeAPI had the
//! mark). `detail_count` says how many there were; the stored document keeps them all.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::doc::{self, Link, Named};
use super::{MalformedPayload, Record, Resource};

/// The `evolution-chain` resource.
pub struct Kind;

impl Resource for Kind {
    fn name(&self) -> &'static str {
        "evolution-chain"
    }

    fn table(&self) -> &'static str {
        "evolutions"
    }

    fn transform(&self, requested_id: i32, body: &[u8]) -> Result<Record, MalformedPayload> {
        let chain = transform(requested_id, body)?;
        Record::new(&Kind, chain.id, None, &chain, body)
    }

    fn upsert_sql(&self) -> &'static str {
        UPSERT
    }
}

/// One chain: its rows in `evolutions`, root first, then each species before the species it
/// evolves into (depth first, in document order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvolutionChain {
    pub id: i32,
    /// The item a parent must hold for its egg to hatch into the baby of the chain.
    pub baby_trigger_item: Option<String>,
    pub evolutions: Vec<Evolution>,
}

/// One species of a chain, and how it is reached from the species it evolves from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evolution {
    pub species_id: i32,
    pub species_name: String,
    /// `None` for the chain's root.
    pub evolves_from_species_id: Option<i32>,
    /// 0 for the root, 1 for what it evolves into, ...
    pub depth: i32,
    pub is_baby: bool,
    /// How it evolves (`level-up`, `use-item`, `trade`, ...), from the kept detail.
    pub trigger: Option<String>,
    pub min_level: Option<i32>,
    /// The item used on it (`use-item`).
    pub item: Option<String>,
    /// The item it holds while it levels up or is traded.
    pub held_item: Option<String>,
    pub min_happiness: Option<i32>,
    /// `day` or `night`; PokeAPI's empty string is none.
    pub time_of_day: Option<String>,
    /// The type of a move it must know (`fairy` for sylveon).
    pub known_move_type: Option<String>,
    pub location: Option<String>,
    /// How many ways of evolving the document lists; the row describes one (see the module
    /// docs).
    pub detail_count: i32,
}

#[derive(Deserialize)]
struct Raw<'a> {
    id: i32,
    #[serde(borrow)]
    baby_trigger_item: Option<Named<'a>>,
    #[serde(borrow)]
    chain: Node<'a>,
}

#[derive(Deserialize)]
struct Node<'a> {
    #[serde(borrow)]
    species: Link<'a>,
    #[serde(default)]
    is_baby: bool,
    #[serde(borrow, default)]
    evolution_details: Vec<Detail<'a>>,
    #[serde(borrow, default)]
    evolves_to: Vec<Node<'a>>,
}

#[derive(Deserialize)]
struct Detail<'a> {
    #[serde(default)]
    is_default: Option<bool>,
    #[serde(borrow, default)]
    trigger: Option<Named<'a>>,
    #[serde(default)]
    min_level: Option<i32>,
    #[serde(borrow, default)]
    item: Option<Named<'a>>,
    #[serde(borrow, default)]
    held_item: Option<Named<'a>>,
    #[serde(default)]
    min_happiness: Option<i32>,
    #[serde(borrow, default)]
    time_of_day: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    known_move_type: Option<Named<'a>>,
    #[serde(borrow, default)]
    location: Option<Named<'a>>,
}

/// Decodes, flattens and checks the chain document fetched for `requested_id`.
pub fn transform(requested_id: i32, body: &[u8]) -> Result<EvolutionChain, MalformedPayload> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| doc::not_a("evolution chain", e))?;
    doc::same_id("evolution chain", raw.id, requested_id)?;
    let mut evolutions = Vec::new();
    // Depth first with an explicit stack: children are pushed in reverse to come off in
    // document order. serde_json's recursion limit already bounds the depth.
    let mut stack: Vec<(&Node, Option<i32>, i32)> = vec![(&raw.chain, None, 0)];
    while let Some((node, parent, depth)) = stack.pop() {
        let species_id = node.species.id("species")?;
        let species_name = node
            .species
            .name()
            .ok_or_else(|| MalformedPayload(format!("species {species_id} has no name")))?;
        doc::named(&species_name)?;
        if evolutions
            .iter()
            .any(|e: &Evolution| e.species_id == species_id)
        {
            return Err(MalformedPayload(format!(
                "species {species_id} appears twice in evolution chain {}",
                raw.id
            )));
        }
        let kept = node
            .evolution_details
            .iter()
            .find(|d| d.is_default == Some(true))
            .or(node.evolution_details.first());
        let name = |named: &Option<Named>| named.as_ref().map(|n| n.name.clone().into_owned());
        evolutions.push(Evolution {
            species_id,
            species_name,
            evolves_from_species_id: parent,
            depth,
            is_baby: node.is_baby,
            trigger: kept.and_then(|d| name(&d.trigger)),
            min_level: kept.and_then(|d| d.min_level),
            item: kept.and_then(|d| name(&d.item)),
            held_item: kept.and_then(|d| name(&d.held_item)),
            min_happiness: kept.and_then(|d| d.min_happiness),
            time_of_day: kept
                .and_then(|d| d.time_of_day.as_deref())
                .filter(|time| !time.is_empty())
                .map(str::to_owned),
            known_move_type: kept.and_then(|d| name(&d.known_move_type)),
            location: kept.and_then(|d| name(&d.location)),
            detail_count: i32::try_from(node.evolution_details.len()).unwrap_or(i32::MAX),
        });
        for child in node.evolves_to.iter().rev() {
            stack.push((child, Some(species_id), depth + 1));
        }
    }
    let chain = EvolutionChain {
        id: raw.id,
        baby_trigger_item: raw.baby_trigger_item.map(|item| item.name.into_owned()),
        evolutions,
    };
    doc::refuse_nul([("baby_trigger_item.name", chain.baby_trigger_item.as_deref())])?;
    for e in &chain.evolutions {
        doc::refuse_nul([
            ("species.name", Some(e.species_name.as_str())),
            ("evolution_details.trigger.name", e.trigger.as_deref()),
            ("evolution_details.item.name", e.item.as_deref()),
            ("evolution_details.held_item.name", e.held_item.as_deref()),
            ("evolution_details.time_of_day", e.time_of_day.as_deref()),
            (
                "evolution_details.known_move_type.name",
                e.known_move_type.as_deref(),
            ),
            ("evolution_details.location.name", e.location.as_deref()),
        ])?;
    }
    Ok(chain)
}

/// Upserts `$1`, a `jsonb` array of [`EvolutionChain`]s: their species' rows, and removes the
/// rows of species a chain no longer holds. The delete and the insert touch different rows, so
/// one statement does both.
const UPSERT: &str = "with chain as (
        select * from jsonb_to_recordset($1) as c(id int, evolutions jsonb)
     ),
     evolution as (
        select chain.id as chain_id, e.*
        from chain, jsonb_to_recordset(chain.evolutions) as e(species_id int,
            species_name text, evolves_from_species_id int, depth int, is_baby boolean,
            trigger text, min_level int, item text, held_item text, min_happiness int,
            time_of_day text, known_move_type text, location text, detail_count int)
     ),
     gone as (
        delete from evolutions old using chain
        where old.chain_id = chain.id
          and not exists (select from evolution e
                          where e.chain_id = old.chain_id and e.species_id = old.species_id)
     )
     insert into evolutions (chain_id, species_id, species_name, evolves_from_species_id,
        depth, is_baby, trigger, min_level, item, held_item, min_happiness, time_of_day,
        known_move_type, location, detail_count)
     select chain_id, species_id, species_name, evolves_from_species_id, depth, is_baby,
            trigger, min_level, item, held_item, min_happiness, time_of_day, known_move_type,
            location, detail_count
     from evolution
     order by chain_id, species_id
     on conflict (chain_id, species_id) do update
        set species_name = excluded.species_name,
            evolves_from_species_id = excluded.evolves_from_species_id,
            depth = excluded.depth, is_baby = excluded.is_baby, trigger = excluded.trigger,
            min_level = excluded.min_level, item = excluded.item,
            held_item = excluded.held_item, min_happiness = excluded.min_happiness,
            time_of_day = excluded.time_of_day, known_move_type = excluded.known_move_type,
            location = excluded.location, detail_count = excluded.detail_count,
            ingested_at = now()";

#[cfg(test)]
mod tests {
    use super::*;

    /// Pichu's chain, cut down: raichu has two ways to evolve, the second marked default.
    const PICHU: &str = r#"{"id":10,"baby_trigger_item":null,"chain":{
        "species":{"name":"pichu","url":"/api/v2/pokemon-species/172/"},"is_baby":true,
        "evolution_details":[],
        "evolves_to":[{"species":{"name":"pikachu","url":"/api/v2/pokemon-species/25/"},
            "is_baby":false,
            "evolution_details":[{"min_happiness":220,"time_of_day":"",
                "trigger":{"name":"level-up","url":"/t/1/"}}],
            "evolves_to":[{"species":{"name":"raichu","url":"/api/v2/pokemon-species/26/"},
                "is_baby":false,
                "evolution_details":[
                    {"is_default":false,"trigger":{"name":"trade","url":"/t/2/"}},
                    {"is_default":true,"item":{"name":"thunder-stone","url":"/i/83/"},
                     "trigger":{"name":"use-item","url":"/t/3/"}}],
                "evolves_to":[]}]},
            {"species":{"name":"pikablu","url":"/api/v2/pokemon-species/9999/"},
             "evolution_details":[{"min_level":30,"trigger":{"name":"level-up"}}],
             "evolves_to":[]}]}}"#;

    #[test]
    fn flattens_the_tree_depth_first() {
        let chain = transform(10, PICHU.as_bytes()).unwrap();
        let rows: Vec<_> = chain
            .evolutions
            .iter()
            .map(|e| (e.species_name.as_str(), e.evolves_from_species_id, e.depth))
            .collect();
        assert_eq!(
            rows,
            [
                ("pichu", None, 0),
                ("pikachu", Some(172), 1),
                ("raichu", Some(25), 2),
                ("pikablu", Some(172), 1)
            ]
        );
        let pichu = &chain.evolutions[0];
        assert!(pichu.is_baby && pichu.trigger.is_none() && pichu.detail_count == 0);
        let pikachu = &chain.evolutions[1];
        assert_eq!(pikachu.min_happiness, Some(220));
        assert_eq!(pikachu.time_of_day, None, "an empty time of day is none");
        let raichu = &chain.evolutions[2];
        assert_eq!(raichu.trigger.as_deref(), Some("use-item"));
        assert_eq!(raichu.item.as_deref(), Some("thunder-stone"));
        assert_eq!(raichu.detail_count, 2);
        assert_eq!(chain.evolutions[3].min_level, Some(30));
        let record = Kind.transform(10, PICHU.as_bytes()).unwrap();
        assert_eq!(record.name(), None);
        assert_eq!(record.row()["evolutions"][2]["species_id"], 26);
    }

    #[test]
    fn refuses_broken_chains() {
        assert!(
            transform(11, PICHU.as_bytes())
                .unwrap_err()
                .0
                .contains("differs")
        );
        let twice = PICHU.replace("pokemon-species/9999/", "pokemon-species/25/");
        assert!(
            transform(10, twice.as_bytes())
                .unwrap_err()
                .0
                .contains("twice")
        );
        let no_id = PICHU.replace("pokemon-species/9999/", "pokemon-species/");
        assert!(
            transform(10, no_id.as_bytes())
                .unwrap_err()
                .0
                .contains("species.url")
        );
        let nul = PICHU.replace("thunder-stone", "thunder\\u0000stone");
        let error = transform(10, nul.as_bytes()).unwrap_err();
        assert!(
            error
                .0
                .starts_with("evolution_details.item.name contains a NUL"),
            "{error}"
        );
        let deep = format!(
            r#"{{"id":1,"chain":{}{}}}"#,
            r#"{"species":{"name":"a","url":"/s/1/"},"evolves_to":["#.repeat(200),
            "]}".repeat(200)
        );
        assert!(transform(1, deep.as_bytes()).is_err(), "nesting is bounded");
    }
}
