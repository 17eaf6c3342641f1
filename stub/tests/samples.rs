//! Samples mode. The real files are only read when `POKEAPI_SAMPLES` points at them (an absolute
//! path: tests run in the crate's folder; `.ci/run` sets it to `../shared/pokeapi-samples` made
//! absolute, and CI fails the test without it); the error cases always run.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use common::get;
use pokeapi_stub::{Dataset, Resource, StubConfig, spawn};
use serde_json::Value;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pokeapi-stub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pokemon")).expect("create scratch dir");
    dir
}

#[test]
fn missing_or_empty_dir_is_a_clear_error() {
    let missing = std::env::temp_dir().join("pokeapi-stub-no-such-dir");
    let err = Dataset::from_samples(&missing, 10)
        .err()
        .expect("missing dir fails");
    assert!(
        err.to_string().contains("pokeapi-stub-no-such-dir"),
        "{err:#}"
    );

    let empty = scratch_dir("empty");
    let err = Dataset::from_samples(&empty, 10)
        .err()
        .expect("empty dir fails");
    assert!(err.to_string().contains("no pokemon/*.json"), "{err:#}");
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn tiny_sample_files_are_cycled_with_rewritten_ids() {
    let dir = scratch_dir("tiny");
    let file = r#"{"abilities":[{"ability":{"name":"b","url":"/x/"},"is_hidden":true,"slot":3},
        {"ability":{"name":"a","url":"/x/"},"is_hidden":false,"slot":1}],"base_experience":null,
        "height":7,"id":42,"moves":[],"name":"q\"uote","species":{"name":"s","url":"/y/"},
        "sprites":{"front_default":null},"stats":[{"base_stat":5,"effort":0,"stat":{"name":"hp"}}],
        "types":[{"slot":1,"type":{"name":"fire"}}],"weight":9}"#;
    std::fs::write(dir.join("pokemon/42.json"), file).expect("write sample");
    let d = Dataset::from_samples(&dir, 3).expect("load");
    assert_eq!(d.ids(), [1, 2, 3]);
    assert_eq!(d.name(3), Some("q\"uote-2"));
    let v: Value = serde_json::from_slice(&d.payload(3).expect("payload")).expect("json");
    assert_eq!(v["id"], 3);
    assert_eq!(v["name"], "q\"uote-2");
    let r = d.record(3).expect("record");
    assert_eq!(r.abilities, ["a", "b"]);
    assert_eq!((r.height, r.weight, r.base_experience), (7, 9, None));
    assert_eq!(r.sprite, None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn real_samples_are_served_with_rewritten_ids() {
    let Some(dir) = std::env::var_os("POKEAPI_SAMPLES").map(PathBuf::from) else {
        // As pokeq's testkit::samples_dir (the stub does not depend on pokeq's crates): under
        // CI the real samples must be checked.
        let on_ci = std::env::var("CI").is_ok_and(|ci| !matches!(ci.as_str(), "" | "false" | "0"));
        assert!(
            !on_ci,
            "POKEAPI_SAMPLES is not set, and under CI it must be: set it to the absolute path of a \
             folder of real PokeAPI payloads (`.ci/run` uses ../shared/pokeapi-samples)"
        );
        eprintln!("note: POKEAPI_SAMPLES not set; skipping the real-samples test");
        return;
    };
    let mut originals = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("pokemon"))
        .expect("read samples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort_by_key(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<i64>().ok())
    });
    for p in &paths {
        let v: Value = serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json");
        originals.push(v);
    }
    let n = originals.len();
    let count = (2 * n + 3) as u32;
    let s = spawn(
        StubConfig {
            count,
            samples_dir: Some(dir),
            ..StubConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("spawn in samples mode");
    let mut names = HashSet::new();
    for (pos, &id) in s.dataset().ids().iter().enumerate() {
        let r = get(s.addr(), &format!("/api/v2/pokemon/{id}/")).await;
        assert_eq!(r.status, 200);
        assert!(r.complete());
        let mut served = r.json();
        let mut original = originals[pos % n].clone();
        let k = pos / n;
        let base_name = original["name"].as_str().expect("name").to_owned();
        let expected_name = if k == 0 {
            base_name
        } else {
            format!("{base_name}-{k}")
        };
        assert_eq!(served["id"], id);
        assert_eq!(served["name"], expected_name.as_str());
        assert!(names.insert(expected_name.clone()), "names stay unique");
        let record = s.dataset().record(id).expect("record");
        assert_eq!(record.id, id);
        assert_eq!(record.name, expected_name);
        assert_eq!(Some(record.height as i64), original["height"].as_i64());
        assert_eq!(
            record.species,
            original["species"]["name"].as_str().expect("species")
        );
        assert_eq!(
            record.sprite.as_deref(),
            original["sprites"]["front_default"].as_str()
        );
        // Everything else is the file's data, untouched.
        for v in [&mut served, &mut original] {
            let obj = v.as_object_mut().expect("object");
            obj.remove("id");
            obj.remove("name");
        }
        assert_eq!(served, original, "id {id}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn the_other_resources_serve_their_folders_and_nothing_without_one() {
    let dir = scratch_dir("resources");
    let pokemon = r#"{"abilities":[],"base_experience":1,"height":1,"id":1,"moves":[],
        "name":"p","species":{"name":"s","url":"/y/"},"sprites":{"front_default":null},
        "stats":[],"types":[{"slot":1,"type":{"name":"electric"}}],"weight":1}"#;
    std::fs::write(dir.join("pokemon/1.json"), pokemon).expect("write sample");
    std::fs::create_dir_all(dir.join("type")).expect("type folder");
    for (id, name) in [(10002, "shadow"), (13, "electric")] {
        let document = format!("{{\n    \"id\": {id},\n    \"name\": \"{name}\"\n}}");
        std::fs::write(dir.join(format!("type/{id}.json")), document).expect("write type");
    }
    let s = spawn(
        StubConfig {
            count: 3,
            samples_dir: Some(dir.clone()),
            ..StubConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("spawn in samples mode");
    let page = get(s.addr(), "/api/v2/type/").await.json();
    assert_eq!(page["count"], 2);
    assert_eq!(page["results"][0]["name"], "electric");
    assert_eq!(
        page["results"][1]["url"],
        format!("http://{}/api/v2/type/10002/", s.addr())
    );
    let served = get(s.addr(), "/api/v2/type/13/").await;
    assert_eq!(
        served.text(),
        r#"{"id":13,"name":"electric"}"#,
        "as the file, compact"
    );
    let page = get(s.addr(), "/api/v2/pokemon-species/").await.json();
    assert_eq!(
        (page["count"].as_u64(), page["next"].is_null()),
        (Some(0), true)
    );
    assert_eq!(
        get(s.addr(), "/api/v2/pokemon-species/1/").await.status,
        404
    );
    assert_eq!(get(s.addr(), "/api/v2/pokemon/3/").await.status, 200);
    s.shutdown().await;

    std::fs::write(dir.join("type/again.json"), r#"{"id":13,"name":"x"}"#).expect("write");
    let error = Dataset::from_samples(&dir, 3)
        .err()
        .expect("two files for one id");
    assert!(format!("{error:#}").contains("id 13"), "{error:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn real_samples_of_every_resource_are_served_as_they_are() {
    let Some(dir) = std::env::var_os("POKEAPI_SAMPLES").map(PathBuf::from) else {
        let on_ci = std::env::var("CI").is_ok_and(|ci| !matches!(ci.as_str(), "" | "false" | "0"));
        assert!(
            !on_ci,
            "POKEAPI_SAMPLES is not set, and under CI it must be: set it to the absolute path of a \
             folder of real PokeAPI payloads (`.ci/run` uses ../shared/pokeapi-samples)"
        );
        eprintln!("note: POKEAPI_SAMPLES not set; skipping the real-samples test");
        return;
    };
    let s = spawn(
        StubConfig {
            count: 20,
            samples_dir: Some(dir.clone()),
            ..StubConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("spawn in samples mode");
    let mut served = 0;
    for resource in &Resource::ALL[1..] {
        let mut files: Vec<(i64, Value)> = std::fs::read_dir(dir.join(resource.name()))
            .expect("a sample folder")
            .map(|e| e.expect("entry").path())
            .map(|p| {
                let v: Value =
                    serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
                (v["id"].as_i64().expect("id"), v)
            })
            .collect();
        files.sort_by_key(|(id, _)| *id);
        let page = get(s.addr(), &format!("/api/v2/{resource}/?limit=100"))
            .await
            .json();
        assert_eq!(
            page["count"].as_u64(),
            Some(files.len() as u64),
            "{resource}"
        );
        for (entry, (id, original)) in page["results"]
            .as_array()
            .expect("results")
            .iter()
            .zip(&files)
        {
            assert_eq!(entry["name"], original["name"], "{resource} {id}");
            let reply = get(s.addr(), &format!("/api/v2/{resource}/{id}/")).await;
            assert_eq!(reply.status, 200);
            assert_eq!(&reply.json(), original, "{resource} {id}");
            served += 1;
        }
    }
    assert!(served >= 10, "{served}");
    let chains: Vec<i32> = s.dataset().resource_ids(Resource::EvolutionChain).to_vec();
    assert!(chains.contains(&67), "eevee's chain: {chains:?}");
    s.shutdown().await;
}
