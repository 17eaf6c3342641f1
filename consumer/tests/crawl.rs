//! The whole Pokédex through the pipeline: jobs of every resource, a crawl that follows links
//! from `/pokemon` alone with two consumers racing, a rerun that publishes nothing, a species
//! dead-lettered and replayed, and the `pokedex` view over what a crawl stored.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pokeapi_stub::dataset::Dataset;
use pokeapi_stub::resource::Resource;
use pokeapi_stub::{FaultKind, FaultRule, StubConfig};
use pokeq_shared::job::Job;
use pokeq_shared::links::links;
use support::{TestEnv, wait_until};

const SETTLE: Duration = Duration::from_secs(120);

/// Every document a crawl from the stub's pokemon list reaches by links, by resource: what the
/// consumers must store, computed from the documents the stub serves.
fn reachable(dataset: &Dataset) -> BTreeMap<&'static str, BTreeSet<i32>> {
    let mut seen: BTreeMap<&'static str, BTreeSet<i32>> = BTreeMap::new();
    let mut todo: Vec<(&'static str, i32)> =
        dataset.ids().iter().map(|&id| ("pokemon", id)).collect();
    while let Some((resource, id)) = todo.pop() {
        if !seen.entry(resource).or_default().insert(id) {
            continue;
        }
        let kind = Resource::from_name(resource).expect("a stub resource");
        let document = dataset
            .document(kind, id)
            .unwrap_or_else(|| panic!("the stub links {resource} {id} but does not serve it"));
        todo.extend(links(resource, &document));
    }
    seen
}

/// `ingest_items` counts by resource and status.
async fn counts(env: &TestEnv) -> BTreeMap<(String, String), i64> {
    env.client()
        .await
        .query(
            "select resource, status, count(*) from ingest_items group by resource, status",
            &[],
        )
        .await
        .expect("counts")
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect()
}

/// Waits until `total` items of any resources are done.
async fn wait_crawled(env: &TestEnv, total: usize) {
    let settled = wait_until(SETTLE, || async {
        let done: i64 = counts(env)
            .await
            .iter()
            .filter(|((_, status), _)| status == "done")
            .map(|(_, n)| n)
            .sum();
        done == total as i64
    })
    .await;
    assert!(settled, "crawl not done: {:?}", counts(env).await);
}

async fn count(env: &TestEnv, resource: &str, status: &str) -> i64 {
    counts(env)
        .await
        .get(&(resource.to_owned(), status.to_owned()))
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_crawl_from_pokemon_reaches_every_linked_document_once_and_a_rerun_publishes_nothing() {
    let env = TestEnv::start(StubConfig {
        count: 60,
        ..StubConfig::default()
    })
    .await;
    let expected = reachable(env.stub.dataset());
    assert_eq!(
        expected.keys().copied().collect::<Vec<_>>(),
        [
            "ability",
            "evolution-chain",
            "move",
            "pokemon",
            "pokemon-species",
            "type"
        ],
        "the stub's pokemon link every other resource"
    );
    let total: usize = expected.values().map(BTreeSet::len).sum();

    let summary = env.run_producer(&["--follow"]).await;
    assert_eq!(summary.published, 60, "only the pokemon list is published");
    let first = env.spawn_consumer(&[]);
    let second = env.spawn_consumer(&[]);
    wait_crawled(&env, total).await;

    for (resource, ids) in &expected {
        assert_eq!(
            count(&env, resource, "done").await,
            ids.len() as i64,
            "{resource}"
        );
        let kind = Resource::from_name(resource).expect("a stub resource");
        for &id in ids {
            assert_eq!(
                env.stub.resource_detail_requests(kind, id),
                1,
                "{resource} {id} asked once"
            );
        }
        assert_eq!(
            env.stub.resource_total_detail_requests(kind),
            ids.len() as u64,
            "{resource}: no detail asked that is not linked"
        );
    }
    let other_states: Vec<_> = counts(&env)
        .await
        .into_iter()
        .filter(|((_, status), _)| status != "done")
        .collect();
    assert!(other_states.is_empty(), "{other_states:?}");
    assert!(env.drain_dead().await.is_empty());

    // The pokedex view answers a pokemon of the stub with its species and types.
    let id = env.stub.dataset().ids()[0];
    let row = env
        .client()
        .await
        .query_one(
            "select name, species, species_id, display_name, types, type_ids
             from pokedex where id = $1",
            &[&id],
        )
        .await
        .expect("the pokedex has the pokemon");
    let species: String = row.get(1);
    let species_id: Option<i32> = row.get(2);
    let display: Option<String> = row.get(3);
    let types: Vec<String> = row.get(4);
    let type_ids: Vec<i32> = row.get(5);
    assert!(species_id.is_some(), "{species} joined its species");
    assert!(display.is_some_and(|name| !name.is_empty()));
    assert!(!types.is_empty());
    assert_eq!(
        type_ids.len(),
        types.len(),
        "every type of {types:?} stored"
    );

    // A rerun finds everything known: nothing published, the API asked for no detail.
    let requests = env.stub.total_detail_requests();
    let rerun = env.run_producer(&["--follow"]).await;
    assert_eq!(rerun.published, 0, "{rerun}");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            env.ready(&env.topology().jobs()).await == 0
        })
        .await
    );
    assert_eq!(env.stub.total_detail_requests(), requests);

    // A consumer that stopped between enqueueing a link and publishing its job left the item
    // `queued` without a job: a producer run with --follow publishes it once --requeue-after
    // has passed, though it does not list its resource.
    let species = *expected["pokemon-species"].first().expect("a species");
    env.client()
        .await
        .execute(
            "update ingest_items set status = 'queued', updated_at = now() - interval '2 hours',
                                     queued_at = now() - interval '2 hours'
             where resource = 'pokemon-species' and id = $1",
            &[&species],
        )
        .await
        .expect("a lost link");
    let recovery = env.run_producer(&["--follow"]).await;
    assert_eq!(recovery.published, 1, "{recovery}");
    assert!(
        wait_until(SETTLE, || async {
            count(&env, "pokemon-species", "done").await == expected["pokemon-species"].len() as i64
        })
        .await,
        "{:?}",
        counts(&env).await
    );
    assert_eq!(
        env.stub
            .resource_detail_requests(Resource::PokemonSpecies, species),
        2
    );
    let requests = env.stub.total_detail_requests();
    first.stop().await.expect("clean stop");
    second.stop().await.expect("clean stop");
    assert_eq!(env.stub.total_detail_requests(), requests);
}

#[tokio::test]
async fn a_species_that_fails_is_dead_lettered_with_its_resource_and_replayed_to_done() {
    let env = TestEnv::start(StubConfig {
        count: 3,
        ..StubConfig::default()
    })
    .await;
    let species = 2;
    env.stub.set_resource_fault(
        Resource::PokemonSpecies,
        species,
        Some(FaultRule::always(FaultKind::MalformedJson)),
    );
    let expected = reachable(env.stub.dataset());
    let total: i64 = expected.values().map(|ids| ids.len() as i64).sum();
    env.run_producer(&["--follow"]).await;
    let consumer = env.spawn_consumer(&[]);
    assert!(
        wait_until(SETTLE, || async {
            env.ready(&env.topology().dead()).await == 1
        })
        .await,
        "{:?}",
        counts(&env).await
    );
    let failed = env
        .client()
        .await
        .query(
            "select resource, id, error_kind from ingest_items where status = 'failed'",
            &[],
        )
        .await
        .expect("failed items");
    let failed: Vec<(String, i32, Option<String>)> = failed
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(
        failed,
        [(
            "pokemon-species".to_owned(),
            species,
            Some("malformed_payload".to_owned())
        )]
    );

    // The API recovers; the operator replays the resource's dead letters.
    env.stub
        .set_resource_fault(Resource::PokemonSpecies, species, None);
    let printed = env
        .pokeq(&["dead", "replay", "--resource", "pokemon-species"])
        .await;
    assert!(printed.contains("replayed=1"), "{printed}");
    // The species stored, the crawl goes on through its links to every document.
    assert!(
        wait_until(SETTLE, || async {
            let counts = counts(&env).await;
            counts.iter().all(|((_, status), _)| status == "done")
                && counts.values().sum::<i64>() == total
        })
        .await,
        "the replayed species is stored and followed: {:?}",
        counts(&env).await
    );
    consumer.stop().await.expect("clean stop");
}

#[tokio::test]
async fn resources_listed_without_follow_are_stored_and_nothing_else() {
    let env = TestEnv::start(StubConfig {
        count: 20,
        ..StubConfig::default()
    })
    .await;
    let types = env.stub.dataset().resource_ids(Resource::Type).len();
    assert!(types > 0);
    // One type fails once: its job goes through a wait queue and back by its own key.
    let flaky = env.stub.dataset().resource_ids(Resource::Type)[0];
    env.stub.set_resource_fault(
        Resource::Type,
        flaky,
        Some(FaultRule::times(FaultKind::ServerError(503), 1)),
    );
    let summary = env.run_producer(&["--resources", "pokemon,type"]).await;
    assert_eq!(summary.published, 20 + types as u64, "{summary}");
    let consumer = env.spawn_consumer(&["--api-retries", "0", "--retry-delays", "100ms"]);
    assert!(
        wait_until(SETTLE, || async {
            count(&env, "pokemon", "done").await == 20
                && count(&env, "type", "done").await == types as i64
        })
        .await,
        "{:?}",
        counts(&env).await
    );
    let stored: i64 = env
        .client()
        .await
        .query_one("select count(*) from types", &[])
        .await
        .expect("types")
        .get(0);
    assert_eq!(stored, types as i64);
    let attempts: i32 = env
        .client()
        .await
        .query_one(
            "select attempts from ingest_items where resource = 'type' and id = $1",
            &[&flaky],
        )
        .await
        .expect("the flaky type's item")
        .get(0);
    assert_eq!(
        attempts, 2,
        "type {flaky}: retried once through the wait queue"
    );
    consumer.stop().await.expect("clean stop");
    assert_eq!(
        counts(&env).await.len(),
        2,
        "no resource but those listed: {:?}",
        counts(&env).await
    );
    assert_eq!(
        env.stub
            .resource_total_detail_requests(Resource::PokemonSpecies),
        0
    );
}

#[test]
fn a_job_names_its_resource() {
    let job = Job::of("type", 3, "fire");
    assert_eq!(
        std::str::from_utf8(&job.encode()).unwrap(),
        r#"{"v":1,"resource":"type","id":3,"name":"fire"}"#
    );
}

/// Pokemon stored by a run that did not follow links are crawled by `--follow --refresh`: the
/// refreshed documents come back whole (no conditional request, whose 304 would leave no links
/// to follow), and every document they link to is reached.
#[tokio::test]
async fn a_refresh_that_follows_links_crawls_from_pokemon_already_stored() {
    let env = TestEnv::start(StubConfig {
        count: 20,
        ..StubConfig::default()
    })
    .await;
    let expected = reachable(env.stub.dataset());
    let total: usize = expected.values().map(BTreeSet::len).sum();
    env.run_producer(&[]).await;
    let consumer = env.spawn_consumer(&[]);
    assert!(
        wait_until(SETTLE, || async {
            count(&env, "pokemon", "done").await == 20
        })
        .await,
        "{:?}",
        counts(&env).await
    );

    let summary = env.run_producer(&["--follow", "--refresh"]).await;
    assert_eq!(summary.published, 20, "{summary}");
    wait_crawled(&env, total).await;
    for (resource, ids) in &expected {
        assert_eq!(
            count(&env, resource, "done").await,
            ids.len() as i64,
            "{resource}"
        );
    }
    let pokemon = env.stub.dataset().ids()[0];
    assert_eq!(
        env.stub
            .resource_detail_requests(Resource::Pokemon, pokemon),
        2,
        "each pokemon asked once per run"
    );
    consumer.stop().await.expect("clean stop");
}
