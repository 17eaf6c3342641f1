//! The resources besides pokemon: lists and details of species, evolution chains, types,
//! abilities and moves, shaped like the real API's and linked consistently, with the same faults.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;

use common::{get, path_of};
use pokeapi_stub::{FaultKind, FaultRule, Resource, StubConfig, StubHandle, spawn};
use serde_json::Value;

async fn stub(config: StubConfig) -> StubHandle {
    spawn(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("spawn stub")
}

/// Every `(id, name)` of `resource`'s list, paging through it as a client would.
async fn list_all(addr: SocketAddr, resource: Resource) -> (u64, Vec<(i32, Option<String>)>) {
    let mut entries = Vec::new();
    let mut path = format!("/api/v2/{resource}/?limit=100");
    let mut count = None;
    loop {
        let reply = get(addr, &path).await;
        assert_eq!(reply.status, 200, "{path}");
        let page = reply.json();
        count = count.or(page["count"].as_u64());
        for entry in page["results"].as_array().expect("results") {
            let url = entry["url"].as_str().expect("url");
            let id = path_of(url, addr)
                .strip_prefix(&format!("/api/v2/{resource}/"))
                .and_then(|rest| rest.strip_suffix('/'))
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("{url} is not a {resource} URL of the stub"));
            entries.push((id, entry["name"].as_str().map(str::to_owned)));
        }
        match page["next"].as_str() {
            Some(next) => path = path_of(next, addr),
            None => break,
        }
    }
    (count.expect("count"), entries)
}

#[tokio::test]
async fn every_resource_lists_and_serves_its_ids_with_the_real_layout() {
    let s = stub(StubConfig::default()).await;
    let addr = s.addr();
    let mut listed = HashMap::new();
    for resource in Resource::ALL {
        let (count, entries) = list_all(addr, resource).await;
        let ids: Vec<i32> = entries.iter().map(|(id, _)| *id).collect();
        assert_eq!(count as usize, ids.len(), "{resource}");
        assert_eq!(ids, s.dataset().resource_ids(resource), "{resource}");
        for (id, name) in &entries {
            assert_eq!(name.as_deref(), s.dataset().resource_name(resource, *id));
        }
        listed.insert(resource, entries);
    }
    let ids = |r: Resource| -> Vec<i32> { listed[&r].iter().map(|(id, _)| *id).collect() };
    assert_eq!(
        ids(Resource::PokemonSpecies),
        (1..=1025).collect::<Vec<_>>()
    );
    let types: Vec<i32> = (1..=19).chain([10001, 10002]).collect();
    assert_eq!(ids(Resource::Type), types);
    let chains = ids(Resource::EvolutionChain);
    assert!(chains.windows(2).any(|w| w[1] > w[0] + 1), "chain ids skip");
    assert!(
        listed[&Resource::EvolutionChain]
            .iter()
            .all(|(_, name)| name.is_none())
    );
    assert!(ids(Resource::Ability).contains(&10001) && ids(Resource::Move).contains(&10018));
    let type_names: Vec<_> = listed[&Resource::Type]
        .iter()
        .map(|(_, name)| name.clone().unwrap_or_default())
        .collect();
    assert_eq!(&type_names[12..13], ["electric"]);
    assert_eq!(&type_names[18..], ["stellar", "unknown", "shadow"]);

    // Each detail, by both paths, is the dataset's document for that id.
    for resource in &Resource::ALL[1..] {
        for &(id, _) in &listed[resource] {
            let reply = get(addr, &format!("/api/v2/{resource}/{id}/")).await;
            assert_eq!(reply.status, 200, "{resource} {id}");
            assert_eq!(reply.header("content-type"), Some("application/json"));
            assert!(reply.complete());
            assert_eq!(
                Some(reply.body.as_slice()),
                s.dataset().document(*resource, id).as_deref()
            );
            let document = reply.json();
            assert_eq!(document["id"], id, "{resource} {id}");
            assert!(reply.header("etag").is_some());
        }
        let first = listed[resource][0].0;
        assert_eq!(
            get(addr, &format!("/api/v2/{resource}/{first}"))
                .await
                .status,
            200
        );
        assert_eq!(s.resource_detail_requests(*resource, first), 2);
    }
    for path in [
        "/api/v2/pokemon-species/1026/",
        "/api/v2/pokemon-species/0/",
        "/api/v2/type/20/",
        "/api/v2/type/electric/",
        "/api/v2/move/10019/",
    ] {
        assert_eq!(get(addr, path).await.status, 404, "{path}");
    }
    assert_eq!(
        s.total_detail_requests(),
        0,
        "pokemon requests are counted apart"
    );
    assert_eq!(s.resource_list_requests(Resource::Type), 1);
    s.shutdown().await;
}

/// `(resource, id)` of every link to a document of one of the six resources in JSON text
/// `text`, relative (`"/api/v2/type/13/"`) or absolute; not to their sub-resources
/// (`/api/v2/pokemon/25/encounters`, which the stub does not serve).
fn links(text: &str) -> Vec<(Resource, i32)> {
    text.match_indices("/api/v2/")
        .filter_map(|(at, prefix)| {
            let rest = &text[at + prefix.len()..];
            let (resource, rest) = rest.split_once('/')?;
            let (id, after) = rest.split_once('/')?;
            if !after.starts_with('"') {
                return None;
            }
            Some((Resource::from_name(resource)?, id.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn every_link_the_stub_emits_resolves_on_the_stub() {
    // Past 1025, so that forms link their species and species their forms.
    let s = stub(StubConfig {
        count: 1040,
        ..StubConfig::default()
    })
    .await;
    let addr = s.addr();
    let mut targets: BTreeSet<(Resource, i32)> = BTreeSet::new();
    let mut kinds = HashSet::new();
    for resource in Resource::ALL {
        for &id in s.dataset().resource_ids(resource) {
            let document = s.dataset().document(resource, id).expect("document");
            for (target, target_id) in links(std::str::from_utf8(&document).expect("UTF-8")) {
                kinds.insert((resource, target));
                targets.insert((target, target_id));
            }
        }
    }
    // Each resource's documents link every resource they link in the real API.
    for expected in [
        (Resource::Pokemon, Resource::PokemonSpecies),
        (Resource::Pokemon, Resource::Type),
        (Resource::Pokemon, Resource::Ability),
        (Resource::Pokemon, Resource::Move),
        (Resource::PokemonSpecies, Resource::EvolutionChain),
        (Resource::PokemonSpecies, Resource::PokemonSpecies),
        (Resource::PokemonSpecies, Resource::Pokemon),
        (Resource::EvolutionChain, Resource::PokemonSpecies),
        (Resource::Type, Resource::Pokemon),
        (Resource::Type, Resource::Move),
        (Resource::Ability, Resource::Pokemon),
        (Resource::Move, Resource::Pokemon),
        (Resource::Move, Resource::Type),
    ] {
        assert!(kinds.contains(&expected), "no {expected:?} link");
    }
    assert!(targets.len() > 3000, "{}", targets.len());
    for (resource, id) in targets {
        let reply = get(addr, &format!("/api/v2/{resource}/{id}/")).await;
        assert_eq!(reply.status, 200, "link to {resource} {id}");
    }
    s.shutdown().await;
}

fn document(s: &StubHandle, resource: Resource, id: i32) -> Value {
    serde_json::from_slice(&s.dataset().document(resource, id).expect("served")).expect("JSON")
}

fn id_of(link: &Value) -> i32 {
    let url = link["url"].as_str().expect("url");
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{url}"))
}

#[tokio::test]
async fn species_chains_and_varieties_agree() {
    // Past 1025, so that forms are varieties of their species.
    let s = stub(StubConfig {
        count: 1060,
        ..StubConfig::default()
    })
    .await;
    // A species' chain holds it, under the parent the species names.
    let mut branching = 0;
    let mut forms = 0;
    for species_id in 1..=1025 {
        let species = document(&s, Resource::PokemonSpecies, species_id);
        let chain = document(
            &s,
            Resource::EvolutionChain,
            id_of(&species["evolution_chain"]),
        );
        let mut stack = vec![(&chain["chain"], None)];
        let mut found = None;
        while let Some((node, parent)) = stack.pop() {
            let id = id_of(&node["species"]);
            if id == species_id {
                found = Some(parent);
            }
            let children = node["evolves_to"].as_array().expect("evolves_to");
            if children.len() > 2 {
                branching += 1;
            }
            for child in children {
                stack.push((child, Some(id)));
            }
        }
        let from = species["evolves_from_species"]
            .is_object()
            .then(|| id_of(&species["evolves_from_species"]));
        assert_eq!(found, Some(from), "species {species_id} in its chain");
        // Each variety is a pokemon of this species.
        for variety in species["varieties"].as_array().expect("varieties") {
            let pokemon = id_of(&variety["pokemon"]);
            let record = s.dataset().record(pokemon).expect("a served pokemon");
            assert_eq!(Some(record.species.as_str()), species["name"].as_str());
            forms += usize::from(pokemon > 1025);
        }
    }
    assert!(branching > 0, "an eevee-like chain");
    assert_eq!(forms, 1060 - 1025, "every form is a variety of its species");
    s.shutdown().await;
}

#[tokio::test]
async fn types_abilities_and_moves_list_the_pokemon_that_list_them() {
    let s = stub(StubConfig {
        count: 150,
        ..StubConfig::default()
    })
    .await;
    let mut of_type: HashMap<i32, BTreeSet<i32>> = HashMap::new();
    let mut of_ability: HashMap<i32, BTreeSet<i32>> = HashMap::new();
    let mut of_move: HashMap<i32, BTreeSet<i32>> = HashMap::new();
    for &id in s.dataset().ids() {
        let pokemon = document(&s, Resource::Pokemon, id);
        for t in pokemon["types"].as_array().expect("types") {
            of_type.entry(id_of(&t["type"])).or_default().insert(id);
        }
        for a in pokemon["abilities"].as_array().expect("abilities") {
            of_ability
                .entry(id_of(&a["ability"]))
                .or_default()
                .insert(id);
        }
        for m in pokemon["moves"].as_array().expect("moves") {
            of_move.entry(id_of(&m["move"])).or_default().insert(id);
        }
    }
    let listed = |document: Value, key: &str, inner: Option<&str>| -> BTreeSet<i32> {
        document[key]
            .as_array()
            .expect("list")
            .iter()
            .map(|entry| id_of(inner.map_or(entry, |inner| &entry[inner])))
            .collect()
    };
    for &t in s.dataset().resource_ids(Resource::Type) {
        let expected = of_type.remove(&t).unwrap_or_default();
        let found = listed(document(&s, Resource::Type, t), "pokemon", Some("pokemon"));
        assert_eq!(found, expected, "type {t}");
    }
    for &a in s.dataset().resource_ids(Resource::Ability) {
        let expected = of_ability.remove(&a).unwrap_or_default();
        let found = listed(
            document(&s, Resource::Ability, a),
            "pokemon",
            Some("pokemon"),
        );
        assert_eq!(found, expected, "ability {a}");
    }
    for &m in s.dataset().resource_ids(Resource::Move) {
        let expected = of_move.remove(&m).unwrap_or_default();
        let found = listed(document(&s, Resource::Move, m), "learned_by_pokemon", None);
        assert_eq!(found, expected, "move {m}");
    }
    assert!(of_type.is_empty() && of_ability.is_empty() && of_move.is_empty());
    // A move's type lists the move.
    for &m in &s.dataset().resource_ids(Resource::Move)[..50] {
        let game_move = document(&s, Resource::Move, m);
        let t = id_of(&game_move["type"]);
        assert!(listed(document(&s, Resource::Type, t), "moves", None).contains(&m));
    }
    s.shutdown().await;
}

#[tokio::test]
async fn a_smaller_count_serves_a_prefix_of_the_same_species_and_chains() {
    let big = stub(StubConfig::default()).await;
    let small = stub(StubConfig {
        count: 140,
        ..StubConfig::default()
    })
    .await;
    assert_eq!(
        small.dataset().resource_ids(Resource::PokemonSpecies),
        (1..=140).collect::<Vec<_>>()
    );
    let chains = small.dataset().resource_ids(Resource::EvolutionChain);
    assert!(
        big.dataset()
            .resource_ids(Resource::EvolutionChain)
            .starts_with(chains)
    );
    for &id in chains {
        let chain = document(&small, Resource::EvolutionChain, id);
        for species in links(&chain.to_string()) {
            assert!(species.1 <= 140, "chain {id} links species {}", species.1);
        }
    }
    // The same species, but for the forms (ids past 1025) that only the bigger one has.
    for id in [1, 70, 140] {
        let without_varieties = |s: &StubHandle| {
            let mut species = document(s, Resource::PokemonSpecies, id);
            species["varieties"] = Value::Null;
            species
        };
        assert_eq!(
            without_varieties(&small),
            without_varieties(&big),
            "species {id}"
        );
    }
    assert_eq!(
        small.dataset().resource_ids(Resource::Type),
        big.dataset().resource_ids(Resource::Type)
    );
    small.shutdown().await;
    big.shutdown().await;
}

#[tokio::test]
async fn faults_apply_per_resource() {
    let s = stub(StubConfig {
        count: 200,
        resource_faults: HashMap::from([(
            (Resource::PokemonSpecies, 133),
            FaultRule::times(FaultKind::ServerError(500), 1),
        )]),
        ..StubConfig::default()
    })
    .await;
    let addr = s.addr();
    let species = "/api/v2/pokemon-species/133/";
    assert_eq!(get(addr, species).await.status, 500);
    let reply = get(addr, species).await;
    assert_eq!(reply.status, 200);
    assert_eq!(get(addr, "/api/v2/pokemon/133/").await.status, 200);
    assert_eq!(s.resource_detail_requests(Resource::PokemonSpecies, 133), 2);
    assert_eq!(s.detail_requests(133), 1);

    // Conditional requests: the ETag names the resource.
    let etag = reply.header("etag").expect("etag").to_owned();
    assert!(etag.contains("pokemon-species"), "{etag}");

    s.set_resource_fault(
        Resource::Type,
        13,
        Some(FaultRule::always(FaultKind::WrongId)),
    );
    let wrong = get(addr, "/api/v2/type/13/").await.json();
    assert_eq!(wrong["id"], 14, "the next type's id");
    assert_eq!(wrong["name"], "electric");

    let chain = s.dataset().resource_ids(Resource::EvolutionChain)[3];
    s.set_resource_fault(
        Resource::EvolutionChain,
        chain,
        Some(FaultRule::times(FaultKind::NulInString, 1)),
    );
    let nul = get(addr, &format!("/api/v2/evolution-chain/{chain}/")).await;
    assert!(nul.text().contains("\\u0000"), "{}", nul.text());
    assert!(
        nul.json()["chain"]["species"]["name"]
            .as_str()
            .is_some_and(|name| name.ends_with('\0'))
    );
    s.set_resource_fault(
        Resource::Move,
        1,
        Some(FaultRule::always(FaultKind::DropMidBody)),
    );
    let dropped = get(addr, "/api/v2/move/1/").await;
    assert!(!dropped.complete(), "the body is cut short");
    s.shutdown().await;

    // Rate-based faults hit every resource.
    let s = stub(StubConfig {
        count: 20,
        fault_rate: 1.0,
        ..StubConfig::default()
    })
    .await;
    for resource in Resource::ALL {
        let id = s.dataset().resource_ids(resource)[0];
        let reply = get(s.addr(), &format!("/api/v2/{resource}/{id}/")).await;
        assert!(
            reply.status != 200 || !reply.complete(),
            "{resource} {id}: {}",
            reply.status
        );
    }
    s.shutdown().await;
}
