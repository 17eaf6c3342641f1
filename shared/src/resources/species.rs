//! `pokemon-species`: what the Pokédex says about a species (its genus, its flavour text, how it
//! is caught and where it sits in its evolution chain), into `species`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::doc::{self, FlavorText, Link, LocalName};
use super::{MalformedPayload, Record, Resource};

/// The `pokemon-species` resource.
pub struct Kind;

impl Resource for Kind {
    fn name(&self) -> &'static str {
        "pokemon-species"
    }

    fn table(&self) -> &'static str {
        "species"
    }

    fn transform(&self, requested_id: i32, body: &[u8]) -> Result<Record, MalformedPayload> {
        let species = transform(requested_id, body)?;
        Record::new(&Kind, species.id, Some(&species.name), &species, body)
    }

    fn upsert_sql(&self) -> &'static str {
        UPSERT
    }
}

/// One row of `species`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Species {
    pub id: i32,
    pub name: String,
    /// The English name (`names[]`), e.g. "Mr. Mime".
    pub display_name: Option<String>,
    /// The English genus, e.g. "Evolution Pokémon".
    pub genus: Option<String>,
    /// The English flavour text of the latest game that has one, on one line (see
    /// `doc::latest_english_flavor`).
    pub flavor_text: Option<String>,
    /// The game `flavor_text` comes from, e.g. `legends-arceus`.
    pub flavor_text_version: Option<String>,
    pub capture_rate: i32,
    pub base_happiness: Option<i32>,
    pub is_baby: bool,
    pub is_legendary: bool,
    pub is_mythical: bool,
    pub evolution_chain_id: Option<i32>,
    pub evolves_from_species_id: Option<i32>,
    /// The generation that introduced the species (1 for `generation-i`).
    pub generation: Option<i32>,
    /// PokeAPI's `order`: families together, babies before their parents.
    pub sort_order: Option<i32>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    id: i32,
    #[serde(borrow)]
    name: Cow<'a, str>,
    capture_rate: i32,
    base_happiness: Option<i32>,
    is_baby: bool,
    is_legendary: bool,
    is_mythical: bool,
    order: Option<i32>,
    #[serde(borrow, default)]
    names: Vec<LocalName<'a>>,
    #[serde(borrow, default)]
    genera: Vec<Genus<'a>>,
    #[serde(borrow, default)]
    flavor_text_entries: Vec<FlavorText<'a>>,
    #[serde(borrow)]
    evolution_chain: Option<Link<'a>>,
    #[serde(borrow)]
    evolves_from_species: Option<Link<'a>>,
    #[serde(borrow)]
    generation: Option<Link<'a>>,
}

#[derive(Deserialize)]
struct Genus<'a> {
    #[serde(borrow)]
    genus: Cow<'a, str>,
    #[serde(borrow)]
    language: doc::Named<'a>,
}

/// Decodes and checks the species document fetched for `requested_id`.
pub fn transform(requested_id: i32, body: &[u8]) -> Result<Species, MalformedPayload> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| doc::not_a("species", e))?;
    doc::same_id("species", raw.id, requested_id)?;
    doc::named(&raw.name)?;
    let (flavor_text, flavor_text_version) = doc::latest_english_flavor(&raw.flavor_text_entries)
        .map_or((None, None), |(text, version)| (Some(text), version));
    let species = Species {
        id: raw.id,
        name: raw.name.into_owned(),
        display_name: doc::english_name(&raw.names),
        genus: raw
            .genera
            .iter()
            .find(|g| g.language.name == doc::ENGLISH)
            .map(|g| g.genus.clone().into_owned()),
        flavor_text,
        flavor_text_version,
        capture_rate: raw.capture_rate,
        base_happiness: raw.base_happiness,
        is_baby: raw.is_baby,
        is_legendary: raw.is_legendary,
        is_mythical: raw.is_mythical,
        evolution_chain_id: raw
            .evolution_chain
            .map(|chain| chain.id("evolution_chain"))
            .transpose()?,
        evolves_from_species_id: raw
            .evolves_from_species
            .map(|from| from.id("evolves_from_species"))
            .transpose()?,
        generation: raw
            .generation
            .map(|generation| generation.id("generation"))
            .transpose()?,
        sort_order: raw.order,
    };
    doc::refuse_nul([
        ("name", Some(species.name.as_str())),
        ("names[en].name", species.display_name.as_deref()),
        ("genera[en].genus", species.genus.as_deref()),
        (
            "flavor_text_entries[en].flavor_text",
            species.flavor_text.as_deref(),
        ),
        (
            "flavor_text_entries[en].version.name",
            species.flavor_text_version.as_deref(),
        ),
    ])?;
    Ok(species)
}

/// Upserts `$1`, a `jsonb` array of [`Species`].
const UPSERT: &str = "insert into species (id, name, display_name, genus, flavor_text,
        flavor_text_version, capture_rate, base_happiness, is_baby, is_legendary, is_mythical,
        evolution_chain_id, evolves_from_species_id, generation, sort_order)
     select id, name, display_name, genus, flavor_text, flavor_text_version, capture_rate,
            base_happiness, is_baby, is_legendary, is_mythical, evolution_chain_id,
            evolves_from_species_id, generation, sort_order
     from jsonb_to_recordset($1) as r(id int, name text, display_name text, genus text,
        flavor_text text, flavor_text_version text, capture_rate int, base_happiness int,
        is_baby boolean, is_legendary boolean, is_mythical boolean, evolution_chain_id int,
        evolves_from_species_id int, generation int, sort_order int)
     order by id
     on conflict (id) do update
        set name = excluded.name, display_name = excluded.display_name,
            genus = excluded.genus, flavor_text = excluded.flavor_text,
            flavor_text_version = excluded.flavor_text_version,
            capture_rate = excluded.capture_rate, base_happiness = excluded.base_happiness,
            is_baby = excluded.is_baby, is_legendary = excluded.is_legendary,
            is_mythical = excluded.is_mythical,
            evolution_chain_id = excluded.evolution_chain_id,
            evolves_from_species_id = excluded.evolves_from_species_id,
            generation = excluded.generation, sort_order = excluded.sort_order,
            ingested_at = now()";

#[cfg(test)]
mod tests {
    use super::*;

    const PICHU: &str = r#"{"id":172,"name":"pichu","capture_rate":190,
        "base_happiness":50,"is_baby":true,"is_legendary":false,"is_mythical":false,"order":31,
        "names":[{"language":{"name":"fr","url":"/l/5/"},"name":"Pichu"},
                 {"language":{"name":"en","url":"/l/9/"},"name":"Pichu"}],
        "genera":[{"genus":"Baby Mouse Pok\u00e9mon","language":{"name":"en","url":"/l/9/"}}],
        "flavor_text_entries":[
            {"flavor_text":"It is not yet\nskilled at storing\felectricity.","language":{"name":"en"},
             "version":{"name":"gold","url":"/api/v2/version/4/"}},
            {"flavor_text":"Despite its small\nsize, it can zap.","language":{"name":"en"},
             "version":{"name":"x","url":"/api/v2/version/23/"}}],
        "evolution_chain":{"url":"https://pokeapi.co/api/v2/evolution-chain/10/"},
        "evolves_from_species":null,
        "generation":{"name":"generation-ii","url":"/api/v2/generation/2/"},
        "varieties":[{"is_default":true,"pokemon":{"name":"pichu","url":"/api/v2/pokemon/172/"}}]}"#;

    #[test]
    fn keeps_what_a_pokedex_shows() {
        let s = transform(172, PICHU.as_bytes()).unwrap();
        assert_eq!(s.name, "pichu");
        assert_eq!(s.genus.as_deref(), Some("Baby Mouse Pokémon"));
        assert_eq!(
            s.flavor_text.as_deref(),
            Some("Despite its small size, it can zap.")
        );
        assert_eq!(s.flavor_text_version.as_deref(), Some("x"));
        assert_eq!((s.capture_rate, s.is_baby), (190, true));
        assert_eq!(s.evolution_chain_id, Some(10));
        assert_eq!(s.evolves_from_species_id, None);
        assert_eq!(s.generation, Some(2));
        let record = Kind.transform(172, PICHU.as_bytes()).unwrap();
        assert_eq!(record.name(), Some("pichu"));
        assert_eq!(record.row()["evolution_chain_id"], 10);
    }

    #[test]
    fn refuses_what_is_not_the_requested_species() {
        assert!(
            transform(25, PICHU.as_bytes())
                .unwrap_err()
                .0
                .contains("differs")
        );
        let missing = PICHU.replace(r#""capture_rate":190,"#, "");
        assert!(
            transform(172, missing.as_bytes())
                .unwrap_err()
                .0
                .contains("capture_rate")
        );
        let no_id = PICHU.replace("evolution-chain/10/", "evolution-chain/ten/");
        assert!(
            transform(172, no_id.as_bytes())
                .unwrap_err()
                .0
                .contains("evolution_chain.url")
        );
        assert!(transform(172, b"[]").is_err());
    }

    #[test]
    fn refuses_nul_in_kept_text_and_anywhere_in_the_document() {
        let genus = PICHU.replace("Baby Mouse", "Baby\\u0000Mouse");
        let error = transform(172, genus.as_bytes()).unwrap_err();
        assert!(
            error.0.starts_with("genera[en].genus contains a NUL"),
            "{error}"
        );
        let elsewhere = PICHU.replacen(r#""name":"Pichu"}"#, r#""name":"Pi\u0000chu"}"#, 1);
        assert!(
            transform(172, elsewhere.as_bytes()).is_ok(),
            "a French name is not kept"
        );
        let error = Kind.transform(172, elsewhere.as_bytes()).unwrap_err();
        assert!(error.0.contains("the document holds a NUL"), "{error}");
        let surrogate = PICHU.replace(r#"{"name":"pichu","url""#, r#"{"name":"pi\ud800chu","url""#);
        assert_ne!(surrogate, PICHU);
        let error = Kind.transform(172, surrogate.as_bytes()).unwrap_err();
        assert!(error.0.contains("cannot store as JSON"), "{error}");
    }
}
