//! Synthetic documents of the resources linked from pokemon: species, evolution chains, types,
//! abilities and moves, in the real shapes (every key the real documents have, keys sorted,
//! links relative like the static API's), rendered per request from the dataset's specs and
//! the chain layout of [`crate::world`].
//!
//! These documents are small and requested rarely next to pokemon, so they are built as
//! `serde_json` values rather than hand-written text. Reverse links (a type's pokemon, a move's
//! `learned_by_pokemon`) are found by scanning the specs at request time: no index to keep, at
//! the cost of a pass over the specs per request.

use serde_json::{Value, json};

use crate::dataset::Dataset;
use crate::rng::{Rng, hash3};
use crate::synth::{POOL_ENTRIES, Spec, generation_of};
use crate::vocab::{
    AILMENTS, DAMAGE_CLASSES, EVOLUTION_ITEMS, EXTRA_TYPES, FLAVOR_ENDINGS, FLAVOR_SUBJECTS,
    FLAVOR_VERSIONS, GENERATIONS, GENUS_WORDS, MOVE_COUNT, STATS, TRADE_ITEMS, TRIGGERS, TYPES,
    VERSION_GROUPS, type_generation,
};
use crate::world::{Chain, Detail, FIRST_EXTRA_ID, Member, Trigger};

const STREAM_SPECIES: u64 = 20;
const STREAM_MOVE: u64 = 21;
const STREAM_ABILITY: u64 = 22;
const STREAM_TYPE_CHART: u64 = 23;

const ENGLISH: (&str, u16) = ("en", 9);
const FRENCH: (&str, u16) = ("fr", 5);

/// `{"name": name, "url": "/api/v2/<kind>/<id>/"}`.
fn link(kind: &str, id: impl std::fmt::Display, name: &str) -> Value {
    json!({"name": name, "url": format!("/api/v2/{kind}/{id}/")})
}

fn language((name, id): (&str, u16)) -> Value {
    link("language", id, name)
}

fn generation(g: u8) -> Value {
    let g = g.clamp(1, 9);
    link("generation", g, GENERATIONS[usize::from(g) - 1])
}

/// `mr-mime` → `Mr-mime`: enough of a display name for synthetic data.
fn display(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn names(name: &str) -> Value {
    json!([{"language": language(FRENCH), "name": display(name)},
           {"language": language(ENGLISH), "name": display(name)}])
}

/// The pokemon of dataset position `pos` as a link.
fn pokemon_link(d: &Dataset, pos: usize) -> Value {
    link("pokemon", d.ids()[pos], d.name_at(pos))
}

/// The document of species `id` (a national-dex id the dataset holds).
pub(crate) fn species(d: &Dataset, specs: &[Spec], seed: u64, id: i32) -> Option<Value> {
    let pos = usize::try_from(id).ok()?.checked_sub(1)?;
    let name = d.name_at(pos);
    let chain = d.linked().chain_of(id)?;
    let member = chain.members.iter().find(|m| m.species_id == id)?;
    let mut r = Rng::new(seed, STREAM_SPECIES, id as u64);
    let gen_ = generation_of(id);
    let legendary = r.chance(0.03);
    let mythical = !legendary && r.chance(0.015);
    let genus = GENUS_WORDS[r.index(GENUS_WORDS.len())];
    let mut flavors = Vec::new();
    let mut chosen: Vec<(&str, u16)> = FLAVOR_VERSIONS
        .iter()
        .copied()
        .filter(|_| r.chance(0.5))
        .collect();
    if chosen.is_empty() {
        chosen.push(FLAVOR_VERSIONS[r.index(FLAVOR_VERSIONS.len())]);
    }
    for (version, version_id) in chosen {
        let subject = FLAVOR_SUBJECTS[r.index(FLAVOR_SUBJECTS.len())];
        let ending = FLAVOR_ENDINGS[r.index(FLAVOR_ENDINGS.len())];
        // Old games break lines for small text boxes, form feeds between boxes, and split
        // words with a soft hyphen.
        let text = if version_id < 12 {
            let subject = if r.chance(0.4) {
                hyphenated(subject)
            } else {
                subject.replacen(' ', "\n", 1)
            };
            format!("{subject}\u{c}{ending}")
        } else {
            format!("{subject}\n{ending}")
        };
        let version = link("version", version_id, version);
        flavors.push(json!({"flavor_text": text, "language": language(ENGLISH),
                            "version": version}));
        flavors.push(json!({"flavor_text": format!("{} (fr)", display(name)),
                            "language": language(FRENCH), "version": version}));
    }
    let mut varieties = vec![json!({"is_default": true, "pokemon": pokemon_link(d, pos)})];
    for (form_pos, spec) in specs.iter().enumerate().skip(d.species_count()) {
        if spec.species_pos == pos {
            varieties.push(json!({"is_default": false, "pokemon": pokemon_link(d, form_pos)}));
        }
    }
    let base_happiness = [0, 35, 50, 70, 100, 140][r.index(6)];
    let capture_rate = [3, 25, 45, 60, 75, 90, 120, 190, 255][r.index(9)];
    let gender_rate = r.range(-1, 8);
    let habitat = if r.chance(0.5) {
        Value::Null
    } else {
        link("pokemon-habitat", 2, "forest")
    };
    let has_gender_differences = r.chance(0.1);
    let hatch_counter = [5, 10, 20, 35, 120][r.index(5)];
    let evolves_from = member
        .parent
        .map(|parent| link("pokemon-species", parent, d.name_at(parent as usize - 1)));
    Some(json!({
        "base_happiness": base_happiness,
        "capture_rate": capture_rate,
        "color": link("pokemon-color", 3, "brown"),
        "egg_groups": [link("egg-group", 5, "ground")],
        "evolution_chain": {"url": format!("/api/v2/evolution-chain/{}/", chain.id)},
        "evolves_from_species": evolves_from,
        "flavor_text_entries": flavors,
        "form_descriptions": [],
        "forms_switchable": false,
        "gender_rate": gender_rate,
        "genera": [
            {"genus": format!("Pokémon {genus}"), "language": language(FRENCH)},
            {"genus": format!("{genus} Pokémon"), "language": language(ENGLISH)},
        ],
        "generation": generation(gen_),
        "growth_rate": link("growth-rate", 2, "medium"),
        "habitat": habitat,
        "has_gender_differences": has_gender_differences,
        "hatch_counter": hatch_counter,
        "id": id,
        "is_baby": member.is_baby,
        "is_legendary": legendary,
        "is_mythical": mythical,
        "name": name,
        "names": names(name),
        "order": id,
        "pal_park_encounters": [],
        "pokedex_numbers": [{"entry_number": id, "pokedex": link("pokedex", 1, "national")}],
        "shape": link("pokemon-shape", 8, "quadruped"),
        "varieties": varieties,
    }))
}

/// `text` with its longest word split by a soft hyphen and a line break, as the old games'
/// text boxes did.
fn hyphenated(text: &str) -> String {
    let Some(word) = text.split(' ').max_by_key(|w| w.len()) else {
        return text.to_owned();
    };
    let cut = word
        .char_indices()
        .nth(word.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    if cut == 0 {
        return text.to_owned();
    }
    text.replacen(
        word,
        &format!("{}\u{ad}\n{}", &word[..cut], &word[cut..]),
        1,
    )
}

/// The document of chain `chain`, cut to the species the dataset holds.
pub(crate) fn evolution_chain(d: &Dataset, chain: &Chain) -> Value {
    let served = d.species_count() as i32;
    let members: Vec<&Member> = chain
        .members
        .iter()
        .filter(|m| m.species_id <= served)
        .collect();
    json!({
        "baby_trigger_item": Value::Null,
        "chain": chain_node(d, &members, members[0]),
        "id": chain.id,
    })
}

fn chain_node(d: &Dataset, members: &[&Member], member: &Member) -> Value {
    let species_name = d.name_at(member.species_id as usize - 1);
    let children: Vec<Value> = members
        .iter()
        .filter(|m| m.parent == Some(member.species_id))
        .map(|child| chain_node(d, members, child))
        .collect();
    let details: Vec<Value> = member
        .details
        .iter()
        .map(|detail| evolution_detail(d, member, detail))
        .collect();
    json!({
        "evolution_details": details,
        "evolves_to": children,
        "is_baby": member.is_baby,
        "species": link("pokemon-species", member.species_id, species_name),
    })
}

fn evolution_detail(d: &Dataset, member: &Member, detail: &Detail) -> Value {
    let trigger = |index: usize| link("evolution-trigger", TRIGGERS[index].1, TRIGGERS[index].0);
    let parent = member.parent.unwrap_or(member.species_id);
    let mut value = json!({
        "base_form": link("pokemon", parent, d.name_at(parent as usize - 1)),
        "evolved_form": Value::Null, "gender": Value::Null, "held_item": Value::Null,
        "is_default": detail.is_default, "item": Value::Null, "known_move": Value::Null,
        "known_move_type": Value::Null, "location": Value::Null, "min_affection": Value::Null,
        "min_beauty": Value::Null, "min_damage_taken": Value::Null,
        "min_happiness": Value::Null, "min_level": Value::Null,
        "min_move_count": Value::Null, "min_steps": Value::Null,
        "near_special_rock": false, "needs_multiplayer": false,
        "needs_overworld_rain": false, "party_species": Value::Null,
        "party_type": Value::Null, "region": Value::Null,
        "relative_physical_stats": Value::Null, "time_of_day": "",
        "trade_species": Value::Null, "trigger": trigger(0), "turn_upside_down": false,
        "used_move": Value::Null,
        "version_group": link("version-group", VERSION_GROUPS[0].1, VERSION_GROUPS[0].0),
    });
    match detail.trigger {
        Trigger::Level(level) => value["min_level"] = json!(level),
        Trigger::Item(item) => {
            let (name, id) = EVOLUTION_ITEMS[usize::from(item)];
            value["item"] = link("item", id, name);
            value["trigger"] = trigger(2);
        }
        Trigger::Happiness(happiness, time) => {
            value["min_happiness"] = json!(happiness);
            value["time_of_day"] = json!(time.unwrap_or(""));
        }
        Trigger::Trade(held) => {
            value["trigger"] = trigger(1);
            if let Some(held) = held {
                let (name, id) = TRADE_ITEMS[usize::from(held)];
                value["held_item"] = link("item", id, name);
            }
        }
        Trigger::KnownMoveType(t) => {
            let (name, id) = TYPES[usize::from(t)];
            value["known_move_type"] = link("type", id, name);
        }
    }
    value
}

/// How much a move of type `attacker` (index into [`TYPES`]) hurts a pokemon of type
/// `defender`, as the chart of the seed's world has it: 2, 1, 0.5 or 0 (as 4, 2, 1, 0).
fn effectiveness(seed: u64, attacker: usize, defender: usize) -> u8 {
    match hash3(seed ^ STREAM_TYPE_CHART, attacker as u64, defender as u64) % 100 {
        0..12 => 4,
        12..27 => 1,
        27..30 => 0,
        _ => 2,
    }
}

/// The document of type `id` (one of [`TYPES`] or [`EXTRA_TYPES`]).
pub(crate) fn type_(d: &Dataset, specs: &[Spec], seed: u64, id: i32) -> Option<Value> {
    let (name, type_id) = TYPES
        .iter()
        .chain(&EXTRA_TYPES)
        .copied()
        .find(|&(_, type_id)| i32::from(type_id) == id)?;
    let index = TYPES.iter().position(|&(_, t)| t == type_id);
    let mut relations = json!({
        "double_damage_from": [], "double_damage_to": [], "half_damage_from": [],
        "half_damage_to": [], "no_damage_from": [], "no_damage_to": [],
    });
    if let Some(me) = index {
        for (other, &(other_name, other_id)) in TYPES.iter().enumerate() {
            let other_link = link("type", other_id, other_name);
            for (factor, direction) in [
                (effectiveness(seed, me, other), "to"),
                (effectiveness(seed, other, me), "from"),
            ] {
                let key = match factor {
                    4 => "double_damage",
                    1 => "half_damage",
                    0 => "no_damage",
                    _ => continue,
                };
                if let Some(list) = relations[format!("{key}_{direction}")].as_array_mut() {
                    list.push(other_link.clone());
                }
            }
        }
    }
    let pokemon: Vec<Value> = specs
        .iter()
        .enumerate()
        .filter_map(|(pos, spec)| {
            let slot = spec
                .types()
                .iter()
                .position(|&t| Some(usize::from(t)) == index)?;
            Some(json!({"pokemon": pokemon_link(d, pos), "slot": slot + 1}))
        })
        .collect();
    let moves: Vec<Value> = move_ids()
        .filter(|&move_id| move_facts(seed, move_id).type_id == type_id)
        .map(|move_id| link("move", move_id, &move_name_of(move_id)))
        .collect();
    let damage_class = match type_id {
        1..=9 => link("move-damage-class", 2, "physical"),
        10..=17 => link("move-damage-class", 3, "special"),
        _ => Value::Null,
    };
    Some(json!({
        "damage_relations": relations,
        "game_indices": [],
        "generation": generation(type_generation(type_id)),
        "id": id,
        "move_damage_class": damage_class,
        "moves": moves,
        "name": name,
        "names": names(name),
        "past_damage_relations": [],
        "pokemon": pokemon,
        "sprites": {"generation-viii": {"sword-shield": {"name_icon":
            format!("https://raw.githubusercontent.com/PokeAPI/sprites/master/sprites/types/generation-viii/sword-shield/{id}.png")}}},
    }))
}

/// Every move id, regular then spin-off.
fn move_ids() -> impl Iterator<Item = i32> {
    (1..=MOVE_COUNT as i32).chain(FIRST_EXTRA_ID..FIRST_EXTRA_ID + crate::world::EXTRA_MOVES as i32)
}

fn move_name_of(id: i32) -> String {
    if id >= FIRST_EXTRA_ID {
        format!(
            "{}-shadow",
            crate::vocab::move_name((id - FIRST_EXTRA_ID) as usize).join("-")
        )
    } else {
        crate::vocab::move_name(id as usize - 1).join("-")
    }
}

/// The figures of move `id`, drawn from the seed.
struct MoveFacts {
    type_id: u16,
    type_name: &'static str,
    /// Index into [`DAMAGE_CLASSES`].
    class: usize,
    power: Option<i64>,
    accuracy: Option<i64>,
    pp: i64,
    priority: i64,
    effect_chance: Option<i64>,
    /// Index into [`AILMENTS`].
    ailment: usize,
    generation: u8,
}

fn move_facts(seed: u64, id: i32) -> MoveFacts {
    let mut r = Rng::new(seed, STREAM_MOVE, id as u64);
    let ((type_name, type_id), class, generation) = if id >= FIRST_EXTRA_ID {
        (EXTRA_TYPES[2], 1, 3)
    } else {
        (
            TYPES[r.index(TYPES.len())],
            r.index(DAMAGE_CLASSES.len()),
            1 + r.below(9) as u8,
        )
    };
    let damaging = class != 0;
    MoveFacts {
        type_id,
        type_name,
        class,
        power: damaging.then(|| 5 * r.range(4, 30)),
        accuracy: (!r.chance(0.1)).then(|| 5 * r.range(10, 20)),
        pp: 5 * r.range(1, 8),
        priority: if r.chance(0.05) { r.range(-1, 2) } else { 0 },
        effect_chance: (damaging && r.chance(0.3)).then(|| 10 * r.range(1, 3)),
        ailment: r.index(AILMENTS.len()),
        generation,
    }
}

/// The document of move `id`.
pub(crate) fn move_(d: &Dataset, specs: &[Spec], seed: u64, id: i32, name: &str) -> Value {
    let facts = move_facts(seed, id);
    let (ailment, ailment_id, verb) = AILMENTS[facts.ailment];
    let (short_effect, effect) = match facts.effect_chance {
        Some(_) => (
            format!("Has a $effect_chance% chance to {verb} the target."),
            format!("Inflicts regular damage.  Has a $effect_chance% chance to {verb} the target."),
        ),
        None if facts.class == 0 => (
            format!("Tries to {verb} the target."),
            format!("Tries to {verb} the target; fails if it already is."),
        ),
        None => (
            "Inflicts regular damage with no additional effect.".to_owned(),
            "Inflicts regular damage.".to_owned(),
        ),
    };
    // Pokemon learn the moves of a window of the shared move pool, whose entry `e` is move
    // `e % MOVE_COUNT`: the learners of a regular move are the windows holding one of its
    // entries.
    let learned_by: Vec<Value> = if id < FIRST_EXTRA_ID {
        let index = id as usize - 1;
        let entries: Vec<u32> = (index..POOL_ENTRIES)
            .step_by(MOVE_COUNT)
            .map(|e| e as u32)
            .collect();
        specs
            .iter()
            .enumerate()
            .filter(|(_, spec)| {
                entries
                    .iter()
                    .any(|&e| (spec.moves_start..spec.moves_start + spec.moves_len).contains(&e))
            })
            .map(|(pos, _)| pokemon_link(d, pos))
            .collect()
    } else {
        Vec::new()
    };
    let (class_name, class_id) = DAMAGE_CLASSES[facts.class];
    let group = VERSION_GROUPS[VERSION_GROUPS.len() - 5];
    json!({
        "accuracy": facts.accuracy,
        "contest_combos": Value::Null,
        "contest_effect": Value::Null,
        "contest_type": Value::Null,
        "damage_class": link("move-damage-class", class_id, class_name),
        "effect_chance": facts.effect_chance,
        "effect_changes": [],
        "effect_entries": [{"effect": effect, "language": language(ENGLISH),
                            "short_effect": short_effect}],
        "flavor_text_entries": [{"flavor_text": format!("A move that may\n{verb} the target."),
                                 "language": language(ENGLISH),
                                 "version_group": link("version-group", group.1, group.0)}],
        "generation": generation(facts.generation),
        "id": id,
        "learned_by_pokemon": learned_by,
        "machines": [],
        "meta": {"ailment": link("move-ailment", ailment_id, ailment),
                 "ailment_chance": facts.effect_chance.unwrap_or(0),
                 "category": link("move-category", 4, "damage-ailment"), "crit_rate": 0,
                 "drain": 0, "flinch_chance": 0, "healing": 0, "max_hits": Value::Null,
                 "max_turns": Value::Null, "min_hits": Value::Null, "min_turns": Value::Null,
                 "stat_chance": 0},
        "name": name,
        "names": names(name),
        "past_values": [],
        "power": facts.power,
        "pp": facts.pp,
        "priority": facts.priority,
        "stat_changes": [],
        "super_contest_effect": Value::Null,
        "target": link("move-target", 10, "selected-pokemon"),
        "type": link("type", facts.type_id, facts.type_name),
    })
}

/// The document of ability `id`.
pub(crate) fn ability(d: &Dataset, specs: &[Spec], seed: u64, id: i32, name: &str) -> Value {
    let mut r = Rng::new(seed, STREAM_ABILITY, id as u64);
    let main_series = id < FIRST_EXTRA_ID;
    let stat = STATS[1 + r.index(STATS.len() - 1)].0;
    let (type_name, _) = TYPES[r.index(TYPES.len())];
    let short_effect = format!("Raises {stat} when hit by a {type_name}-type move.");
    let effect = format!(
        "Whenever this Pokémon is hit by a {type_name}-type move, its {stat} rises one \
         stage.\n\nOverworld: no effect."
    );
    let pokemon: Vec<Value> = if main_series {
        specs
            .iter()
            .enumerate()
            .filter_map(|(pos, spec)| {
                let a = spec
                    .abilities()
                    .iter()
                    .find(|a| i32::from(a.index) + 1 == id)?;
                Some(
                    json!({"is_hidden": a.hidden, "pokemon": pokemon_link(d, pos),
                            "slot": a.slot}),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let group = VERSION_GROUPS[VERSION_GROUPS.len() - 5];
    json!({
        "effect_changes": [],
        "effect_entries": [
            {"effect": format!("{} (de)", display(name)), "language": language(("de", 6)),
             "short_effect": format!("{} (de)", display(name))},
            {"effect": effect, "language": language(ENGLISH), "short_effect": short_effect},
        ],
        "flavor_text_entries": [{"flavor_text": format!("Raises {stat}\nwhen hit."),
                                 "language": language(ENGLISH),
                                 "version_group": link("version-group", group.1, group.0)}],
        "generation": generation(if main_series { 3 + r.below(7) as u8 } else { 4 }),
        "id": id,
        "is_main_series": main_series,
        "name": name,
        "names": names(name),
        "pokemon": pokemon,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyphenation_splits_the_longest_word() {
        assert_eq!(hyphenated("It stores energy"), "It stores ene\u{ad}\nrgy");
        assert_eq!(hyphenated("a"), "a");
    }
}
