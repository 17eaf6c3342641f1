//! `pokeq status`, `pokeq dead ...` and `pokeq item` over the Pokédex resources (issue #14),
//! against the real RabbitMQ and Postgres of this machine: items and dead letters of several
//! resources side by side.

mod support;

use clap::Parser;
use lapin::options::QueueBindOptions;
use lapin::types::{FieldTable, ShortString};
use pokeq_ctl::Cli;
use serde_json::{Value, json};
use support::TestEnv;

/// Inserts `ingest_items` rows: (resource, id, status, error_kind).
async fn seed(env: &TestEnv, items: &[(&str, i32, &str, Option<&str>)]) {
    let client = env.store.pool().get().await.expect("client");
    for (resource, id, status, kind) in items {
        client
            .execute(
                "insert into ingest_items (resource, id, name, status, attempts, error_kind)
                 values ($1, $2, $3, $4, 1, $5)",
                &[resource, id, &format!("{resource}{id}"), status, kind],
            )
            .await
            .expect("seed item");
    }
}

/// (status, attempts) of an item.
async fn item_state(env: &TestEnv, resource: &str, id: i32) -> (String, i32) {
    let client = env.store.pool().get().await.expect("client");
    let row = client
        .query_one(
            "select status, attempts from ingest_items where resource = $1 and id = $2",
            &[&resource, &id],
        )
        .await
        .expect("item row");
    (row.get(0), row.get(1))
}

/// Publishes a dead letter of a job of `resource`, as the consumer dead-letters one.
async fn dead_job(env: &TestEnv, resource: &str, id: i32, kind: &str) {
    let body = json!({"v": 1, "resource": resource, "id": id, "name": format!("{resource}{id}")});
    env.publish_dead(
        body.to_string().as_bytes(),
        kind,
        &format!("{kind} for {resource} {id}"),
        2,
    )
    .await;
}

/// Routes jobs of every resource to the jobs queue, as the topology does once jobs of every
/// resource run (their routing key is their resource).
async fn bind_every_resource(env: &TestEnv) {
    let jobs = env.topology().jobs();
    for resource in pokeq_shared::resources::names() {
        env.channel
            .queue_bind(
                ShortString::from(jobs.as_str()),
                ShortString::from(jobs.as_str()),
                ShortString::from(resource),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
    }
}

fn resource_row<'a>(items: &'a Value, resource: &str) -> &'a Value {
    items["resources"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["resource"] == resource))
        .unwrap_or_else(|| panic!("no {resource} in {items}"))
}

#[tokio::test]
async fn status_counts_each_resource_and_the_total_over_all() {
    let env = TestEnv::start().await;
    seed(
        &env,
        &[
            ("pokemon", 1, "done", None),
            ("pokemon", 2, "pending", None),
            ("pokemon-species", 1, "done", None),
            ("pokemon-species", 2, "failed", Some("not_found")),
            ("type", 1, "queued", None),
            ("type", 2, "queued", None),
            ("move", 1, "failed", Some("exhausted")),
        ],
    )
    .await;

    let outcome = env.pokeq(&["status", "--json"], None).await;
    let report = outcome.json();
    let items = &report["items"];
    assert_eq!(items["total"], 7, "{items}");
    assert_eq!(items["pending"], 1);
    assert_eq!(items["queued"], 2);
    assert_eq!(items["done"], 2);
    assert_eq!(items["failed"], 2);
    assert_eq!(
        items["failed_by_kind"],
        json!({"exhausted": 1, "not_found": 1})
    );
    let order: Vec<&str> = items["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["resource"].as_str())
        .collect();
    assert_eq!(order, ["pokemon", "pokemon-species", "type", "move"]);
    let species = resource_row(items, "pokemon-species");
    assert_eq!(
        (
            &species["done"],
            &species["failed"],
            &species["total"],
            &species["failed_by_kind"]
        ),
        (&json!(1), &json!(1), &json!(2), &json!({"not_found": 1}))
    );
    assert_eq!(resource_row(items, "type")["queued"], 2);
    assert_eq!(
        species.as_object().map(|o| o.len()),
        Some(7),
        "resource, the four counts, total, failed_by_kind: {species}"
    );
    assert_eq!(resource_row(items, "pokemon")["pending"], 1);

    let text = env.pokeq(&["status"], None).await;
    let table: Vec<Vec<&str>> = text
        .out
        .split("Items by resource\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no table by resource:\n{}", text.out))
        .lines()
        .take_while(|line| !line.is_empty())
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        table,
        [
            vec!["RESOURCE", "PENDING", "QUEUED", "DONE", "FAILED", "TOTAL"],
            vec!["pokemon", "1", "0", "1", "0", "2"],
            vec!["pokemon-species", "0", "0", "1", "1", "2"],
            vec!["type", "0", "2", "0", "0", "2"],
            vec!["move", "0", "0", "0", "1", "1"],
            vec!["total", "1", "2", "2", "2", "7"],
        ]
    );
}

#[tokio::test]
async fn status_wait_waits_for_items_of_every_resource() {
    let env = TestEnv::start().await;
    seed(
        &env,
        &[("pokemon", 1, "done", None), ("ability", 1, "queued", None)],
    )
    .await;
    let waiting = env
        .pokeq(&["status", "--wait", "--timeout", "1s"], None)
        .await;
    assert_eq!(
        waiting.code(),
        2,
        "a queued ability keeps the run going: {:?}",
        waiting.result
    );
}

#[tokio::test]
async fn dead_commands_filter_by_the_letters_resource() {
    let env = TestEnv::start().await;
    bind_every_resource(&env).await;
    let (jobs, dead) = (env.topology().jobs(), env.topology().dead());
    seed(
        &env,
        &[
            ("pokemon", 133, "failed", Some("not_found")),
            ("pokemon-species", 133, "failed", Some("not_found")),
            ("type", 10001, "failed", Some("not_found")),
            ("move", 5, "failed", Some("exhausted")),
        ],
    )
    .await;
    dead_job(&env, "pokemon", 133, "not_found").await;
    dead_job(&env, "pokemon-species", 133, "not_found").await;
    dead_job(&env, "type", 10001, "not_found").await;
    dead_job(&env, "move", 5, "exhausted").await;
    env.publish_dead(b"not a job", "invalid_message", "body is not a job", 0)
        .await;

    let list = env
        .pokeq(
            &["dead", "list", "--resource", "pokemon-species", "--json"],
            None,
        )
        .await;
    assert_eq!(list.code(), 0, "{:?}", list.result);
    let listed = list.json();
    assert_eq!(listed["resource"], "pokemon-species");
    let letters: Vec<(Value, Value)> = listed["letters"]
        .as_array()
        .expect("letters")
        .iter()
        .map(|l| (l["resource"].clone(), l["id"].clone()))
        .collect();
    assert_eq!(letters, [(json!("pokemon-species"), json!(133))]);
    let text = env.pokeq(&["dead", "list"], None).await;
    let first_columns: Vec<(&str, &str)> = text
        .out
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut columns = line.split_whitespace();
            Some((columns.next()?, columns.next()?))
        })
        .collect();
    assert_eq!(
        &first_columns[..5],
        [
            ("pokemon", "133"),
            ("pokemon-species", "133"),
            ("type", "10001"),
            ("move", "5"),
            ("-", "-"),
        ],
        "every letter's resource is a column:\n{}",
        text.out
    );
    assert_eq!(text.last_line(), format!("5 shown, 5 in {dead}"));

    // Ids are per resource: pokemon 133 and species 133 are different letters.
    let show = env
        .pokeq(
            &[
                "dead",
                "show",
                "133",
                "--resource",
                "pokemon-species",
                "--json",
            ],
            None,
        )
        .await;
    assert_eq!(show.code(), 0, "{:?}", show.result);
    let shown = show.json();
    assert_eq!(shown["letters"].as_array().map(Vec::len), Some(1));
    assert_eq!(shown["letters"][0]["resource"], "pokemon-species");
    assert_eq!(shown["item"]["status"], "failed");
    let show_pokemon = env.pokeq(&["dead", "show", "133", "--json"], None).await;
    assert_eq!(show_pokemon.json()["letters"][0]["resource"], "pokemon");
    let none = env
        .pokeq(&["dead", "show", "133", "--resource", "move"], None)
        .await;
    assert_eq!(none.code(), 1);
    assert!(
        none.out.contains("No dead letter for move 133"),
        "{}",
        none.out
    );

    // Replay: the type letter goes back as a type job, its item queued; the rest stay.
    let replay = env
        .pokeq(&["dead", "replay", "--resource", "type"], None)
        .await;
    assert_eq!(replay.code(), 0, "{:?}", replay.result);
    assert_eq!(replay.last_line(), "replayed=1 kept=4");
    let replayed = env.drain(&jobs).await;
    assert_eq!(replayed.len(), 1);
    let body: Value = serde_json::from_slice(&replayed[0].body).expect("a job");
    assert_eq!(
        (&body["resource"], &body["id"]),
        (&json!("type"), &json!(10001))
    );
    assert_eq!(item_state(&env, "type", 10001).await, ("queued".into(), 0));
    assert_eq!(
        item_state(&env, "pokemon-species", 133).await.0,
        "failed",
        "a letter of another resource with the same id is untouched"
    );
    assert_eq!(env.ready(&dead).await, 4);

    // Purge: only the species letter of that kind; the pokemon one of the same kind stays.
    let purge = env
        .pokeq(
            &[
                "dead",
                "purge",
                "--kind",
                "not_found",
                "--resource",
                "pokemon-species",
                "--yes",
            ],
            None,
        )
        .await;
    assert_eq!(purge.code(), 0, "{:?}", purge.result);
    assert_eq!(purge.last_line(), "purged=1");
    assert_eq!(env.ready(&dead).await, 3);
    let left = env.pokeq(&["dead", "list", "--json"], None).await.json();
    let mut resources: Vec<String> = left["letters"]
        .as_array()
        .expect("letters")
        .iter()
        .map(|l| l["resource"].as_str().unwrap_or("-").to_owned())
        .collect();
    resources.sort();
    assert_eq!(resources, ["-", "move", "pokemon"]);
    let client = env.store.pool().get().await.expect("client");
    let purged: Option<String> = client
        .query_one(
            "select last_error from ingest_items where resource = 'pokemon-species' and id = 133",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    assert!(
        purged.as_deref().is_some_and(|e| e.starts_with("purged")),
        "{purged:?}"
    );
}

#[tokio::test]
async fn an_unknown_resource_is_refused_naming_the_flag() {
    let env = TestEnv::start().await;
    for command in [
        &["dead", "list", "--resource", "berry"][..],
        &["dead", "show", "1", "--resource", "berry"],
        &["dead", "replay", "--resource", "berry"],
        &[
            "dead",
            "purge",
            "--kind",
            "not_found",
            "--resource",
            "berry",
        ],
        &["item", "1", "--resource", "berry"],
    ] {
        let error = Cli::try_parse_from(env.args(command)).unwrap_err();
        assert_eq!(error.exit_code(), 2, "{command:?}");
        let message = error.to_string();
        assert!(
            message.contains("--resource") && message.contains("pokemon-species"),
            "{command:?}: {message}"
        );
    }
}

#[tokio::test]
async fn item_looks_ids_up_within_the_resource() {
    let env = TestEnv::start().await;
    seed(
        &env,
        &[
            ("pokemon", 7, "done", None),
            ("ability", 7, "failed", Some("not_found")),
        ],
    )
    .await;
    dead_job(&env, "ability", 7, "not_found").await;
    dead_job(&env, "pokemon", 7, "exhausted").await;

    let ability = env
        .pokeq(&["item", "7", "--resource", "ability", "--json"], None)
        .await;
    assert_eq!(ability.code(), 0, "{:?}", ability.result);
    let report = ability.json();
    assert_eq!(
        (&report["resource"], &report["status"], &report["name"]),
        (&json!("ability"), &json!("failed"), &json!("ability7"))
    );
    let kinds: Vec<&Value> = report["dead_letters"]
        .as_array()
        .expect("letters")
        .iter()
        .map(|l| &l["kind"])
        .collect();
    assert_eq!(kinds, [&json!("not_found")]);

    let by_name = env
        .pokeq(
            &["item", "--name", "ability7", "--resource", "ability"],
            None,
        )
        .await;
    assert!(
        by_name.out.starts_with("ability 7 ability7: failed"),
        "{}",
        by_name.out
    );
    assert!(
        by_name
            .out
            .contains("not shown here: see the table abilities"),
        "{}",
        by_name.out
    );
    let pokemon = env.pokeq(&["item", "7", "--json"], None).await.json();
    assert_eq!(pokemon["status"], "done");
    assert_eq!(pokemon["dead_letters"][0]["kind"], "exhausted");
}
