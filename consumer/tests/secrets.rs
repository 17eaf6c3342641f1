//! Passwords never reach what a user sees: debug logs in text and JSON, `--help`, configuration
//! errors and connection errors. Each case runs the real programs as processes, with a RabbitMQ
//! user and a Postgres URL whose passwords are distinctive, and greps everything they print: the
//! password must never show, while the user name (or what the run was expected to print) does,
//! which proves the capture worked.
//!
//! The consumer is its own binary. The producer's binary is not built for this crate's tests, so
//! this test binary plays it: started with `POKEQ_TEST_PRODUCER_ARGS` set, its `main` does
//! exactly what the producer's `main` does (see `support/harness.rs`).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use support::{TestEnv, harness};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const CONSUMER: &str = env!("CARGO_BIN_EXE_consumer");
const SETTLE: Duration = Duration::from_secs(90);

fn main() -> ExitCode {
    harness::main(harness::tokio_tests![
        a_debug_text_run_never_prints_a_password,
        a_debug_json_run_never_prints_a_password,
        help_and_bad_settings_never_print_a_password,
        connection_errors_never_print_a_password,
        a_printed_configuration_never_shows_a_password,
        api_errors_never_show_the_credentials_or_query_of_the_api_url,
    ])
}

/// A RabbitMQ user and a Postgres URL with passwords no program has any reason to print.
struct Secrets {
    user: String,
    amqp_password: String,
    pg_password: String,
}

impl Secrets {
    fn new() -> Self {
        let tag = || format!("{:012x}", rand::random::<u64>() >> 16);
        Secrets {
            user: format!("pokeq_secret_{}", tag()),
            amqp_password: format!("S3cr3t-{}", tag()),
            pg_password: format!("PgS3cr3t-{}", tag()),
        }
    }

    /// The test's broker URL as this user, on `port` (the broker's, or a closed one).
    fn amqp_url(&self, env: &TestEnv, port: Option<u16>) -> String {
        let mut url = url::Url::parse(&env.amqp_url).unwrap();
        url.set_username(&self.user).unwrap();
        url.set_password(Some(&self.amqp_password)).unwrap();
        if port.is_some() {
            url.set_port(port).unwrap();
        }
        url.to_string()
    }

    /// The test's database URL with this password (trust auth ignores it, the URL keeps it).
    fn database_url(&self, env: &TestEnv) -> String {
        let mut url = url::Url::parse(&env.database_url).unwrap();
        url.set_password(Some(&self.pg_password)).unwrap();
        url.to_string()
    }

    /// Panics if `output` shows either password.
    fn assert_hidden(&self, what: &str, output: &str) {
        for password in [&self.amqp_password, &self.pg_password] {
            if let Some(at) = output.find(password.as_str()) {
                let line_start = output[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = output[at..].find('\n').map_or(output.len(), |i| at + i);
                panic!(
                    "{what} shows the password {password:?} in:\n{}",
                    &output[line_start..line_end]
                );
            }
        }
    }
}

/// Calls the RabbitMQ management API as guest; returns the HTTP status.
fn management(method: &str, path: &str, body: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", 15672))
        .expect("RabbitMQ management API on 127.0.0.1:15672");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:15672\r\n\
         authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0)
}

/// The secret RabbitMQ user, with full rights on `/`, deleted again when dropped.
struct BrokerUser(String);

impl BrokerUser {
    fn create(secrets: &Secrets) -> Self {
        let user = BrokerUser(secrets.user.clone());
        let body = format!(r#"{{"password":"{}","tags":""}}"#, secrets.amqp_password);
        let status = management("PUT", &format!("/api/users/{}", user.0), &body);
        assert!(
            matches!(status, 201 | 204),
            "creating the user: HTTP {status}"
        );
        let rights = r#"{"configure":".*","write":".*","read":".*"}"#;
        let status = management("PUT", &format!("/api/permissions/%2F/{}", user.0), rights);
        assert!(
            matches!(status, 201 | 204),
            "granting rights: HTTP {status}"
        );
        user
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        management("DELETE", &format!("/api/users/{}", self.0), "");
    }
}

/// A program under test, its stdout and stderr collected into one buffer as it runs.
struct Process {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    /// Starts `program` with only `vars` in its environment.
    fn spawn(program: &str, args: &[&str], vars: &[(&str, &str)]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let readers = vec![
            tokio::spawn(collect(stdout, Arc::clone(&output))),
            tokio::spawn(collect(stderr, Arc::clone(&output))),
        ];
        Process {
            child,
            output,
            readers,
        }
    }

    /// This test binary as the producer, with `args` and `vars`.
    fn producer(args: &[&str], vars: &[(&str, &str)]) -> Self {
        let exe = std::env::current_exe().unwrap();
        let joined = args.join("\u{1f}");
        let mut vars = vars.to_vec();
        vars.push((harness::PRODUCER_ARGS, &joined));
        Self::spawn(exe.to_str().unwrap(), &[], &vars)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Whether the process has exited.
    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Polls until the output so far satisfies `check` or the process exits; false on timeout.
    async fn wait_for(&mut self, limit: Duration, check: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if check(&self.text()) || self.exited() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// SIGTERM, as `docker stop` or Kubernetes sends it.
    fn terminate(&self) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the exit (killing the process after `limit`), then returns its status, `None`
    /// if it had to be killed, and everything it printed.
    async fn finish(mut self, limit: Duration) -> (Option<ExitStatus>, String) {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => Some(status.unwrap()),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        };
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        (status, self.text())
    }
}

async fn collect(mut pipe: impl tokio::io::AsyncRead + Unpin, into: Arc<Mutex<Vec<u8>>>) {
    let mut buffer = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        into.lock().unwrap().extend_from_slice(&buffer[..n]);
    }
}

/// The environment every program gets in these tests: services, names and log settings.
fn program_env<'a>(
    env: &'a TestEnv,
    stub_url: &'a str,
    amqp_url: &'a str,
    database_url: &'a str,
    format: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AMQP_URL", amqp_url),
        ("DATABASE_URL", database_url),
        ("POKEAPI_URL", stub_url),
        ("POKEQ_PREFIX", env.prefix.as_str()),
        ("POKEQ_RATE", "0"),
        ("POKEQ_PATIENCE", "1s"),
        ("METRICS_ADDR", "off"),
        ("RUST_LOG", "debug"),
        ("LOG_FORMAT", format),
    ]
}

/// A whole run, producer then consumer, with `RUST_LOG=debug` and `LOG_FORMAT=<format>`: returns
/// what both printed, after checking the run did its work.
async fn full_run(format: &str) -> (Secrets, String) {
    let env = TestEnv::start(pokeapi_stub::StubConfig {
        count: 20,
        ..pokeapi_stub::StubConfig::default()
    })
    .await;
    let secrets = Secrets::new();
    let _user = BrokerUser::create(&secrets);
    let amqp_url = secrets.amqp_url(&env, None);
    let database_url = secrets.database_url(&env);
    let stub_url = env.stub.base_url();
    let vars = program_env(&env, &stub_url, &amqp_url, &database_url, format);

    let (status, producer) = Process::producer(&[], &vars).finish(SETTLE).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "producer output:\n{producer}"
    );
    assert!(
        producer.contains("listed=20 published=20"),
        "producer summary missing:\n{producer}"
    );

    let consumer = Process::spawn(CONSUMER, &[], &vars);
    let counts = env.wait_settled(20, SETTLE).await;
    assert_eq!(counts.done, 20, "consumer output:\n{}", consumer.text());
    consumer.terminate();
    let (status, consumer) = consumer.finish(Duration::from_secs(60)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "consumer output:\n{consumer}"
    );
    assert!(
        consumer.contains("consuming") && consumer.contains(&env.topology().jobs()),
        "the consumer's log was captured:\n{consumer}"
    );
    (secrets, format!("{producer}\n{consumer}"))
}

/// What the JSON log format prints: every log line an object, at debug level somewhere.
fn assert_json_lines(output: &str) {
    let mut debug = 0;
    for line in output.lines().filter(|l| l.starts_with('{')) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if value["level"] == "DEBUG" {
            debug += 1;
        }
    }
    assert!(debug > 0, "no debug line captured:\n{output}");
}

async fn a_debug_text_run_never_prints_a_password() {
    let (secrets, output) = full_run("text").await;
    assert!(output.contains("DEBUG"), "debug level was on:\n{output}");
    secrets.assert_hidden("RUST_LOG=debug text logs", &output);
}

async fn a_debug_json_run_never_prints_a_password() {
    let (secrets, output) = full_run("json").await;
    assert_json_lines(&output);
    secrets.assert_hidden("RUST_LOG=debug JSON logs", &output);
}

/// One bad-setting case: the flags, the variable replaced, and what the program must do.
struct Setting {
    what: &'static str,
    args: Vec<&'static str>,
    set: Option<(&'static str, String)>,
    code: i32,
    shows: String,
}

async fn help_and_bad_settings_never_print_a_password() {
    let env = TestEnv::start(pokeapi_stub::StubConfig {
        count: 1,
        ..pokeapi_stub::StubConfig::default()
    })
    .await;
    let secrets = Secrets::new();
    let amqp_url = secrets.amqp_url(&env, None);
    let database_url = secrets.database_url(&env);
    let stub_url = env.stub.base_url();
    let vars = program_env(&env, &stub_url, &amqp_url, &database_url, "text");
    let (user, amqp_pw, pg_pw) = (
        secrets.user.as_str(),
        secrets.amqp_password.as_str(),
        secrets.pg_password.as_str(),
    );

    let cases = [
        Setting {
            what: "--help",
            args: vec!["--help"],
            set: None,
            code: 0,
            shows: "--amqp-url".into(),
        },
        Setting {
            what: "a bad prefix",
            args: vec!["--prefix", "bad prefix!"],
            set: None,
            code: 2,
            shows: "POKEQ_PREFIX".into(),
        },
        Setting {
            what: "an AMQP_URL of the wrong scheme",
            args: vec![],
            set: Some((
                "AMQP_URL",
                format!("http://{user}:{amqp_pw}@127.0.0.1:5672/"),
            )),
            code: 2,
            shows: user.into(),
        },
        Setting {
            what: "an AMQP_URL that does not parse",
            args: vec![],
            set: Some((
                "AMQP_URL",
                format!("amqp://{user}:{amqp_pw}@127.0.0.1:notaport/%2f"),
            )),
            code: 2,
            shows: user.into(),
        },
        Setting {
            what: "an AMQP_URL with a bad query",
            args: vec![],
            set: Some((
                "AMQP_URL",
                format!("amqp://{user}:{amqp_pw}@127.0.0.1:5672/%2f?heartbeat=often"),
            )),
            code: 2,
            shows: "AMQP_URL".into(),
        },
        Setting {
            what: "an AMQP_URL list with an empty node",
            args: vec![],
            set: Some((
                "AMQP_URL",
                format!(
                    "amqp://{user}:{amqp_pw}@127.0.0.1:5672/%2f,,amqp://{user}:{amqp_pw}@127.0.0.1:5673/%2f"
                ),
            )),
            code: 2,
            shows: "address 2 of 3: is empty".into(),
        },
        Setting {
            what: "an AMQP_URL list whose nodes log in differently",
            args: vec![],
            set: Some((
                "AMQP_URL",
                format!(
                    "amqp://{user}:{amqp_pw}@127.0.0.1:5672/%2f,amqp://guest:{amqp_pw}@127.0.0.1:5673/%2f"
                ),
            )),
            code: 2,
            shows: "same user, password and virtual host".into(),
        },
        Setting {
            what: "a DATABASE_URL without a database",
            args: vec![],
            set: Some((
                "DATABASE_URL",
                format!("postgres://{user}:{pg_pw}@127.0.0.1:5432"),
            )),
            code: 2,
            shows: user.into(),
        },
        Setting {
            what: "a DATABASE_URL that does not parse",
            args: vec![],
            set: Some((
                "DATABASE_URL",
                format!("postgres://{user}:{pg_pw}@127.0.0.1:notaport/db"),
            )),
            code: 2,
            shows: "DATABASE_URL".into(),
        },
        // tokio-postgres also reads libpq's key=value form, which `mask_url` does not mask.
        Setting {
            what: "a key=value DATABASE_URL without a database",
            args: vec![],
            set: Some((
                "DATABASE_URL",
                format!("host=127.0.0.1 user={user} password={pg_pw}"),
            )),
            code: 2,
            shows: "DATABASE_URL".into(),
        },
    ];
    for Setting {
        what,
        args,
        set,
        code,
        shows,
    } in cases
    {
        let mut vars = vars.clone();
        if let Some((name, value)) = &set {
            vars.retain(|(k, _)| k != name);
            vars.push((name, value.as_str()));
        }
        for (program, output) in [
            ("consumer", Process::spawn(CONSUMER, &args, &vars)),
            ("producer", Process::producer(&args, &vars)),
        ] {
            let (status, output) = output.finish(Duration::from_secs(60)).await;
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(code),
                "{program} with {what}:\n{output}"
            );
            assert!(
                output.contains(shows.as_str()),
                "{program} with {what} shows {shows:?}:\n{output}"
            );
            secrets.assert_hidden(&format!("{program} with {what}"), &output);
        }
    }
}

async fn connection_errors_never_print_a_password() {
    let env = TestEnv::start(pokeapi_stub::StubConfig {
        count: 1,
        ..pokeapi_stub::StubConfig::default()
    })
    .await;
    let secrets = Secrets::new();
    let port = pokeq_shared::testkit::ClosedPort::bind();
    let closed = port.port;
    let broker_closed = secrets.amqp_url(&env, Some(closed));
    let database_url = secrets.database_url(&env);
    let database_closed = {
        let mut url = url::Url::parse(&database_url).unwrap();
        url.set_username(&secrets.user).unwrap();
        url.set_port(Some(closed)).unwrap();
        url.to_string()
    };
    let database_closed_keywords = format!(
        "host=127.0.0.1 port={closed} user={} password={} dbname=pokeq connect_timeout=2",
        secrets.user, secrets.pg_password
    );
    let stub_url = env.stub.base_url();
    // Two nodes of a cluster, both down: the error names each one, masked.
    let port2 = pokeq_shared::testkit::ClosedPort::bind();
    let brokers_closed = format!(
        "{broker_closed},{}",
        secrets.amqp_url(&env, Some(port2.port))
    );
    let started = Instant::now();
    for (what, amqp_url, database_url, format) in [
        (
            "a closed broker port",
            &broker_closed,
            &database_url,
            "text",
        ),
        (
            "two closed broker ports",
            &brokers_closed,
            &database_url,
            "text",
        ),
        (
            "a closed broker port",
            &broker_closed,
            &database_url,
            "json",
        ),
        (
            "a closed database port",
            &env.amqp_url,
            &database_closed,
            "text",
        ),
        (
            "a closed database port",
            &env.amqp_url,
            &database_closed,
            "json",
        ),
        (
            "a closed database port, key=value form",
            &env.amqp_url,
            &database_closed_keywords,
            "text",
        ),
    ] {
        let vars = program_env(&env, &stub_url, amqp_url, database_url, format);
        for (program, mut process) in [
            ("consumer", Process::spawn(CONSUMER, &[], &vars)),
            ("producer", Process::producer(&[], &vars)),
        ] {
            // The consumer gives up after POKEQ_PATIENCE; the producer keeps retrying a
            // broker for about a minute, so it is stopped after its first complaint.
            let user = secrets.user.clone();
            process
                .wait_for(Duration::from_secs(60), |output| {
                    program == "producer" && output.contains(&user)
                })
                .await;
            // SIGTERM does not interrupt the producer's broker retries: killed after 5 s.
            let limit = if process.exited() {
                Duration::from_secs(30)
            } else {
                process.terminate();
                Duration::from_secs(5)
            };
            let (status, output) = process.finish(limit).await;
            if program == "consumer" {
                assert_eq!(
                    status.and_then(|s| s.code()),
                    Some(1),
                    "{program} ({format}) with {what} exits 1:\n{output}"
                );
            }
            assert!(
                output.contains(&secrets.user),
                "{program} ({format}) with {what} names the user:\n{output}"
            );
            secrets.assert_hidden(&format!("{program} ({format}) with {what}"), &output);
        }
    }
    eprintln!("connection errors checked in {:?}", started.elapsed());
}

/// What `debug!(?config)` would print, in every binary: the flags as parsed and the validated
/// configuration, whole, show no password, nor do the URLs' own `Display`; the programs still
/// get the URLs as given.
async fn a_printed_configuration_never_shows_a_password() {
    let secrets = Secrets::new();
    let user = secrets.user.as_str();
    let amqp_url = format!("amqp://{user}:{}@127.0.0.1:5672/%2f", secrets.amqp_password);
    let database_url = format!(
        "postgres://{user}:{}@127.0.0.1:5432/pokeq",
        secrets.pg_password
    );
    let management_url = format!("http://{user}:{}@127.0.0.1:15672", secrets.amqp_password);
    let api_url = format!(
        "http://{user}:{}@127.0.0.1:8080/api/v2",
        secrets.pg_password
    );
    let flags = [
        "--amqp-url",
        &amqp_url,
        "--database-url",
        &database_url,
        "--pokeapi-url",
        &api_url,
        "--metrics-addr",
        "off",
    ];
    let consumer = pokeq_consumer::Cli::try_parse_from(std::iter::once("consumer").chain(flags))
        .expect("consumer flags");
    let consumer_config = consumer.validate().expect("consumer config");
    let producer = pokeq_producer::Cli::try_parse_from(std::iter::once("producer").chain(flags))
        .expect("producer flags");
    let producer_config = producer.validate().expect("producer config");
    let ctl = pokeq_ctl::Cli::try_parse_from(
        ["pokeq", "status", "--management-url", &management_url]
            .into_iter()
            .chain(flags[..6].iter().copied()),
    )
    .expect("pokeq flags");
    let ctl_config = ctl.validate().expect("pokeq config");

    for (what, printed) in [
        ("the consumer's flags", format!("{consumer:?}")),
        ("the consumer's config", format!("{consumer_config:?}")),
        ("the producer's flags", format!("{producer:?}")),
        ("the producer's config", format!("{producer_config:?}")),
        ("pokeq's flags", format!("{ctl:?}")),
        ("pokeq's config", format!("{ctl_config:?}")),
    ] {
        assert!(printed.contains(user), "{what} printed whole: {printed}");
        secrets.assert_hidden(&format!("{what} printed with {{:?}}"), &printed);
    }
    for common in [
        &consumer_config.common,
        &producer_config.common,
        &ctl_config.common,
    ] {
        for (url, given) in [
            (&common.amqp_url, &amqp_url),
            (&common.database_url, &database_url),
            (&common.pokeapi_url, &api_url),
        ] {
            let shown = url.to_string();
            assert!(shown.contains(user), "{shown}");
            secrets.assert_hidden("a URL's Display", &shown);
            assert_eq!(url.expose(), given.as_str());
        }
    }
}

/// An API whose base URL holds a user, a password and a token in its query, on a port that
/// refuses connections (the secrets' two passwords serve as the API's password and token):
/// the consumer tells the failure in its log, in `last_error` and in the dead letter without
/// any of them.
async fn api_errors_never_show_the_credentials_or_query_of_the_api_url() {
    let env = TestEnv::start(pokeapi_stub::StubConfig {
        count: 1,
        ..pokeapi_stub::StubConfig::default()
    })
    .await;
    env.run_producer(&[]).await;
    let secrets = Secrets::new();
    let closed = pokeq_shared::testkit::ClosedPort::bind();
    let api_url = format!(
        "http://{}:{}@127.0.0.1:{}/api/v2?token={}",
        secrets.user, secrets.amqp_password, closed.port, secrets.pg_password
    );
    let mut vars = program_env(&env, &api_url, &env.amqp_url, &env.database_url, "text");
    // Two requests in all (no quick retries): below the circuit's threshold of five failures,
    // which would hold the job as an API outage instead of failing it.
    vars.extend([
        ("POKEQ_MAX_ATTEMPTS", "2"),
        ("POKEQ_RETRY_DELAYS", "200ms"),
        ("POKEQ_API_RETRIES", "0"),
    ]);
    let consumer = Process::spawn(CONSUMER, &[], &vars);

    let counts = env.wait_settled(1, SETTLE).await;
    assert_eq!(counts.failed, 1, "consumer output:\n{}", consumer.text());
    let deadline = Instant::now() + SETTLE;
    let letters = loop {
        let letters = env.drain_dead().await;
        if !letters.is_empty() || Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    consumer.terminate();
    let (_, output) = consumer.finish(Duration::from_secs(60)).await;

    let last_error: String = env
        .client()
        .await
        .query_one("select last_error from ingest_items", &[])
        .await
        .expect("the item's row")
        .get(0);
    let [letter] = letters.as_slice() else {
        panic!("one dead letter: {letters:?}");
    };
    assert_eq!(letter.kind.as_deref(), Some("exhausted"));
    let reason = letter.error.clone().unwrap_or_default();
    for (what, text) in [
        ("last_error", last_error.as_str()),
        ("the dead letter's reason", reason.as_str()),
        ("the consumer's log", output.as_str()),
    ] {
        assert!(
            text.contains("connection failed"),
            "{what} tells the failure: {text}"
        );
        secrets.assert_hidden(what, text);
    }
    for (what, text) in [("last_error", &last_error), ("the dead letter", &reason)] {
        assert!(
            !text.contains(&secrets.user),
            "{what} names the API user: {text}"
        );
    }
}
