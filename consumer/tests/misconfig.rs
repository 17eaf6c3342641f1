//! A setting that RabbitMQ or Postgres refuses ends the consumer and the producer within seconds
//! with exit 2, a message naming the setting and no password, even with the default five minutes
//! of `POKEQ_PATIENCE`; a service that is only unreachable is still waited for. Each case runs the
//! real programs as processes against the machine's services (and, for a wrong database password,
//! a private Postgres cluster that asks for one, since the machine's trusts local connections).
//!
//! The consumer is its own binary. The producer's binary is not built for this crate's tests, so
//! this test binary plays it, as `secrets.rs` does: started with `POKEQ_TEST_PRODUCER_ARGS` set,
//! its `main` does exactly what the producer's `main` does (see `support/harness.rs`).

mod support;

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use pokeq_shared::store::{self, Store};
use pokeq_shared::testkit::ClosedPort;
use pokeq_shared::testkit::refusing::{LimitedRole, PasswordPostgres};
use support::{TestEnv, harness};
use tokio::process::{Child, Command};

const CONSUMER: &str = env!("CARGO_BIN_EXE_consumer");
/// A refusal must end a program well within this, start-up included.
const FAST: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    harness::main(harness::tokio_tests![
        a_wrong_broker_password_exits_2_at_once,
        a_missing_vhost_exits_2_at_once,
        a_jobs_queue_of_another_type_exits_2_at_once_and_is_left_alone,
        an_exchange_of_another_type_exits_2_at_once_naming_the_prefix,
        database_refusals_exit_2_at_once,
        a_wrong_database_password_exits_2_at_once,
        an_unreachable_broker_is_still_waited_for,
        an_unreachable_database_is_still_waited_for,
    ])
}

/// A program under test, everything it prints going to one file.
struct Program {
    name: &'static str,
    child: Child,
    log: PathBuf,
    started: Instant,
}

/// How a program ended: its exit code (`None` if it had to be killed), what it printed, and
/// how long it ran.
struct Ended {
    name: &'static str,
    code: Option<i32>,
    output: String,
    took: Duration,
}

impl Program {
    fn spawn(name: &'static str, program: &str, args: &[&str], vars: &[(&str, String)]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "pokeq-misconfig-{name}-{:016x}.log",
            rand::random::<u64>()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Program {
            name,
            child,
            log,
            started: Instant::now(),
        }
    }

    fn consumer(vars: &[(&str, String)]) -> Self {
        Self::spawn("consumer", CONSUMER, &[], vars)
    }

    /// This test binary as the producer, configured by `vars`.
    fn producer(vars: &[(&str, String)]) -> Self {
        let exe = std::env::current_exe().expect("test binary");
        let mut vars = vars.to_vec();
        vars.push((harness::PRODUCER_ARGS, String::new()));
        Self::spawn("producer", exe.to_str().expect("UTF-8 path"), &[], &vars)
    }

    /// Both programs, one after the other, each ended within `limit`.
    async fn both(vars: &[(&str, String)], limit: Duration) -> [Ended; 2] {
        [
            Self::consumer(vars).finish(limit).await,
            Self::producer(vars).finish(limit).await,
        ]
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits for the exit, killing the program after `limit`.
    async fn finish(mut self, limit: Duration) -> Ended {
        let code = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait").code(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        };
        let took = self.started.elapsed();
        let output = self.output();
        let _ = std::fs::remove_file(&self.log);
        Ended {
            name: self.name,
            code,
            output,
            took,
        }
    }
}

impl Ended {
    /// Exit 2 within [`FAST`], naming `setting` and saying `says` (the service's own word for
    /// the refusal), and never showing `secret`.
    fn assert_refused(&self, what: &str, setting: &str, says: &str, secret: Option<&str>) {
        let Ended {
            name,
            code,
            output,
            took,
        } = self;
        assert_eq!(*code, Some(2), "{name} with {what} exits 2:\n{output}");
        assert!(
            *took < FAST,
            "{name} with {what} took {took:?} to give up:\n{output}"
        );
        assert!(
            output.contains(setting) && output.contains(says),
            "{name} with {what} names {setting} and says {says}:\n{output}"
        );
        if let Some(secret) = secret {
            assert!(
                !output.contains(secret),
                "{name} with {what} shows the password:\n{output}"
            );
        }
    }
}

/// The environment of every program here: this test's services and names, with the default
/// patience (a refusal must not wait for it).
fn vars(env: &TestEnv, amqp_url: &str, database_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AMQP_URL", amqp_url.to_owned()),
        ("DATABASE_URL", database_url.to_owned()),
        ("POKEAPI_URL", env.stub.base_url()),
        ("POKEQ_PREFIX", env.prefix.clone()),
        ("POKEQ_RATE", "0".to_owned()),
        ("POKEQ_PATIENCE", "5m".to_owned()),
        ("METRICS_ADDR", "off".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
}

async fn start() -> TestEnv {
    TestEnv::start(pokeapi_stub::StubConfig {
        count: 3,
        ..pokeapi_stub::StubConfig::default()
    })
    .await
}

fn tag() -> String {
    format!("{:012x}", rand::random::<u64>() >> 16)
}

/// The test's broker URL with `edit` applied.
fn amqp_url(env: &TestEnv, edit: impl FnOnce(&mut url::Url)) -> String {
    let mut url = url::Url::parse(&env.amqp_url).expect("AMQP URL");
    edit(&mut url);
    url.to_string()
}

async fn a_wrong_broker_password_exits_2_at_once() {
    let env = start().await;
    let password = format!("Wr0ng-{}", tag());
    let url = amqp_url(&env, |url| {
        url.set_password(Some(&password)).expect("password");
    });
    for ended in Program::both(&vars(&env, &url, &env.database_url), FAST * 3).await {
        ended.assert_refused(
            "a wrong RabbitMQ password",
            "AMQP_URL",
            "ACCESS_REFUSED",
            Some(&password),
        );
        assert!(ended.output.contains(":****@"), "{}", ended.output);
    }
}

async fn a_missing_vhost_exits_2_at_once() {
    let env = start().await;
    let vhost = format!("pokeq-no-such-vhost-{}", tag());
    let url = amqp_url(&env, |url| url.set_path(&vhost));
    for ended in Program::both(&vars(&env, &url, &env.database_url), FAST * 3).await {
        ended.assert_refused("a missing vhost", "AMQP_URL", "NOT_ALLOWED", None);
        assert!(ended.output.contains(&vhost), "{}", ended.output);
    }
}

/// Declares `name` as a durable queue of `queue_type` holding one message, as another
/// deployment (or an older pokeq) might have.
async fn declare_foreign_queue(env: &TestEnv, name: &str, queue_type: &str) {
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from(queue_type)),
    );
    env.channel
        .queue_declare(
            ShortString::from(name),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await
        .expect("foreign queue declared");
    let confirm = env
        .channel
        .basic_publish(
            ShortString::from(""),
            ShortString::from(name),
            BasicPublishOptions::default(),
            b"someone else's message",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    assert!(confirm.await.expect("confirm").is_ack());
}

async fn a_jobs_queue_of_another_type_exits_2_at_once_and_is_left_alone() {
    let env = start().await;
    let jobs = env.topology().jobs();
    declare_foreign_queue(&env, &jobs, "classic").await;
    // The default POKEQ_QUEUE_TYPE is quorum.
    let vars = vars(&env, &env.amqp_url, &env.database_url);
    for ended in Program::both(&vars, FAST * 3).await {
        ended.assert_refused(
            "a classic jobs queue",
            "POKEQ_QUEUE_TYPE=quorum",
            "PRECONDITION_FAILED",
            None,
        );
        assert!(ended.output.contains(&jobs), "{}", ended.output);
    }
    assert_eq!(env.ready(&jobs).await, 1, "the queue kept its message");
}

async fn an_exchange_of_another_type_exits_2_at_once_naming_the_prefix() {
    let env = start().await;
    let dead = env.topology().dead();
    // pokeq's dead-letter exchange is a fanout.
    env.channel
        .exchange_declare(
            ShortString::from(dead.as_str()),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("foreign exchange declared");
    let vars = vars(&env, &env.amqp_url, &env.database_url);
    for ended in Program::both(&vars, FAST * 3).await {
        ended.assert_refused(
            "a direct dead-letter exchange",
            &format!("POKEQ_PREFIX={}", env.prefix),
            "PRECONDITION_FAILED",
            None,
        );
    }
}

async fn database_refusals_exit_2_at_once() {
    let env = start().await;
    let password = format!("PgS3cr3t-{}", tag());
    let role = LimitedRole::create(&password);
    let missing_database = format!("pokeq_never_created_{}", tag());
    let unknown_user = {
        let mut url = url::Url::parse(&env.database_url).expect("database URL");
        url.set_username(&format!("pokeq_nobody_{}", tag()))
            .expect("user");
        url.set_password(Some(&password)).expect("password");
        url.to_string()
    };
    for (what, database_url) in [
        (
            "no right to create the database",
            role.url(&missing_database),
        ),
        (
            "no right to create tables for the migrations",
            role.url(&role.empty_database),
        ),
        // Trust authentication refuses an unknown role with 28000, a password server with 28P01.
        ("an unknown user", unknown_user),
    ] {
        let vars = vars(&env, &env.amqp_url, &database_url);
        for ended in Program::both(&vars, FAST * 3).await {
            ended.assert_refused(what, "DATABASE_URL", "Postgres refused", Some(&password));
        }
    }
    let client = env.client().await;
    let created: i64 = client
        .query_one(
            "select count(*) from pg_database where datname = $1",
            &[&missing_database],
        )
        .await
        .expect("pg_database")
        .get(0);
    assert_eq!(created, 0, "no database was created");
    drop(client);
    drop(role);
}

async fn a_wrong_database_password_exits_2_at_once() {
    let env = start().await;
    let right = format!("R1ght-{}", tag());
    let cluster = {
        let right = right.clone();
        tokio::task::spawn_blocking(move || PasswordPostgres::start(&right))
            .await
            .expect("private Postgres starts")
    };
    // The right password gets in, so what the programs meet below is about the password.
    let accepted = cluster.url("postgres", &right, "pokeq");
    let config = store::parse_url(&accepted).expect("URL");
    Store::open(&config, &accepted, 1, None)
        .await
        .expect("the right password is accepted");

    let wrong = format!("Wr0ngPg-{}", tag());
    let refused = cluster.url("postgres", &wrong, "pokeq");
    let vars = vars(&env, &env.amqp_url, &refused);
    for ended in Program::both(&vars, FAST * 3).await {
        ended.assert_refused(
            "a wrong Postgres password",
            "DATABASE_URL",
            "28P01",
            Some(&wrong),
        );
    }
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .expect("private Postgres stops");
}

async fn an_unreachable_broker_is_still_waited_for() {
    let env = start().await;
    let port = ClosedPort::bind();
    let closed = amqp_url(&env, |url| {
        url.set_port(Some(port.port)).expect("port");
    });
    let mut vars = vars(&env, &closed, &env.database_url);
    let patience = Duration::from_secs(3);
    vars.retain(|(k, _)| *k != "POKEQ_PATIENCE");
    vars.push(("POKEQ_PATIENCE", "3s".to_owned()));

    let consumer = Program::consumer(&vars).finish(FAST * 3).await;
    assert_eq!(consumer.code, Some(1), "{}", consumer.output);
    assert!(
        consumer.took >= patience,
        "gave up after {:?}, before its patience of {patience:?}:\n{}",
        consumer.took,
        consumer.output
    );
    assert!(
        consumer.output.contains("RabbitMQ unreachable for over"),
        "{}",
        consumer.output
    );

    // The producer waits about a minute for a broker that is still starting: still trying
    // after a few seconds is all this checks.
    let producer = Program::producer(&vars);
    let deadline = Instant::now() + FAST;
    while !producer.output().contains("RabbitMQ not reachable yet") {
        assert!(
            Instant::now() < deadline,
            "the producer did not retry:\n{}",
            producer.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer = producer.finish(patience).await;
    assert_eq!(
        producer.code, None,
        "the producer was still waiting:\n{}",
        producer.output
    );
}

async fn an_unreachable_database_is_still_waited_for() {
    let env = start().await;
    let port = ClosedPort::bind();
    let closed = {
        let mut url = url::Url::parse(&env.database_url).expect("database URL");
        url.set_port(Some(port.port)).expect("port");
        url.to_string()
    };
    let mut vars = vars(&env, &env.amqp_url, &closed);
    vars.retain(|(k, _)| *k != "POKEQ_PATIENCE");
    // Backoff from 200 ms, doubling: the fifth try would start after the deadline.
    vars.push(("POKEQ_PATIENCE", "4s".to_owned()));

    let consumer = Program::consumer(&vars).finish(FAST * 3).await;
    assert_eq!(consumer.code, Some(1), "{}", consumer.output);
    let retries = consumer
        .output
        .matches("Postgres not reachable yet")
        .count();
    assert!(
        retries >= 4 && consumer.took >= Duration::from_secs(2),
        "waited {:?} with {retries} retries:\n{}",
        consumer.took,
        consumer.output
    );
}
