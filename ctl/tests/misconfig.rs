//! The built `pokeq` binary exits 2 within seconds, naming the setting and hiding the password,
//! when RabbitMQ, its management API or Postgres refuses a setting, as the producer and the
//! consumer do (see `consumer/tests/misconfig.rs`), instead of retrying it like an outage.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use pokeq_shared::testkit::refusing::{LimitedRole, PasswordPostgres};
use support::TestEnv;

/// A refusal must end `pokeq` well within this.
const FAST: Duration = Duration::from_secs(10);

/// How one `pokeq` run ended.
struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Ended {
    /// Exit 2 within [`FAST`], stderr naming `setting` and saying `says`, and no `secret`
    /// anywhere.
    fn assert_refused(&self, what: &str, setting: &str, says: &str, secret: Option<&str>) {
        let shown = format!("{}\n{}", self.stdout, self.stderr);
        assert_eq!(self.code, Some(2), "pokeq with {what} exits 2:\n{shown}");
        assert!(
            self.took < FAST,
            "pokeq with {what} took {:?}:\n{shown}",
            self.took
        );
        assert!(
            self.stderr.contains(setting) && self.stderr.contains(says),
            "pokeq with {what} names {setting} and says {says}:\n{shown}"
        );
        if let Some(secret) = secret {
            assert!(
                !shown.contains(secret),
                "pokeq with {what} shows the password:\n{shown}"
            );
        }
    }
}

/// Runs `pokeq <command>` with this test's prefix and the given services.
async fn pokeq(
    env: &TestEnv,
    amqp_url: &str,
    database_url: &str,
    management_url: &str,
    command: &[&str],
) -> Ended {
    let started = Instant::now();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_pokeq"))
        .args(["--prefix", &env.prefix])
        .args(command)
        .env_clear()
        .env("AMQP_URL", amqp_url)
        .env("DATABASE_URL", database_url)
        .env("MANAGEMENT_URL", management_url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(FAST * 6, run)
        .await
        .expect("pokeq ends")
        .expect("pokeq runs");
    Ended {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    }
}

fn tag() -> String {
    format!("{:012x}", rand::random::<u64>() >> 16)
}

/// `url` with `edit` applied.
fn edited(url: &str, edit: impl FnOnce(&mut url::Url)) -> String {
    let mut url = url::Url::parse(url).expect("URL");
    edit(&mut url);
    url.to_string()
}

#[tokio::test]
async fn dead_commands_exit_2_when_the_broker_refuses_a_setting() {
    let env = TestEnv::start().await;
    let (db, mgmt) = (&env.database_url, &env.management_url);
    let password = format!("Wr0ng-{}", tag());
    let wrong_password = edited(&env.amqp_url, |url| {
        url.set_password(Some(&password)).expect("password");
    });
    let vhost = format!("pokeq-no-such-vhost-{}", tag());
    let missing_vhost = edited(&env.amqp_url, |url| url.set_path(&vhost));

    pokeq(&env, &wrong_password, db, mgmt, &["dead", "list"])
        .await
        .assert_refused(
            "a wrong RabbitMQ password",
            "AMQP_URL",
            "ACCESS_REFUSED",
            Some(&password),
        );
    pokeq(&env, &missing_vhost, db, mgmt, &["dead", "list"])
        .await
        .assert_refused("a missing vhost", "AMQP_URL", "NOT_ALLOWED", None);
    // The test's topology has a quorum jobs queue. `pokeq` declares nothing (only the producer
    // and the consumers do, and they exit 2 on this clash), so the other queue type is no clash
    // for it: the dead queue is read as it is.
    let other_type = pokeq(
        &env,
        &env.amqp_url,
        db,
        mgmt,
        &["--queue-type", "classic", "dead", "list"],
    )
    .await;
    assert_eq!(other_type.code, Some(0), "{}", other_type.stderr);
}

#[tokio::test]
async fn migrate_exits_2_when_postgres_refuses_a_right() {
    let env = TestEnv::start().await;
    let password = format!("PgS3cr3t-{}", tag());
    let role = LimitedRole::create(&password);
    let missing = format!("pokeq_never_created_{}", tag());
    for (what, database_url) in [
        ("no right to create the database", role.url(&missing)),
        ("no right to create tables", role.url(&role.empty_database)),
    ] {
        pokeq(
            &env,
            &env.amqp_url,
            &database_url,
            &env.management_url,
            &["migrate"],
        )
        .await
        .assert_refused(what, "DATABASE_URL", "42501", Some(&password));
    }
    drop(role);
}

#[tokio::test]
async fn migrate_exits_2_for_a_wrong_database_password() {
    let env = TestEnv::start().await;
    let right = format!("R1ght-{}", tag());
    let cluster = {
        let right = right.clone();
        tokio::task::spawn_blocking(move || PasswordPostgres::start(&right))
            .await
            .expect("private Postgres starts")
    };
    let accepted = pokeq(
        &env,
        &env.amqp_url,
        &cluster.url("postgres", &right, "pokeq"),
        &env.management_url,
        &["migrate"],
    )
    .await;
    assert_eq!(accepted.code, Some(0), "{}", accepted.stderr);

    let wrong = format!("Wr0ngPg-{}", tag());
    pokeq(
        &env,
        &env.amqp_url,
        &cluster.url("postgres", &wrong, "pokeq"),
        &env.management_url,
        &["migrate"],
    )
    .await
    .assert_refused(
        "a wrong Postgres password",
        "DATABASE_URL",
        "28P01",
        Some(&wrong),
    );
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .expect("private Postgres stops");
}

/// Each applied migration's checksum, by version.
async fn checksums(env: &TestEnv) -> Vec<(i32, Option<String>)> {
    env.client()
        .await
        .query(
            "select version, checksum from pokeq_schema_migrations order by version",
            &[],
        )
        .await
        .expect("migrations table")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test]
async fn migrate_exits_2_when_an_applied_migration_was_edited() {
    let env = TestEnv::start().await;
    let (amqp, db, mgmt) = (&env.amqp_url, &env.database_url, &env.management_url);
    let recorded = checksums(&env).await;
    let latest = pokeq_shared::store::latest_schema_version();
    assert_eq!(recorded.len(), usize::try_from(latest).expect("version"));
    for (version, checksum) in &recorded {
        assert!(
            checksum.as_ref().is_some_and(|c| c.len() == 64),
            "migration {version} has a SHA-256 recorded: {recorded:?}"
        );
    }

    // A database migrated by a build from before the checksums: they are filled in at start.
    env.client()
        .await
        .batch_execute("alter table pokeq_schema_migrations drop column checksum")
        .await
        .expect("drop the checksum column");
    let upgraded = pokeq(&env, amqp, db, mgmt, &["migrate"]).await;
    assert_eq!(upgraded.code, Some(0), "{}", upgraded.stderr);
    assert_eq!(checksums(&env).await, recorded);
    let again = pokeq(&env, amqp, db, mgmt, &["migrate"]).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);

    // Migration 3 as applied is not what this build carries.
    env.client()
        .await
        .execute(
            "update pokeq_schema_migrations set checksum = 'edited' where version = 3",
            &[],
        )
        .await
        .expect("tamper with a checksum");
    pokeq(&env, amqp, db, mgmt, &["migrate"])
        .await
        .assert_refused(
            "an edited migration",
            "DATABASE_URL",
            "migration 3 (api_rate) was applied to this database from other SQL",
            None,
        );
}

#[tokio::test]
async fn status_prints_what_it_can_then_exits_2_for_a_refused_setting() {
    let env = TestEnv::start().await;
    let password = format!("Wr0ngMgmt-{}", tag());
    let wrong_management = edited(&env.management_url, |url| {
        url.set_password(Some(&password)).expect("password");
    });
    let ended = pokeq(
        &env,
        &env.amqp_url,
        &env.database_url,
        &wrong_management,
        &["status"],
    )
    .await;
    ended.assert_refused(
        "a wrong management password",
        "MANAGEMENT_URL",
        "HTTP 401",
        Some(&password),
    );
    assert!(
        ended.stdout.contains("pending"),
        "the item counts are still printed:\n{}",
        ended.stdout
    );

    let unknown_user = edited(&env.database_url, |url| {
        url.set_username(&format!("pokeq_nobody_{}", tag()))
            .expect("user");
        url.set_password(Some(&password)).expect("password");
    });
    pokeq(
        &env,
        &env.amqp_url,
        &unknown_user,
        &env.management_url,
        &["status", "--watch", "--interval", "1s"],
    )
    .await
    .assert_refused(
        "an unknown database user, watching",
        "DATABASE_URL",
        "Postgres refused the login",
        Some(&password),
    );
}
