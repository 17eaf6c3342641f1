//! The resources linked from pokemon (species, evolution chains, types, abilities, moves): which
//! ids each serves, under which names, and the synthetic facts their documents are rendered
//! from ([`crate::documents`]).
//!
//! Synthetic ids follow the real API's layout, gaps included: a species per national-dex
//! pokemon (`1..=1025`, as many as `count` reaches), evolution chains whose ids skip a number
//! now and then, types `1..=19` then `10001, 10002`, abilities and moves numbered from 1 then
//! from 10001 (those of spin-off games, which no pokemon links). Every link a document carries
//! to one of the six resources names an id the stub serves. The chain layout is drawn over all
//! 1025 species whatever `count`, so a smaller `count` serves a prefix of the same chains, the
//! last one cut short.

use std::path::Path;

use anyhow::Context;
use bytes::Bytes;

use crate::resource::Resource;
use crate::rng::Rng;
use crate::synth::LAST_DEFAULT_ID;
use crate::vocab::{
    ABILITY_COUNT, EVOLUTION_ITEMS, EXTRA_TYPES, MOVE_COUNT, TRADE_ITEMS, TYPES, ability_name,
    move_name,
};

const STREAM_CHAINS: u64 = 10;
const STREAM_EVOLUTION: u64 = 11;

/// First id of the abilities and moves of spin-off games.
pub(crate) const FIRST_EXTRA_ID: i32 = 10001;
/// Spin-off abilities (ids `10001..`), as in the real API.
pub(crate) const EXTRA_ABILITIES: usize = 60;
/// Shadow moves of the Orre games (ids `10001..`), as in the real API.
pub(crate) const EXTRA_MOVES: usize = 18;

/// How a species evolves from its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    Level(u8),
    /// Index into [`EVOLUTION_ITEMS`].
    Item(u8),
    /// Minimum happiness, and the time of day if it matters (`day`, `night`).
    Happiness(u8, Option<&'static str>),
    /// Index into [`TRADE_ITEMS`] of the item held while traded, if any.
    Trade(Option<u8>),
    /// Index into [`TYPES`] of a move type it must know, levelling up.
    KnownMoveType(u8),
}

/// One way of evolving, as one entry of `evolution_details`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Detail {
    pub trigger: Trigger,
    pub is_default: bool,
}

/// One species of a chain.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub species_id: i32,
    /// The species it evolves from; `None` for the root.
    pub parent: Option<i32>,
    pub is_baby: bool,
    /// Empty for the root.
    pub details: Vec<Detail>,
}

#[derive(Clone, Debug)]
pub(crate) struct Chain {
    pub id: i32,
    /// Root first; every member after its parent.
    pub members: Vec<Member>,
}

/// Draws the chains of species `1..=1025`: consecutive species ids, shaped like the real ones
/// (a third single, most two or three stages, a few branching, one in fifty like eevee's).
pub(crate) fn chain_layout(seed: u64) -> Vec<Chain> {
    let mut chains = Vec::new();
    let mut next_species = 1;
    let mut next_id = 1;
    let mut k = 0u64;
    while next_species <= LAST_DEFAULT_ID {
        let mut r = Rng::new(seed, STREAM_CHAINS, k);
        k += 1;
        let root = next_species;
        // (parent offset from the root, or None for the root) of each member.
        let shape: Vec<Option<i32>> = match r.below(100) {
            0..30 => vec![None],
            30..62 => vec![None, Some(0)],
            62..92 => vec![None, Some(0), Some(1)],
            92..98 => vec![None, Some(0), Some(0)],
            _ => {
                let children = 3 + r.below(6) as usize;
                std::iter::once(None)
                    .chain(std::iter::repeat_n(Some(0), children))
                    .collect()
            }
        };
        let fits = usize::try_from(LAST_DEFAULT_ID - root + 1).unwrap_or(1);
        let shape = &shape[..shape.len().min(fits)];
        let baby = shape.len() > 1 && r.chance(0.06);
        let members = shape
            .iter()
            .enumerate()
            .map(|(i, parent)| {
                let species_id = root + i as i32;
                let parent = parent.map(|p| root + p);
                Member {
                    species_id,
                    parent,
                    is_baby: baby && parent.is_none(),
                    details: match parent {
                        None => Vec::new(),
                        Some(from) => details(seed, species_id, from == root),
                    },
                }
            })
            .collect();
        chains.push(Chain {
            id: next_id,
            members,
        });
        next_species += shape.len() as i32;
        next_id += 1;
        if r.chance(0.012) {
            next_id += 1 + r.below(3) as i32;
        }
    }
    chains
}

/// The ways `species_id` evolves: one, or now and then a levelling alternative listed first
/// and not marked default (as the real API lists other games' ways).
fn details(seed: u64, species_id: i32, first_stage: bool) -> Vec<Detail> {
    let mut r = Rng::new(seed, STREAM_EVOLUTION, species_id as u64);
    let level = |r: &mut Rng| {
        if first_stage {
            r.range(7, 35) as u8
        } else {
            r.range(28, 55) as u8
        }
    };
    let trigger = match r.below(100) {
        0..55 => Trigger::Level(level(&mut r)),
        55..75 => Trigger::Item(r.index(EVOLUTION_ITEMS.len()) as u8),
        75..85 => {
            let time = [None, Some("day"), Some("night")][r.index(3)];
            Trigger::Happiness([160, 220][r.index(2)], time)
        }
        85..95 => Trigger::Trade(r.chance(0.5).then(|| r.index(TRADE_ITEMS.len()) as u8)),
        _ => Trigger::KnownMoveType(r.index(TYPES.len()) as u8),
    };
    let main = Detail {
        trigger,
        is_default: true,
    };
    if r.chance(0.15) {
        let alternative = Detail {
            trigger: Trigger::Level(level(&mut r)),
            is_default: false,
        };
        vec![alternative, main]
    } else {
        vec![main]
    }
}

/// The ids and names one resource serves, and for samples their documents.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// Ascending.
    pub ids: Vec<i32>,
    /// `None` where the resource has no names (evolution chains).
    pub names: Vec<Option<Box<str>>>,
    /// Samples mode: the document of each id, compact JSON.
    pub files: Option<Vec<Bytes>>,
}

impl Table {
    pub fn position(&self, id: i32) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    fn named(entries: impl Iterator<Item = (i32, String)>) -> Self {
        let (ids, names) = entries
            .map(|(id, name)| (id, Some(name.into_boxed_str())))
            .unzip();
        Table {
            ids,
            names,
            files: None,
        }
    }
}

/// The resources besides pokemon.
#[derive(Debug, Default)]
pub(crate) struct Linked {
    /// Indexed by `Resource::index() - 1` (pokemon has no table here).
    tables: [Table; 5],
    /// Synthetic: every chain of the layout (served or not); empty for samples.
    pub chains: Vec<Chain>,
    /// Synthetic: the index in `chains` of species `id` at `id - 1`.
    chain_of_species: Vec<u32>,
}

impl Linked {
    /// The synthetic resources linked from the pokemon of `names` (a dataset's names in list
    /// order, national-dex ids first).
    pub fn synthetic(ids: &[i32], names: &[Box<str>], seed: u64) -> Self {
        let species_count = ids.iter().take_while(|&&id| id <= LAST_DEFAULT_ID).count();
        let chains = chain_layout(seed);
        let mut chain_of_species = vec![0u32; LAST_DEFAULT_ID as usize];
        for (index, chain) in chains.iter().enumerate() {
            for member in &chain.members {
                chain_of_species[member.species_id as usize - 1] = index as u32;
            }
        }
        let species = Table::named(
            names[..species_count]
                .iter()
                .enumerate()
                .map(|(pos, name)| (pos as i32 + 1, name.to_string())),
        );
        let served_chains: Vec<i32> = chains
            .iter()
            .filter(|c| c.members[0].species_id as usize <= species_count)
            .map(|c| c.id)
            .collect();
        let chains_table = Table {
            names: vec![None; served_chains.len()],
            ids: served_chains,
            files: None,
        };
        let types = Table::named(
            TYPES
                .iter()
                .chain(&EXTRA_TYPES)
                .map(|&(name, id)| (i32::from(id), name.to_owned())),
        );
        let abilities = Table::named(
            (0..ABILITY_COUNT)
                .map(|i| (i as i32 + 1, ability_name(i).join("-")))
                .chain((0..EXTRA_ABILITIES).map(|i| {
                    (
                        FIRST_EXTRA_ID + i as i32,
                        format!("{}-conquest", ability_name(i).join("-")),
                    )
                })),
        );
        let moves = Table::named(
            (0..MOVE_COUNT)
                .map(|i| (i as i32 + 1, move_name(i).join("-")))
                .chain((0..EXTRA_MOVES).map(|i| {
                    (
                        FIRST_EXTRA_ID + i as i32,
                        format!("{}-shadow", move_name(i).join("-")),
                    )
                })),
        );
        Linked {
            tables: [species, chains_table, types, abilities, moves],
            chains,
            chain_of_species,
        }
    }

    /// The documents in `<dir>/<resource>/*.json` for each resource besides pokemon whose folder
    /// exists (a missing folder serves none), named and numbered by what each says.
    pub fn from_samples(dir: &Path) -> anyhow::Result<Self> {
        let mut linked = Linked::default();
        for resource in &Resource::ALL[1..] {
            let folder = dir.join(resource.name());
            if !folder.is_dir() {
                continue;
            }
            linked.tables[resource.index() - 1] =
                load_folder(&folder).with_context(|| format!("samples dir {}", dir.display()))?;
        }
        Ok(linked)
    }

    pub fn table(&self, resource: Resource) -> Option<&Table> {
        resource
            .index()
            .checked_sub(1)
            .and_then(|i| self.tables.get(i))
    }

    /// The chain holding species `species_id` (synthetic only).
    pub fn chain_of(&self, species_id: i32) -> Option<&Chain> {
        let index = *self
            .chain_of_species
            .get(usize::try_from(species_id).ok()?.checked_sub(1)?)?;
        self.chains.get(index as usize)
    }

    /// The chain whose id is `id` (synthetic only).
    pub fn chain(&self, id: i32) -> Option<&Chain> {
        self.chains
            .binary_search_by_key(&id, |c| c.id)
            .ok()
            .map(|i| &self.chains[i])
    }
}

/// Every `*.json` of `folder` as a document, by its `id`, compacted.
fn load_folder(folder: &Path) -> anyhow::Result<Table> {
    let mut documents = Vec::new();
    for entry in
        std::fs::read_dir(folder).with_context(|| format!("cannot read {}", folder.display()))?
    {
        let path = entry
            .with_context(|| format!("listing {}", folder.display()))?
            .path();
        if !(path.extension().is_some_and(|e| e == "json") && path.is_file()) {
            continue;
        }
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let id = value
            .get("id")
            .and_then(serde_json::Value::as_i64)
            .and_then(|id| i32::try_from(id).ok())
            .with_context(|| format!("{}: `id` is not an integer", path.display()))?;
        let name = value
            .get("name")
            .and_then(serde_json::Value::as_str)
            .map(|name| name.to_owned().into_boxed_str());
        documents.push((id, name, Bytes::from(serde_json::to_vec(&value)?)));
    }
    documents.sort_by_key(|(id, _, _)| *id);
    if let Some(pair) = documents.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        anyhow::bail!(
            "two documents in {} have id {}",
            folder.display(),
            pair[0].0
        );
    }
    let mut table = Table {
        files: Some(Vec::with_capacity(documents.len())),
        ..Table::default()
    };
    for (id, name, body) in documents {
        table.ids.push(id);
        table.names.push(name);
        if let Some(files) = &mut table.files {
            files.push(body);
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_cover_every_species_once_with_gaps_in_their_ids() {
        let chains = chain_layout(1);
        let species: Vec<i32> = chains
            .iter()
            .flat_map(|c| c.members.iter().map(|m| m.species_id))
            .collect();
        assert_eq!(species, (1..=LAST_DEFAULT_ID).collect::<Vec<_>>());
        assert!(chains.windows(2).all(|w| w[0].id < w[1].id));
        assert!(chains.windows(2).any(|w| w[1].id > w[0].id + 1), "ids skip");
        assert!((350..700).contains(&chains.len()), "{}", chains.len());
        assert!(
            chains.iter().any(|c| c.members.len() >= 4),
            "an eevee-like one"
        );
        for chain in &chains {
            let root = &chain.members[0];
            assert!(root.parent.is_none() && root.details.is_empty());
            for member in &chain.members[1..] {
                let parent = member.parent.expect("parent");
                assert!(parent < member.species_id);
                assert_eq!(member.details.iter().filter(|d| d.is_default).count(), 1);
            }
        }
        let again: Vec<i32> = chain_layout(1).iter().map(|c| c.id).collect();
        assert_eq!(again, chains.iter().map(|c| c.id).collect::<Vec<_>>());
    }
}
