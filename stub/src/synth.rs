//! Synthetic pokemon: a compact per-id [`Spec`] plus one shared pool of pre-rendered moves.
//!
//! Why this shape: a real payload is ~90% `moves`, and the stub must serve thousands of ~100 KB
//! payloads per second with bounded memory. So the move entries are rendered to JSON text once,
//! into a single [`Bytes`] buffer, and each pokemon's `moves` array is a contiguous window of it
//! (a zero-copy [`Bytes::slice`]). The rest of a payload (a few KB) is rendered per request from
//! the ~100-byte [`Spec`] by [`crate::render`]. Window sizes follow a log-normal distribution
//! (median ~100 KB, a few percent near 1 MB), like the real API.

use std::collections::HashSet;

use bytes::Bytes;

use crate::render::{self, Detail};
use crate::rng::Rng;
use crate::vocab::{
    ABILITY_COUNT, FORM_SUFFIXES, ITEMS, LEARN_METHODS, MOVE_COUNT, SYLLABLES, TYPES,
    VERSION_GROUPS,
};

const STREAM_SPEC: u64 = 1;
const STREAM_MOVES: u64 = 2;

/// Entries in the shared move pool (about 2 KB each, ~4.5 MB in all).
pub(crate) const POOL_ENTRIES: usize = 2048;
/// Most moves in one payload. Below [`MOVE_COUNT`], so a window never repeats a move.
const MAX_WINDOW: usize = 700;
/// Approximate size of everything but `moves`, subtracted from the size target.
const HEAD_TAIL_ESTIMATE: f64 = 9_000.0;
/// Log-normal payload size: median, spread, and clamps.
const MEDIAN_SIZE: f64 = 100_000.0;
const SIZE_SIGMA: f64 = 1.0;
const MIN_SIZE: f64 = 10_000.0;
const MAX_SIZE: f64 = 1_150_000.0;

/// Highest national-dex id; ids above it are alternate forms (10001, 10002, ...).
pub(crate) const LAST_DEFAULT_ID: i32 = 1025;

/// One ability slot of a pokemon.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ability {
    pub index: u16,
    pub slot: u8,
    pub hidden: bool,
}

/// Everything needed to render one synthetic payload, kept small because there is one per id.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub id: i32,
    /// Generation the pokemon belongs to (1..=9); gates sprites and game indices.
    pub generation: u8,
    pub is_form: bool,
    /// Dataset position of the species' default pokemon (itself unless a form).
    pub species_pos: usize,
    pub species_id: i32,
    pub form_id: i32,
    pub height: i32,
    pub weight: i32,
    pub base_experience: Option<i32>,
    pub order: i32,
    types: [u8; 2],
    type_count: u8,
    abilities: [Ability; 3],
    ability_count: u8,
    pub stats: [u16; 6],
    pub efforts: [u8; 6],
    pub has_sprite: bool,
    pub has_female: bool,
    pub legacy_cry: bool,
    pub game_indices: bool,
    pub moves_start: u32,
    pub moves_len: u32,
    /// (index into [`ITEMS`], rarity)
    pub held_item: Option<(u8, u8)>,
    pub past_ability: bool,
    pub past_special: Option<u16>,
    pub past_type: Option<u8>,
}

impl Spec {
    /// Indices into [`TYPES`], in slot order.
    pub(crate) fn types(&self) -> &[u8] {
        &self.types[..usize::from(self.type_count)]
    }

    /// Abilities in slot order.
    pub(crate) fn abilities(&self) -> &[Ability] {
        &self.abilities[..usize::from(self.ability_count)]
    }
}

/// The synthetic data of a dataset.
pub(crate) struct Synth {
    pub specs: Vec<Spec>,
    pub pool: MovePool,
}

/// Generates names and specs for `ids` (national ids first, then forms), deterministically.
///
/// Each id draws from its own random stream, and names only depend on earlier ids, so a smaller
/// `count` with the same seed yields a prefix of the same data.
pub(crate) fn generate(ids: &[i32], seed: u64) -> (Vec<Box<str>>, Synth) {
    let pool = MovePool::generate(seed);
    let defaults = ids.iter().take_while(|&&id| id <= LAST_DEFAULT_ID).count();
    let mut taken: HashSet<String> = HashSet::with_capacity(ids.len());
    let mut names: Vec<Box<str>> = Vec::with_capacity(ids.len());
    let mut specs = Vec::with_capacity(ids.len());
    for (pos, &id) in ids.iter().enumerate() {
        let mut r = Rng::new(seed, STREAM_SPEC, id as u64);
        let is_form = pos >= defaults;
        let species_pos = if is_form { r.index(defaults) } else { pos };
        let name = if is_form {
            form_name(&mut r, &names[species_pos], &taken)
        } else {
            default_name(&mut r, &taken)
        };
        taken.insert(name.clone());
        names.push(name.into_boxed_str());
        specs.push(spec(
            &mut r,
            id,
            is_form,
            species_pos,
            ids[species_pos],
            &pool,
        ));
    }
    (names, Synth { specs, pool })
}

fn default_name(r: &mut Rng, taken: &HashSet<String>) -> String {
    let mut name = String::new();
    for attempt in 0..24 {
        let syllables = 2 + usize::from(r.chance(0.35)) + attempt / 6;
        name.clear();
        for _ in 0..syllables {
            name.push_str(SYLLABLES[r.index(SYLLABLES.len())]);
        }
        if !taken.contains(&name) {
            return name;
        }
    }
    with_counter(&name, "", taken)
}

fn form_name(r: &mut Rng, base: &str, taken: &HashSet<String>) -> String {
    let mut name = String::new();
    for _ in 0..6 {
        name = format!("{base}-{}", FORM_SUFFIXES[r.index(FORM_SUFFIXES.len())]);
        if !taken.contains(&name) {
            return name;
        }
    }
    with_counter(&name, "-", taken)
}

/// `base` + separator + the smallest counter >= 2 that makes it unique.
fn with_counter(base: &str, sep: &str, taken: &HashSet<String>) -> String {
    let mut k = 2u64;
    loop {
        let candidate = format!("{base}{sep}{k}");
        if !taken.contains(&candidate) {
            return candidate;
        }
        k += 1;
    }
}

pub(crate) fn generation_of(id: i32) -> u8 {
    const LAST_OF_GEN: [i32; 8] = [151, 251, 386, 493, 649, 721, 809, 905];
    LAST_OF_GEN.iter().take_while(|&&last| id > last).count() as u8 + 1
}

fn spec(
    r: &mut Rng,
    id: i32,
    is_form: bool,
    species_pos: usize,
    species_id: i32,
    pool: &MovePool,
) -> Spec {
    let generation = if is_form {
        6 + r.below(4) as u8
    } else {
        generation_of(id)
    };
    // Like the real 10301 (zygarde-mega): no abilities, moves or game indices.
    let empty = r.chance(if is_form { 0.03 } else { 0.005 });

    let type_count = 1 + u8::from(r.chance(0.5));
    let t0 = r.index(TYPES.len());
    let mut t1 = r.index(TYPES.len() - 1);
    if t1 >= t0 {
        t1 += 1;
    }

    let mut abilities = [Ability::default(); 3];
    let mut ability_count = 0u8;
    if !empty {
        let slots = [
            (1u8, false, true),
            (2, false, r.chance(0.45)),
            (3, true, r.chance(0.8)),
        ];
        for (slot, hidden, present) in slots {
            if !present {
                continue;
            }
            let index = loop {
                let candidate = r.index(ABILITY_COUNT) as u16;
                let used = &abilities[..usize::from(ability_count)];
                if used.iter().all(|a| a.index != candidate) {
                    break candidate;
                }
            };
            abilities[usize::from(ability_count)] = Ability {
                index,
                slot,
                hidden,
            };
            ability_count += 1;
        }
    }

    let mut stats = [0u16; 6];
    for s in &mut stats {
        *s = (70.0 + 25.0 * r.normal()).round().clamp(5.0, 255.0) as u16;
    }
    let mut efforts = [0u8; 6];
    efforts[r.index(6)] = r.range(1, 3) as u8;

    let height = (10.0 * (0.8 * r.normal()).exp()).round().clamp(1.0, 200.0) as i32;
    let weight = (300.0 * (1.2 * r.normal()).exp())
        .round()
        .clamp(1.0, 9999.0) as i32;
    let base_experience = if empty || r.chance(0.03) {
        None
    } else {
        Some(r.range(36, 340) as i32)
    };
    let has_sprite = !empty && !r.chance(0.008);
    let has_female = r.chance(0.15);
    let legacy_cry = !is_form && r.chance(0.5);
    let order = if !is_form {
        id
    } else if r.chance(0.3) {
        -1
    } else {
        species_id + r.range(0, 5) as i32
    };

    let (moves_start, moves_len) = if empty {
        (0, 0)
    } else {
        let size = (MEDIAN_SIZE * (SIZE_SIGMA * r.normal()).exp()).clamp(MIN_SIZE, MAX_SIZE);
        let start = r.index(POOL_ENTRIES - MAX_WINDOW + 1);
        (
            start as u32,
            pool.window_len(start, size - HEAD_TAIL_ESTIMATE),
        )
    };

    let held_item = r
        .chance(0.1)
        .then(|| (r.index(ITEMS.len()) as u8, [5u8, 50, 100][r.index(3)]));
    let past_ability = r.chance(0.04);
    let past_special = (generation == 1 && !is_form).then(|| r.range(20, 150) as u16);
    let past_type = r.chance(0.02).then(|| r.index(TYPES.len()) as u8);

    Spec {
        id,
        generation,
        is_form,
        species_pos,
        species_id,
        form_id: if is_form { id + 200 } else { id },
        height,
        weight,
        base_experience,
        order,
        types: [t0 as u8, t1 as u8],
        type_count,
        abilities,
        ability_count,
        stats,
        efforts,
        has_sprite,
        has_female,
        legacy_cry,
        game_indices: !is_form && !empty,
        moves_start,
        moves_len,
        held_item,
        past_ability,
        past_special,
        past_type,
    }
}

/// Move entries rendered once as `entry,entry,...,entry,` with the start offset of each entry.
pub(crate) struct MovePool {
    text: Bytes,
    /// `starts[i]` is where entry `i` begins; `starts[POOL_ENTRIES]` is the end of the text.
    starts: Vec<u32>,
}

impl MovePool {
    fn generate(seed: u64) -> Self {
        let mut r = Rng::new(seed, STREAM_MOVES, 0);
        let mut text = Vec::with_capacity(POOL_ENTRIES * 2_400);
        let mut starts = Vec::with_capacity(POOL_ENTRIES + 1);
        let mut details = Vec::with_capacity(VERSION_GROUPS.len());
        for i in 0..POOL_ENTRIES {
            starts.push(text.len() as u32);
            move_details(&mut r, &mut details);
            render::move_entry(&mut text, i % MOVE_COUNT, &details);
            text.push(b',');
        }
        starts.push(text.len() as u32);
        MovePool {
            text: Bytes::from(text),
            starts,
        }
    }

    /// Number of entries from `start` whose text reaches `target` bytes (capped at the window).
    fn window_len(&self, start: usize, target: f64) -> u32 {
        if target <= 0.0 {
            return 0;
        }
        let base = self.starts[start];
        let limit = (start + MAX_WINDOW).min(POOL_ENTRIES);
        let ends = &self.starts[start + 1..=limit];
        let k = ends.partition_point(|&end| f64::from(end - base) < target) + 1;
        k.min(limit - start) as u32
    }

    /// The JSON text of `len` entries from `start`, comma-separated, without brackets.
    pub(crate) fn slice(&self, start: u32, len: u32) -> Bytes {
        if len == 0 {
            return Bytes::new();
        }
        let from = self.starts[start as usize] as usize;
        // Drop the comma that follows the last entry.
        let to = self.starts[(start + len) as usize] as usize - 1;
        self.text.slice(from..to)
    }
}

/// Draws the `version_group_details` of one move entry (about 10 on average, like the real data).
fn move_details(r: &mut Rng, out: &mut Vec<Detail>) {
    out.clear();
    let main_method = match r.below(100) {
        0..40 => 0,  // level-up
        40..75 => 3, // machine
        75..90 => 2, // tutor
        _ => 1,      // egg
    };
    let wanted = (1 + r.below(20)) as f64;
    let p = wanted / VERSION_GROUPS.len() as f64;
    for group in 0..VERSION_GROUPS.len() {
        if r.chance(p) {
            out.push(detail(r, group, main_method));
        }
    }
    if out.is_empty() {
        let group = r.index(VERSION_GROUPS.len());
        out.push(detail(r, group, main_method));
    }
}

fn detail(r: &mut Rng, group: usize, main_method: usize) -> Detail {
    let method = if r.chance(0.8) {
        main_method
    } else {
        r.index(LEARN_METHODS.len())
    };
    Detail {
        group: group as u8,
        method: method as u8,
        level: if method == 0 { r.range(1, 80) as u8 } else { 0 },
        order: r.chance(0.04).then(|| 1 + r.below(3) as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_boundaries() {
        assert_eq!(generation_of(1), 1);
        assert_eq!(generation_of(151), 1);
        assert_eq!(generation_of(152), 2);
        assert_eq!(generation_of(905), 8);
        assert_eq!(generation_of(906), 9);
        assert_eq!(generation_of(1025), 9);
    }

    #[test]
    fn pool_slices_are_comma_separated_entries() {
        let pool = MovePool::generate(3);
        let s = pool.slice(5, 3);
        assert!(s.starts_with(b"{\"move\":"));
        assert!(s.ends_with(b"}"));
        let parsed: serde_json::Value =
            serde_json::from_slice(&[b"[".as_slice(), &s, b"]"].concat()).expect("valid json");
        assert_eq!(parsed.as_array().map(Vec::len), Some(3));
        assert!(pool.slice(0, 0).is_empty());
        assert_eq!(pool.window_len(0, 0.0), 0);
        assert!(pool.window_len(0, 1e12) as usize <= MAX_WINDOW);
    }

    #[test]
    fn names_are_unique_even_for_many_forms() {
        let ids: Vec<i32> = (1..=LAST_DEFAULT_ID).chain(10001..13000).collect();
        let (names, _) = generate(&ids, 5);
        let set: HashSet<&str> = names.iter().map(|n| &**n).collect();
        assert_eq!(set.len(), names.len());
        assert!(names.iter().all(|n| {
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }));
    }
}
