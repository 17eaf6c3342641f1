//! The data served: ids in list order, their names, and payload bodies built on demand.
//!
//! A [`Dataset`] is either synthetic (from a seed) or backed by sample files. Either way a body is
//! a few shared [`Bytes`] pieces plus a small per-request part, so memory stays bounded (a few MB
//! plus ~100 bytes per id) however many ids there are, and [`Dataset::record`] reports exactly
//! what [`Dataset::payload`] serves, so tests can check what a consumer stored.

use std::path::Path;

use bytes::{Bytes, BytesMut};

use crate::config::StubConfig;
use crate::documents;
use crate::render;
use crate::resource::Resource;
use crate::samples::{self, SampleFile};
use crate::sprites;
use crate::synth::{self, LAST_DEFAULT_ID, Spec, Synth};
use crate::vocab::{STATS, TYPES, ability_name};
use crate::world::Linked;

/// First id of the alternate forms, after the national-dex ids `1..=1025`.
pub const FIRST_FORM_ID: i32 = 10001;

/// The fields of a payload that a consumer typically stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PokemonRecord {
    pub id: i32,
    pub name: String,
    /// Decimetres.
    pub height: i32,
    /// Hectograms.
    pub weight: i32,
    pub base_experience: Option<i32>,
    /// Type names in slot order.
    pub types: Vec<String>,
    /// Ability names in slot order.
    pub abilities: Vec<String>,
    /// `(stat name, base_stat)` in payload order.
    pub stats: Vec<(String, i32)>,
    /// `sprites.front_default`.
    pub sprite: Option<String>,
    /// `species.name`.
    pub species: String,
}

/// A response body as pieces (most shared with other responses) and its total length.
#[derive(Clone, Debug, Default)]
pub struct Payload {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Payload {
    fn new(chunks: Vec<Bytes>) -> Self {
        let chunks: Vec<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let len = chunks.iter().map(Bytes::len).sum();
        Payload { chunks, len }
    }

    /// Total length in bytes (the Content-Length served).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// The body as one contiguous buffer (copies).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len);
        for chunk in &self.chunks {
            out.extend_from_slice(chunk);
        }
        out.freeze()
    }
}

enum Source {
    Synthetic(Synth),
    Samples(Vec<SampleFile>),
}

/// All pokemon the stub serves, and the resources they link (species, evolution chains, types,
/// abilities, moves: see [`crate::world`]).
pub struct Dataset {
    ids: Vec<i32>,
    names: Vec<Box<str>>,
    source: Source,
    linked: Linked,
    seed: u64,
}

/// The ids of a dataset of `count` items, in list order: `1..=1025`, then `10001, 10002, ...`.
pub fn id_layout(count: u32) -> Vec<i32> {
    let count = count as usize;
    let defaults = count.min(LAST_DEFAULT_ID as usize);
    (1..=defaults as i32)
        .chain((0..(count - defaults) as i32).map(|i| FIRST_FORM_ID + i))
        .collect()
}

impl Dataset {
    /// Builds the dataset a [`StubConfig`] describes: samples if `samples_dir` is set, else
    /// synthetic from `seed`.
    pub fn from_config(config: &StubConfig) -> anyhow::Result<Self> {
        match &config.samples_dir {
            Some(dir) => Self::from_samples(dir, config.count),
            None => Ok(Self::synthetic(config.count, config.seed)),
        }
    }

    /// `count` synthetic pokemon, deterministic from `seed`.
    pub fn synthetic(count: u32, seed: u64) -> Self {
        let ids = id_layout(count);
        let (names, synth) = synth::generate(&ids, seed);
        let linked = Linked::synthetic(&ids, &names, seed);
        Dataset {
            ids,
            names,
            source: Source::Synthetic(synth),
            linked,
            seed,
        }
    }

    /// `count` ids served from the files in `<dir>/pokemon/*.json`, cycled: id at position `i`
    /// gets file `i % n`, with `-<k>` appended to its name on the k-th reuse (k >= 1). The other
    /// resources serve the files of their own folders (`<dir>/pokemon-species/*.json`, ...) as
    /// they are, under the ids they hold, and nothing where the folder is missing.
    pub fn from_samples(dir: &Path, count: u32) -> anyhow::Result<Self> {
        let files = samples::load_dir(dir)?;
        let ids = id_layout(count);
        let names = (0..ids.len())
            .map(|pos| {
                let file = &files[pos % files.len()];
                match pos / files.len() {
                    0 => file.name.clone().into_boxed_str(),
                    k => format!("{}-{k}", file.name).into_boxed_str(),
                }
            })
            .collect();
        Ok(Dataset {
            ids,
            names,
            source: Source::Samples(files),
            linked: Linked::from_samples(dir)?,
            seed: 0,
        })
    }

    /// Ids in list order.
    pub fn ids(&self) -> &[i32] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Position of `id` in [`Dataset::ids`], computed (ids follow [`id_layout`]).
    pub fn position(&self, id: i32) -> Option<usize> {
        let pos = if (1..=LAST_DEFAULT_ID).contains(&id) {
            (id - 1) as usize
        } else if id >= FIRST_FORM_ID {
            LAST_DEFAULT_ID as usize + (id - FIRST_FORM_ID) as usize
        } else {
            return None;
        };
        (self.ids.get(pos) == Some(&id)).then_some(pos)
    }

    pub fn contains(&self, id: i32) -> bool {
        self.position(id).is_some()
    }

    /// The name listed and served for `id`.
    pub fn name(&self, id: i32) -> Option<&str> {
        self.position(id).map(|pos| &*self.names[pos])
    }

    /// Name at a list position (for the list endpoint).
    pub(crate) fn name_at(&self, pos: usize) -> &str {
        &self.names[pos]
    }

    /// The ids `resource` serves, in list order (ascending; pokemon: [`Dataset::ids`]).
    pub fn resource_ids(&self, resource: Resource) -> &[i32] {
        match self.linked.table(resource) {
            Some(table) => &table.ids,
            None => &self.ids,
        }
    }

    /// The name `resource` lists and serves for `id`; `None` for an id it does not serve and
    /// for evolution chains, which have no name.
    pub fn resource_name(&self, resource: Resource, id: i32) -> Option<&str> {
        let pos = self.resource_position(resource, id)?;
        self.resource_name_at(resource, pos)
    }

    /// Position of `id` in [`Dataset::resource_ids`].
    pub(crate) fn resource_position(&self, resource: Resource, id: i32) -> Option<usize> {
        match self.linked.table(resource) {
            Some(table) => table.position(id),
            None => self.position(id),
        }
    }

    pub(crate) fn resource_name_at(&self, resource: Resource, pos: usize) -> Option<&str> {
        match self.linked.table(resource) {
            Some(table) => table.names.get(pos)?.as_deref(),
            None => self.names.get(pos).map(|name| &**name),
        }
    }

    /// The exact body served for `id` of `resource`, as one buffer.
    pub fn document(&self, resource: Resource, id: i32) -> Option<Bytes> {
        if resource == Resource::Pokemon {
            return self.payload(id);
        }
        let table = self.linked.table(resource)?;
        let pos = table.position(id)?;
        if let Some(files) = &table.files {
            return files.get(pos).cloned();
        }
        let specs = self.specs()?;
        let name = table.names[pos].as_deref().unwrap_or_default();
        let value = match resource {
            Resource::PokemonSpecies => documents::species(self, specs, self.seed, id)?,
            Resource::EvolutionChain => documents::evolution_chain(self, self.linked.chain(id)?),
            Resource::Type => documents::type_(self, specs, self.seed, id)?,
            Resource::Ability => documents::ability(self, specs, self.seed, id, name),
            Resource::Move => documents::move_(self, specs, self.seed, id, name),
            Resource::Pokemon => return None,
        };
        serde_json::to_vec(&value).ok().map(Bytes::from)
    }

    /// The body of `id` of `resource` with `served_id` as its top-level `id` (the WrongId
    /// fault).
    pub(crate) fn document_with_id(
        &self,
        resource: Resource,
        id: i32,
        served_id: i32,
    ) -> Option<Bytes> {
        if resource == Resource::Pokemon {
            return self.body_with_id(id, served_id).map(|p| p.to_bytes());
        }
        let mut value: serde_json::Value =
            serde_json::from_slice(&self.document(resource, id)?).ok()?;
        *value.get_mut("id")? = served_id.into();
        serde_json::to_vec(&value).ok().map(Bytes::from)
    }

    /// The specs of a synthetic dataset.
    fn specs(&self) -> Option<&[Spec]> {
        match &self.source {
            Source::Synthetic(synth) => Some(&synth.specs),
            Source::Samples(_) => None,
        }
    }

    pub(crate) fn linked(&self) -> &Linked {
        &self.linked
    }

    /// How many national-dex pokemon, hence species, the dataset holds.
    pub(crate) fn species_count(&self) -> usize {
        self.ids.len().min(LAST_DEFAULT_ID as usize)
    }

    /// What the payload of `id` says, for comparing against what a consumer stored.
    pub fn record(&self, id: i32) -> Option<PokemonRecord> {
        let pos = self.position(id)?;
        let name = self.names[pos].to_string();
        Some(match &self.source {
            Source::Synthetic(synth) => {
                let spec = &synth.specs[pos];
                PokemonRecord {
                    id,
                    name,
                    height: spec.height,
                    weight: spec.weight,
                    base_experience: spec.base_experience,
                    types: spec
                        .types()
                        .iter()
                        .map(|&t| TYPES[usize::from(t)].0.to_owned())
                        .collect(),
                    abilities: spec
                        .abilities()
                        .iter()
                        .map(|a| ability_name(usize::from(a.index)).join("-"))
                        .collect(),
                    stats: STATS
                        .iter()
                        .zip(spec.stats)
                        .map(|(&(stat, _), base)| (stat.to_owned(), i32::from(base)))
                        .collect(),
                    sprite: spec.has_sprite.then(|| sprites::front_default_url(id)),
                    species: self.names[spec.species_pos].to_string(),
                }
            }
            Source::Samples(files) => PokemonRecord {
                id,
                name,
                ..files[pos % files.len()].record.clone()
            },
        })
    }

    /// The exact body served for `id`, as one buffer.
    pub fn payload(&self, id: i32) -> Option<Bytes> {
        self.body(id).map(|p| p.to_bytes())
    }

    /// The body served for `id`, as pieces (cheap: mostly shared buffers).
    pub fn body(&self, id: i32) -> Option<Payload> {
        self.body_with_id(id, id)
    }

    /// The body of `id` with `served_id` written as its top-level `id` (the WrongId fault).
    pub fn body_with_id(&self, id: i32, served_id: i32) -> Option<Payload> {
        let pos = self.position(id)?;
        let name = &*self.names[pos];
        let chunks = match &self.source {
            Source::Synthetic(synth) => {
                let spec = &synth.specs[pos];
                let mut head = Vec::with_capacity(4 * 1024);
                render::head(&mut head, spec, served_id, name);
                let mut tail = Vec::with_capacity(16 * 1024);
                render::tail(&mut tail, spec, name, &self.names[spec.species_pos]);
                vec![
                    Bytes::from(head),
                    synth.pool.slice(spec.moves_start, spec.moves_len),
                    Bytes::from(tail),
                ]
            }
            Source::Samples(files) => files[pos % files.len()].chunks(served_id, name),
        };
        Some(Payload::new(chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_national_ids_then_forms() {
        assert_eq!(id_layout(3), vec![1, 2, 3]);
        assert!(id_layout(0).is_empty());
        let ids = id_layout(1351);
        assert_eq!(ids.len(), 1351);
        assert_eq!(ids[1024], 1025);
        assert_eq!(ids[1025], 10001);
        assert_eq!(ids[1350], 10326);
        assert_eq!(id_layout(20_000).last(), Some(&(10001 + 20_000 - 1025 - 1)));
    }

    #[test]
    fn positions_match_layout() {
        let d = Dataset::synthetic(1030, 1);
        for (pos, &id) in d.ids().iter().enumerate() {
            assert_eq!(d.position(id), Some(pos));
        }
        for missing in [0, -1, 1026, 10000, 10006, i32::MAX, i32::MIN] {
            assert_eq!(d.position(missing), None, "{missing}");
        }
        let small = Dataset::synthetic(10, 1);
        assert_eq!(small.position(11), None);
        assert_eq!(small.position(10001), None);
    }
}
