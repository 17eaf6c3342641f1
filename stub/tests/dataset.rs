//! The generated data: determinism, shape, agreement with `record`, sizes.

use std::collections::HashSet;

use pokeapi_stub::{Dataset, PokemonRecord};
use serde_json::Value;

const KEYS: [&str; 21] = [
    "abilities",
    "base_experience",
    "cries",
    "forms",
    "game_indices",
    "height",
    "held_items",
    "id",
    "is_default",
    "location_area_encounters",
    "moves",
    "name",
    "order",
    "past_abilities",
    "past_stats",
    "past_types",
    "species",
    "sprites",
    "stats",
    "types",
    "weight",
];

const TYPE_NAMES: [&str; 18] = [
    "normal", "fighting", "flying", "poison", "ground", "rock", "bug", "ghost", "steel", "fire",
    "water", "grass", "electric", "psychic", "ice", "dragon", "dark", "fairy",
];

fn names(v: &Value, list: &str, inner: &str) -> Vec<String> {
    let mut items: Vec<(i64, String)> = v[list]
        .as_array()
        .expect("array")
        .iter()
        .map(|item| {
            (
                item["slot"].as_i64().expect("slot"),
                item[inner]["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    items.sort_by_key(|(slot, _)| *slot);
    items.into_iter().map(|(_, n)| n).collect()
}

/// What a consumer would extract from the served JSON.
fn record_from_json(v: &Value) -> PokemonRecord {
    let int = |key: &str| v[key].as_i64().map(|n| n as i32);
    PokemonRecord {
        id: int("id").expect("id"),
        name: v["name"].as_str().expect("name").to_owned(),
        height: int("height").expect("height"),
        weight: int("weight").expect("weight"),
        base_experience: int("base_experience"),
        types: names(v, "types", "type"),
        abilities: names(v, "abilities", "ability"),
        stats: v["stats"]
            .as_array()
            .expect("stats")
            .iter()
            .map(|s| {
                (
                    s["stat"]["name"].as_str().expect("stat name").to_owned(),
                    s["base_stat"].as_i64().expect("base_stat") as i32,
                )
            })
            .collect(),
        sprite: v["sprites"]["front_default"].as_str().map(str::to_owned),
        species: v["species"]["name"].as_str().expect("species").to_owned(),
    }
}

#[test]
fn same_seed_same_bytes_and_prefix_stable() {
    let a = Dataset::synthetic(1100, 7);
    let b = Dataset::synthetic(1100, 7);
    let small = Dataset::synthetic(1030, 7);
    let other = Dataset::synthetic(1100, 8);
    assert_eq!(a.ids(), b.ids());
    let mut differing = 0;
    for &id in a.ids().iter().step_by(3) {
        let payload = a.payload(id).expect("payload");
        assert_eq!(Some(&payload), b.payload(id).as_ref(), "id {id}");
        assert_eq!(a.record(id), b.record(id));
        if small.contains(id) {
            assert_eq!(Some(&payload), small.payload(id).as_ref(), "prefix id {id}");
        }
        if other.payload(id).as_ref() != Some(&payload) {
            differing += 1;
        }
    }
    assert!(
        differing > 300,
        "another seed changes the data ({differing})"
    );
}

#[test]
fn payloads_have_the_real_shape_and_match_records() {
    let d = Dataset::synthetic(1351, 1);
    let type_names: HashSet<&str> = TYPE_NAMES.into_iter().collect();
    let sample: Vec<i32> = d
        .ids()
        .iter()
        .copied()
        .step_by(9)
        .chain([1, 25, 1025, 10001, 10326])
        .collect();
    for id in sample {
        let body = d.payload(id).expect("payload");
        let body_pieces = d.body(id).expect("body");
        assert_eq!(body_pieces.len(), body.len());
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("id {id}: {e}"));
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, KEYS, "id {id}");
        let record = d.record(id).expect("record");
        assert_eq!(record_from_json(&v), record, "id {id}");
        assert_eq!(record.id, id);
        assert_eq!(Some(record.name.as_str()), d.name(id));

        assert!((1..=2).contains(&record.types.len()));
        assert!(record.types.iter().all(|t| type_names.contains(t.as_str())));
        let stat_names: Vec<&str> = record.stats.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            stat_names,
            [
                "hp",
                "attack",
                "defense",
                "special-attack",
                "special-defense",
                "speed"
            ]
        );
        assert_eq!(v["is_default"], Value::Bool(id <= 1025));
        assert_eq!(
            v["location_area_encounters"],
            format!("/api/v2/pokemon/{id}/encounters")
        );
        for t in v["types"].as_array().expect("types") {
            assert!(
                t["type"]["url"]
                    .as_str()
                    .expect("url")
                    .starts_with("/api/v2/type/")
            );
        }
        let moves = v["moves"].as_array().expect("moves");
        let move_names: HashSet<&str> = moves
            .iter()
            .map(|m| m["move"]["name"].as_str().expect("move name"))
            .collect();
        assert_eq!(move_names.len(), moves.len(), "id {id}: moves repeat");
        for m in moves.iter().take(3) {
            assert!(
                m["move"]["url"]
                    .as_str()
                    .expect("url")
                    .starts_with("/api/v2/move/")
            );
            for detail in m["version_group_details"].as_array().expect("details") {
                assert!(detail["level_learned_at"].is_i64());
                assert!(detail["move_learn_method"]["name"].is_string());
                assert!(detail["order"].is_null() || detail["order"].is_i64());
                assert!(detail["version_group"]["url"].is_string());
            }
        }
    }
}

#[test]
fn names_unique_and_variety_like_the_real_data() {
    let d = Dataset::synthetic(1351, 1);
    let names: HashSet<&str> = d
        .ids()
        .iter()
        .map(|&id| d.name(id).expect("name"))
        .collect();
    assert_eq!(names.len(), 1351);
    assert!(names.iter().all(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }));
    let records: Vec<PokemonRecord> = d
        .ids()
        .iter()
        .map(|&id| d.record(id).expect("record"))
        .collect();
    let no_base_exp = records
        .iter()
        .filter(|r| r.base_experience.is_none())
        .count();
    let no_sprite = records.iter().filter(|r| r.sprite.is_none()).count();
    let no_abilities = records.iter().filter(|r| r.abilities.is_empty()).count();
    let two_types = records.iter().filter(|r| r.types.len() == 2).count();
    assert!(
        (20..=120).contains(&no_base_exp),
        "base_experience null: {no_base_exp}"
    );
    assert!((3..=60).contains(&no_sprite), "no sprite: {no_sprite}");
    assert!(
        (2..=40).contains(&no_abilities),
        "no abilities: {no_abilities}"
    );
    assert!((400..=950).contains(&two_types), "two types: {two_types}");
    // Empty-ability items also have no moves, like the real 10301.
    for r in records.iter().filter(|r| r.abilities.is_empty()) {
        let v: Value = serde_json::from_slice(&d.payload(r.id).expect("payload")).expect("json");
        assert_eq!(v["moves"].as_array().map(Vec::len), Some(0), "id {}", r.id);
    }
    // Forms link to a species among the national-dex names.
    let r = d.record(10001).expect("form");
    assert!(
        d.ids()[..1025]
            .iter()
            .any(|&id| d.name(id) == Some(r.species.as_str()))
    );
}

#[test]
fn sizes_are_realistic() {
    let d = Dataset::synthetic(1351, 1);
    let mut sizes: Vec<usize> = d
        .ids()
        .iter()
        .map(|&id| d.body(id).expect("body").len())
        .collect();
    let mut first: Vec<usize> = sizes[..400].to_vec();
    first.sort_unstable();
    let median = first[200];
    sizes.sort_unstable();
    let (min, max) = (sizes[0], sizes[sizes.len() - 1]);
    let near_mb = sizes.iter().filter(|&&s| s >= 700_000).count();
    eprintln!("median(400) {median}, min {min}, max {max}, >=700KB {near_mb}");
    assert!((60_000..=160_000).contains(&median), "median {median}");
    assert!((500_000..=1_400_000).contains(&max), "max {max}");
    assert!(min >= 3_000, "min {min}");
    assert!((5..=120).contains(&near_mb), ">=700KB: {near_mb}");
}

#[test]
fn big_counts_stay_cheap() {
    let d = Dataset::synthetic(20_000, 3);
    assert_eq!(d.ids().len(), 20_000);
    assert_eq!(d.ids()[19_999], 10001 + 20_000 - 1025 - 1);
    let names: HashSet<&str> = d
        .ids()
        .iter()
        .map(|&id| d.name(id).expect("name"))
        .collect();
    assert_eq!(names.len(), 20_000);
    let last = *d.ids().last().expect("ids");
    let v: Value = serde_json::from_slice(&d.payload(last).expect("payload")).expect("json");
    assert_eq!(v["id"], last);
}
