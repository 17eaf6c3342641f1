//! The PokeAPI resources pokeq stores beside `pokemon` (issue #14, "the whole Pokédex"):
//! `pokemon-species`, `evolution-chain`, `type`, `ability` and `move`.
//!
//! Each resource is one module: the row it stores, the transform from the API's document to that
//! row, and the SQL that upserts the row into its table (created by a migration in
//! `shared/migrations/`). [`Resource`] is what they have in common, so that a caller holding
//! only a resource's name (a job's `resource`) finds everything else: [`by_name`] gives the
//! resource, [`Resource::detail_path`] where to fetch it, [`Resource::transform`] its
//! [`Record`], and [`crate::resource_rows`] stores records with their raw documents and item
//! state.
//!
//! **Adding a resource** is one module implementing [`Resource`] (plus its line in [`ALL`]) and
//! one migration creating its table (plus its line in the store's migration list).
//!
//! `pokemon` is not one of them: its documents are 100 times larger (90% `moves`), so its
//! transform ([`crate::transform`]) skips what it does not keep, its row has a table of its own
//! and no raw document is kept. Every resource's rows, pokemon's too, go through the consumer's
//! group commit ([`crate::commit`]). It is still a resource name ([`POKEMON`], [`is_known`]).
//!
//! These documents are small (a few KB to 100 KB), so the transforms decode them with serde into
//! structs that borrow from the document, and keep what a Pokédex asks for: English texts,
//! ids taken from links (ids are not contiguous: types 10001 and 10002, evolution chains skip
//! numbers), and nothing Postgres cannot store.

pub mod ability;
pub mod evolution_chain;
pub mod move_;
pub mod species;
pub mod type_;

mod doc;

pub use crate::transform::MalformedPayload;

/// The name of the `pokemon` resource, which has a path of its own (see the module docs).
pub const POKEMON: &str = "pokemon";

/// A PokeAPI resource pokeq stores: its name, how to fetch, transform and upsert it.
pub trait Resource: Send + Sync + 'static {
    /// PokeAPI's name: the path segment under the API root, and the `resource` of its jobs, of
    /// its `ingest_items` rows and of its `resource_documents` rows.
    fn name(&self) -> &'static str;

    /// The table its rows are upserted into.
    fn table(&self) -> &'static str;

    /// Decodes and checks the document fetched for `requested_id`. A document that is not this
    /// resource's, contradicts the request or holds what Postgres cannot store is a permanent
    /// failure whose reason says what was wrong.
    fn transform(&self, requested_id: i32, body: &[u8]) -> Result<Record, MalformedPayload>;

    /// One statement that upserts rows of this resource: `$1` is a `jsonb` array of the
    /// [`Record::row`]s of distinct ids. Rows already stored are replaced.
    fn upsert_sql(&self) -> &'static str;

    /// The detail document's path under the API root, e.g. `pokemon-species/133/`.
    fn detail_path(&self, id: i32) -> String {
        format!("{}/{id}/", self.name())
    }
}

/// Every resource of this module, in the order their rows are written: nothing refers to
/// another's rows by foreign key, so the order only makes a batch's writes predictable.
pub static ALL: [&'static dyn Resource; 5] = [
    &species::Kind,
    &evolution_chain::Kind,
    &type_::Kind,
    &ability::Kind,
    &move_::Kind,
];

/// The resource named `name` (PokeAPI's spelling: `pokemon-species`, `evolution-chain`, ...);
/// `None` for `pokemon` (see the module docs) and for names pokeq does not store.
pub fn by_name(name: &str) -> Option<&'static dyn Resource> {
    ALL.iter().copied().find(|resource| resource.name() == name)
}

/// Whether pokeq stores the resource named `name`: `pokemon` or one of [`ALL`].
pub fn is_known(name: &str) -> bool {
    name == POKEMON || by_name(name).is_some()
}

/// Every resource name pokeq stores, `pokemon` first.
pub fn names() -> impl Iterator<Item = &'static str> {
    std::iter::once(POKEMON).chain(ALL.iter().map(|resource| resource.name()))
}

/// A transformed document: the row (or rows) its resource stores, and the document itself, both
/// checked to be storable by Postgres (valid UTF-8, no NUL anywhere).
#[derive(Debug, Clone)]
pub struct Record {
    resource: &'static dyn Resource,
    id: i32,
    name: Option<String>,
    row: serde_json::Value,
    document: String,
}

impl Record {
    /// Builds the record of `row`, the transform of `body`; refuses a document Postgres's
    /// `jsonb` cannot hold, wherever the offending text sits (the transforms have already
    /// refused the fields they keep, naming them).
    pub fn new(
        resource: &'static dyn Resource,
        id: i32,
        name: Option<&str>,
        row: &impl serde::Serialize,
        body: &[u8],
    ) -> Result<Self, MalformedPayload> {
        let document = doc::storable_document(body)?;
        let row = serde_json::to_value(row).map_err(|e| {
            MalformedPayload(format!(
                "{} {id}: row not serialisable: {e}",
                resource.name()
            ))
        })?;
        Ok(Self {
            resource,
            id,
            name: name.map(str::to_owned),
            row,
            document: document.to_owned(),
        })
    }

    pub fn resource(&self) -> &'static dyn Resource {
        self.resource
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    /// The name the item is known by (`ingest_items.name`); evolution chains have none.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The row as its resource's [`Resource::upsert_sql`] reads it.
    pub fn row(&self) -> &serde_json::Value {
        &self.row
    }

    /// The document as fetched, for `resource_documents`.
    pub fn document(&self) -> &str {
        &self.document
    }
}

impl std::fmt::Debug for dyn Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_found_by_its_name_and_names_differ() {
        let names: Vec<_> = names().collect();
        assert_eq!(
            names,
            [
                "pokemon",
                "pokemon-species",
                "evolution-chain",
                "type",
                "ability",
                "move"
            ]
        );
        for resource in ALL {
            assert_eq!(
                by_name(resource.name()).map(|r| r.name()),
                Some(resource.name())
            );
            assert!(is_known(resource.name()));
        }
        let tables: std::collections::HashSet<_> = ALL.iter().map(|r| r.table()).collect();
        assert_eq!(tables.len(), ALL.len());
        assert!(by_name(POKEMON).is_none() && is_known(POKEMON));
        assert!(!is_known("berry") && !is_known("") && !is_known("Pokemon"));
        assert_eq!(
            by_name("pokemon-species").map(|r| r.detail_path(133)),
            Some("pokemon-species/133/".to_owned())
        );
    }

    /// The samples folder in `POKEAPI_SAMPLES` (set by `.ci/run`), or `None` with a note; under
    /// CI a missing one fails, as `testkit::samples_dir` does for the other crates (the testkit
    /// is not built for this crate's own tests).
    fn samples() -> Option<std::path::PathBuf> {
        let Some(dir) = std::env::var_os("POKEAPI_SAMPLES") else {
            let on_ci =
                std::env::var("CI").is_ok_and(|ci| !matches!(ci.as_str(), "" | "false" | "0"));
            assert!(
                !on_ci,
                "POKEAPI_SAMPLES is not set, and under CI it must be: set it to the absolute path \
                 of a folder of real PokeAPI payloads (`.ci/run` uses ../shared/pokeapi-samples)"
            );
            eprintln!("POKEAPI_SAMPLES not set: real samples not checked");
            return None;
        };
        Some(dir.into())
    }

    /// Every real document of every resource in the samples transforms, and its record says
    /// what the document says.
    #[test]
    fn transforms_every_real_sample() {
        let Some(dir) = samples() else { return };
        let mut checked = 0;
        for resource in ALL {
            let folder = dir.join(resource.name());
            if !folder.is_dir() {
                eprintln!("no {}: {} not checked", folder.display(), resource.name());
                continue;
            }
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                let id: i32 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                let body = std::fs::read(&path).unwrap();
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let record = resource
                    .transform(id, &body)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(record.id(), id);
                assert_eq!(record.name(), value["name"].as_str(), "{}", path.display());
                assert_eq!(record.document().len(), body.len());
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} samples in {}", dir.display());
    }

    /// What the samples of eevee's family say, as the rows keep it.
    #[test]
    fn real_samples_keep_what_a_pokedex_shows() {
        let Some(dir) = samples() else { return };
        let read = |path: &str| std::fs::read(dir.join(path)).unwrap();
        let eevee = species::transform(133, &read("pokemon-species/133.json")).unwrap();
        assert_eq!(eevee.genus.as_deref(), Some("Evolution Pokémon"));
        assert_eq!(eevee.display_name.as_deref(), Some("Eevee"));
        assert_eq!(eevee.flavor_text_version.as_deref(), Some("legends-arceus"));
        assert!(
            eevee.flavor_text.as_deref().is_some_and(|text| text
                .starts_with("Harbors the potential to evolve into")
                && !text.contains('\n')),
            "{:?}",
            eevee.flavor_text
        );
        assert_eq!(
            (eevee.capture_rate, eevee.evolution_chain_id),
            (45, Some(67))
        );
        assert_eq!(
            (eevee.generation, eevee.evolves_from_species_id),
            (Some(1), None)
        );

        let chain = evolution_chain::transform(67, &read("evolution-chain/67.json")).unwrap();
        let from_eevee: Vec<_> = chain
            .evolutions
            .iter()
            .filter(|e| e.evolves_from_species_id == Some(133))
            .map(|e| e.species_name.as_str())
            .collect();
        assert_eq!(
            from_eevee,
            [
                "vaporeon", "jolteon", "flareon", "espeon", "umbreon", "leafeon", "glaceon",
                "sylveon"
            ]
        );
        let leafeon = chain
            .evolutions
            .iter()
            .find(|e| e.species_id == 470)
            .unwrap();
        assert_eq!(
            (
                leafeon.trigger.as_deref(),
                leafeon.item.as_deref(),
                leafeon.detail_count
            ),
            (Some("use-item"), Some("leaf-stone"), 6),
            "the default of six ways"
        );
        let espeon = chain
            .evolutions
            .iter()
            .find(|e| e.species_id == 196)
            .unwrap();
        assert_eq!(
            (espeon.min_happiness, espeon.time_of_day.as_deref()),
            (Some(160), Some("day"))
        );
        let bulbasaur = evolution_chain::transform(1, &read("evolution-chain/1.json")).unwrap();
        let levels: Vec<_> = bulbasaur.evolutions.iter().map(|e| e.min_level).collect();
        assert_eq!(levels, [None, Some(16), Some(32)]);

        let electric = type_::transform(13, &read("type/13.json")).unwrap();
        assert_eq!(electric.double_damage_to, ["flying", "water"]);
        assert_eq!(electric.no_damage_to, ["ground"]);
        let thunderbolt = move_::transform(85, &read("move/85.json")).unwrap();
        assert_eq!(
            (
                thunderbolt.power,
                thunderbolt.accuracy,
                thunderbolt.pp,
                thunderbolt.type_id
            ),
            (Some(90), Some(100), Some(15), Some(13))
        );
        assert_eq!(thunderbolt.damage_class.as_deref(), Some("special"));
        let static_ = ability::transform(9, &read("ability/9.json")).unwrap();
        assert_eq!(
            static_.short_effect.as_deref(),
            Some("Has a 30% chance of paralyzing attacking Pokémon on contact.")
        );
    }

    /// Every document the stub generates, of every resource, transforms, and what the stub
    /// links agrees with the rows: a species' chain holds it under its parent.
    #[test]
    fn transforms_every_stub_document() {
        use pokeapi_stub::{Dataset, Resource as Stub};
        let dataset = Dataset::synthetic(1100, 7);
        let mut chain_of = std::collections::HashMap::new();
        for &id in dataset.resource_ids(Stub::EvolutionChain) {
            let body = dataset.document(Stub::EvolutionChain, id).unwrap();
            let chain = evolution_chain::transform(id, &body).unwrap();
            for e in chain.evolutions {
                chain_of.insert(e.species_id, (id, e.evolves_from_species_id));
            }
        }
        for &id in dataset.resource_ids(Stub::PokemonSpecies) {
            let body = dataset.document(Stub::PokemonSpecies, id).unwrap();
            let s = species::transform(id, &body).unwrap_or_else(|e| panic!("species {id}: {e}"));
            assert_eq!(
                Some(s.name.as_str()),
                dataset.resource_name(Stub::PokemonSpecies, id)
            );
            let (chain, from) = chain_of[&id];
            assert_eq!(
                (s.evolution_chain_id, s.evolves_from_species_id),
                (Some(chain), from)
            );
            let text = s.flavor_text.unwrap();
            assert!(!text.contains(['\n', '\u{c}', '\u{ad}']), "{text:?}");
            assert!(s.genus.is_some_and(|g| g.ends_with(" Pokémon")));
        }
        assert_eq!(chain_of.len(), 1025, "every species is in a chain");
        for resource in [Stub::Type, Stub::Ability, Stub::Move] {
            let kind = by_name(resource.name()).unwrap();
            for &id in dataset.resource_ids(resource) {
                let body = dataset.document(resource, id).unwrap();
                let record = kind
                    .transform(id, &body)
                    .unwrap_or_else(|e| panic!("{resource} {id}: {e}"));
                assert_eq!(record.name(), dataset.resource_name(resource, id));
            }
        }
        let chance = dataset
            .resource_ids(Stub::Move)
            .iter()
            .map(|&id| move_::transform(id, &dataset.document(Stub::Move, id).unwrap()).unwrap())
            .find(|m| m.effect_chance.is_some())
            .unwrap();
        let short = chance.short_effect.unwrap();
        assert!(!short.contains('$') && short.contains('%'), "{short}");
    }
}
