//! `pokeq item`: one item's whole story, against the real RabbitMQ and Postgres of this machine.

mod support;

use clap::Parser;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use pokeq_ctl::{Cli, Console};
use pokeq_shared::shutdown::CancellationToken;
use serde_json::{Value, json};
use support::{Outcome, TestEnv};

/// Item 25 stored by a consumer after a conditional fetch: done, with its row and validators.
async fn seed_pikachu(env: &TestEnv) {
    env.client()
        .await
        .batch_execute(
            r#"insert into ingest_items (resource, id, name, status, attempts, queued_at,
                                         updated_at, etag, last_modified)
               values ('pokemon', 25, 'pikachu', 'done', 1, now() - interval '1 minute',
                       now() - interval '50 seconds', '"v1-25"',
                       'Tue, 01 Dec 2026 10:00:00 GMT');
               insert into pokemon (id, name, height_m, weight_kg, base_experience, types,
                                    abilities, stats, species, is_default, sort_order)
               values (25, 'pikachu', 0.4, 6.0, 112, '{electric}',
                       '{static,lightning-rod}', '[{"name": "hp", "base": 35}]', 'pikachu',
                       true, 35);"#,
        )
        .await
        .expect("seeded");
}

/// Whether the broker has `queue`, asked passively (a missing queue is not created).
async fn queue_exists(env: &TestEnv, queue: &str) -> bool {
    let channel = env.connection.create_channel().await.expect("channel");
    let declared = channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    if declared.is_ok() {
        let _ = channel.close(200, ShortString::from("ok")).await;
    }
    declared.is_ok()
}

#[tokio::test]
async fn item_shows_a_done_item_with_its_stored_row_and_validators() {
    let env = TestEnv::start().await;
    seed_pikachu(&env).await;

    let outcome = env.pokeq(&["item", "25", "--json"], None).await;
    assert_eq!(outcome.code(), 0, "{:?}\n{}", outcome.result, outcome.out);
    let item = outcome.json();
    assert_eq!(item["id"], 25);
    assert_eq!(item["name"], "pikachu");
    assert_eq!(item["status"], "done");
    assert_eq!(item["attempts"], 1);
    assert!(item["last_error"].is_null() && item["error_kind"].is_null());
    assert_eq!(item["etag"], "\"v1-25\"");
    assert_eq!(item["last_modified"], "Tue, 01 Dec 2026 10:00:00 GMT");
    assert!(
        item["queued_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );
    assert!(item["updated_seconds_ago"].as_u64() >= Some(50), "{item:#}");
    let row = &item["pokemon"];
    assert_eq!(row["name"], "pikachu");
    assert_eq!(row["height_m"], 0.4);
    assert_eq!(row["types"], json!(["electric"]));
    assert_eq!(row["stats"], json!([{"name": "hp", "base": 35}]));
    assert_eq!(item["dead_letters"], json!([]));

    // By name, whatever the case.
    let by_name = env
        .pokeq(&["item", "--name", "Pikachu", "--json"], None)
        .await;
    assert_eq!(by_name.code(), 0, "{:?}", by_name.result);
    assert_eq!(by_name.json()["id"], 25);

    let text = env.pokeq(&["item", "25"], None).await;
    assert_eq!(text.code(), 0, "{:?}", text.result);
    assert!(
        text.out.starts_with("pokemon 25 pikachu: done\n"),
        "{}",
        text.out
    );
    for expected in [
        "  etag           \"v1-25\"\n",
        "  abilities        static, lightning-rod\n",
        "  height_m         0.4\n",
    ] {
        assert!(text.out.contains(expected), "{expected:?} in\n{}", text.out);
    }
    assert!(
        text.out.ends_with(&format!(
            "Dead letters in {}\n  none\n",
            env.topology().dead()
        )),
        "{}",
        text.out
    );
}

#[tokio::test]
async fn item_shows_a_failed_item_and_its_dead_letter_and_leaves_the_letter_queued() {
    let env = TestEnv::start().await;
    let dead = env.topology().dead();
    env.seed_items(&[
        (7, "failed", Some("not_found"), Some("404 from the API")),
        (8, "failed", Some("exhausted"), Some("503")),
    ])
    .await;
    env.publish_dead_job(8, "mon8", "exhausted").await;
    env.publish_dead_job(7, "mon7", "not_found").await;

    let outcome = env.pokeq(&["item", "7", "--json"], None).await;
    assert_eq!(outcome.code(), 0, "{:?}\n{}", outcome.result, outcome.out);
    let item = outcome.json();
    assert_eq!(item["status"], "failed");
    assert_eq!(item["error_kind"], "not_found");
    assert_eq!(item["last_error"], "404 from the API");
    assert!(item["pokemon"].is_null(), "nothing stored: {item:#}");
    let letters = item["dead_letters"].as_array().expect("letters");
    assert_eq!(letters.len(), 1, "{item:#}");
    assert_eq!(letters[0]["id"], 7);
    assert_eq!(letters[0]["kind"], "not_found");
    assert_eq!(letters[0]["error"], "not_found for mon7");
    assert_eq!(letters[0]["attempts"], 2);

    let text = env.pokeq(&["item", "7"], None).await;
    assert!(
        text.out.contains("\nStored row (pokemon)\n  none\n"),
        "{}",
        text.out
    );
    assert!(text.out.contains("  not_found         2"), "{}", text.out);

    // Read, not taken: both letters are still there, in their order.
    let left: Vec<Option<i32>> = env.drain(&dead).await.iter().map(|m| m.id()).collect();
    assert_eq!(left, [Some(8), Some(7)]);
}

#[tokio::test]
async fn item_that_does_not_exist_exits_1_and_says_so() {
    let env = TestEnv::start().await;
    seed_pikachu(&env).await;

    let missing = env.pokeq(&["item", "999"], None).await;
    assert_eq!(missing.code(), 1);
    let error = format!("{:#}", missing.result.expect_err("no such item"));
    assert!(
        error.starts_with(&format!(
            "no item pokemon 999 in the database {}",
            env.db_name
        )),
        "{error}"
    );
    assert!(missing.out.is_empty(), "{}", missing.out);

    let unnamed = env.pokeq(&["item", "--name", "missingno"], None).await;
    assert_eq!(unnamed.code(), 1);
    let error = format!("{:#}", unnamed.result.expect_err("no such name"));
    assert!(
        error.contains("no item pokemon named \"missingno\""),
        "{error}"
    );

    // Neither an id nor a name is bad usage (exit 2), refused before anything runs.
    let usage = Cli::try_parse_from(env.args(&["item"])).expect_err("usage");
    assert_eq!(usage.exit_code(), 2);
    let both = Cli::try_parse_from(env.args(&["item", "25", "--name", "pikachu"]));
    assert_eq!(both.expect_err("one or the other").exit_code(), 2);
}

#[tokio::test]
async fn item_without_a_dead_queue_says_so_and_declares_nothing() {
    let env = TestEnv::start().await;
    seed_pikachu(&env).await;
    let prefix = format!("{}-typo", env.prefix);
    let args: Vec<String> = [
        "pokeq",
        "--amqp-url",
        &env.amqp_url,
        "--database-url",
        &env.database_url,
        "--prefix",
        &prefix,
        "item",
        "25",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let config = Cli::try_parse_from(args)
        .expect("flags")
        .validate()
        .expect("config");
    let mut out = Vec::new();
    let console = Console {
        out: &mut out,
        input: None,
        terminal: false,
    };
    let result = pokeq_ctl::run_with(config, CancellationToken::new(), console).await;
    let outcome = Outcome {
        out: String::from_utf8(out).expect("UTF-8"),
        result,
    };
    assert_eq!(outcome.code(), 1);
    let item: Value = outcome.json();
    assert_eq!(item["status"], "done", "the item is still shown");
    assert!(item["dead_letters"].is_null());
    let expected = format!("the dead queue {prefix}.dead is not declared");
    assert!(
        item["dead_letters_error"]
            .as_str()
            .is_some_and(|e| e.starts_with(&expected)),
        "{item:#}"
    );
    assert!(!queue_exists(&env, &format!("{prefix}.dead")).await);
}
