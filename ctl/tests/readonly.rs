//! The commands that read (`status`, `workers`, `topology`, `dead list`, `dead show`) and the
//! dead-letter commands create nothing: a mistyped database or prefix is reported (exit 1, naming
//! what is missing), never turned into an empty database or queues that read as "all quiet".
//! Only `migrate`, the producer and the consumer create.

mod support;

use pokeq_shared::store::latest_schema_version;
use support::TestEnv;
use support::pipeline::{database_exists, declared, maintenance, pokeq, pokeq_as};

fn error_text(outcome: &support::Outcome) -> String {
    match &outcome.result {
        Ok(()) => String::new(),
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test]
async fn commands_with_a_mistyped_database_create_nothing_and_name_it() {
    let env = TestEnv::start().await;
    env.publish_dead_job(5, "charmeleon", "not_found").await;
    // Dropped with the test's database, whose name it begins with.
    let typo = format!("{}_typo", env.db_name);
    let typo_url = env.database_url.replace(&env.db_name, &typo);
    let as_typo = |extra: &'static [&'static str]| {
        pokeq_as(&env.amqp_url, &typo_url, &env.prefix, extra, None)
    };

    for command in [
        &["status"][..],
        &["status", "--json"],
        &["workers"],
        &["dead", "show", "5"],
        &["dead", "replay", "--id", "5"],
        &["dead", "purge", "--kind", "not_found", "--yes"],
    ] {
        let outcome = as_typo(command).await;
        let error = error_text(&outcome);
        assert_eq!(outcome.code(), 1, "{command:?}: {error}\n{}", outcome.out);
        assert!(
            error.contains(&format!("database {typo} does not exist"))
                && error.contains("pokeq migrate"),
            "{command:?}: {error}"
        );
        assert!(!database_exists(&typo).await, "{command:?} created {typo}");
    }
    // `dead list` never needs the database: it lists, and creates nothing either.
    let list = as_typo(&["dead", "list"]).await;
    assert_eq!(list.code(), 0, "{}", error_text(&list));
    assert!(list.out.contains("charmeleon"), "{}", list.out);
    assert!(!database_exists(&typo).await);
    // The letter was neither replayed nor purged.
    assert_eq!(env.ready(&env.topology().dead()).await, 1);

    // `migrate` is the command that creates.
    let migrate = as_typo(&["migrate"]).await;
    assert_eq!(migrate.code(), 0, "{}", error_text(&migrate));
    assert!(database_exists(&typo).await);
}

#[tokio::test]
async fn commands_with_a_mistyped_prefix_declare_nothing() {
    let env = TestEnv::start().await;
    let typo = format!("{}-typo", env.prefix);
    let as_typo = |extra: &'static [&'static str]| {
        pokeq_as(&env.amqp_url, &env.database_url, &typo, extra, None)
    };

    for command in [
        &["dead", "list"][..],
        &["dead", "show", "5"],
        &["dead", "replay", "--all"],
        &["dead", "purge", "--kind", "not_found", "--yes"],
        &["workers"],
    ] {
        let outcome = as_typo(command).await;
        let error = error_text(&outcome);
        assert_eq!(outcome.code(), 1, "{command:?}: {error}\n{}", outcome.out);
        assert!(
            error.contains(&format!("queue {typo}.")) && error.contains("does not exist"),
            "{command:?}: {error}"
        );
    }
    let topology = as_typo(&["topology"]).await;
    assert_eq!(topology.code(), 1);
    assert!(
        error_text(&topology).contains(&format!("nothing is declared under prefix {typo}")),
        "{}",
        error_text(&topology)
    );
    // `status` shows the queues as not declared, fails, and declares none either.
    let status = as_typo(&["status"]).await;
    assert!(status.out.contains("not declared"), "{}", status.out);
    assert_eq!(status.code(), 1);
    assert!(
        error_text(&status).contains(&format!("queue {typo}.jobs does not exist")),
        "{}",
        error_text(&status)
    );

    let (queues, exchanges) = declared(&typo).await;
    assert!(
        queues.is_empty() && exchanges.is_empty(),
        "{queues:?} {exchanges:?}"
    );
}

#[tokio::test]
async fn a_database_without_this_builds_schema_is_reported_not_migrated() {
    let env = TestEnv::start().await;
    let latest = latest_schema_version();
    env.client()
        .await
        .execute(
            "delete from pokeq_schema_migrations where version = $1",
            &[&latest],
        )
        .await
        .expect("pretend an older build set the database up");
    let status = pokeq(&env, &["status"], None).await;
    assert_eq!(status.code(), 1);
    let error = error_text(&status);
    assert!(
        error.contains(&format!(
            "database {} is at schema version {}, older than this build's {latest}",
            env.db_name,
            latest - 1
        )),
        "{error}"
    );
    assert_eq!(
        env.store.schema_version().await.expect("version"),
        latest - 1
    );

    // A database that exists but was never set up by pokeq (dropped with the test's database,
    // whose name it begins with).
    let empty = format!("{}_empty", env.db_name);
    maintenance()
        .await
        .batch_execute(&format!("create database \"{empty}\""))
        .await
        .expect("create an empty database");
    let empty_url = env.database_url.replace(&env.db_name, &empty);
    let status = pokeq_as(&env.amqp_url, &empty_url, &env.prefix, &["status"], None).await;
    assert_eq!(status.code(), 1);
    assert!(
        error_text(&status).contains(&format!("database {empty} has no pokeq schema")),
        "{}",
        error_text(&status)
    );
}
