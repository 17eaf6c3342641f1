//! Several consumers on one host with no flags: the second one finds the default metrics
//! address taken and serves on a free port instead of dying; an address the user chose that
//! cannot be bound is still a configuration error (exit 2).

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use pokeapi_stub::StubConfig;
use support::{TestEnv, free_port};
use tokio::process::{Child, Command};

const CONSUMER: &str = env!("CARGO_BIN_EXE_consumer");

fn consumer(env: &TestEnv, metrics_addr: Option<&str>) -> Child {
    let mut command = Command::new(CONSUMER);
    command
        .env("AMQP_URL", &env.amqp_url)
        .env("DATABASE_URL", &env.database_url)
        .env("POKEAPI_URL", env.stub.base_url())
        .env("POKEQ_PREFIX", &env.prefix)
        .env("POKEQ_RATE", "0")
        .env("RUST_LOG", "info")
        .env_remove("METRICS_ADDR")
        .env_remove("LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(addr) = metrics_addr {
        command.env("METRICS_ADDR", addr);
    }
    command.spawn().expect("consumer starts")
}

/// SIGTERM, then the exit code and everything the process logged.
async fn stop(child: Child) -> (Option<i32>, String) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    finish(child).await
}

async fn finish(child: Child) -> (Option<i32>, String) {
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the consumer exits")
        .expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The port of the `serving /metrics` line.
fn served_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|l| l.contains("serving /metrics"))?;
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    addr.rsplit(':').next()?.parse().ok()
}

#[tokio::test]
async fn two_consumers_on_one_host_both_work_with_no_flags() {
    let env = TestEnv::start(StubConfig {
        count: 200,
        latency: Duration::from_millis(2),
        ..StubConfig::default()
    })
    .await;
    env.run_producer(&[]).await;
    // The default address is held, as by a consumer started earlier on this host (if
    // something else holds it already, it is just as taken).
    let _first = std::net::TcpListener::bind("0.0.0.0:9000");
    let a = consumer(&env, None);
    let b = consumer(&env, None);

    let counts = env.wait_settled(200, Duration::from_secs(90)).await;
    assert_eq!((counts.done, counts.failed), (200, 0));
    let (code_a, log_a) = stop(a).await;
    let (code_b, log_b) = stop(b).await;
    assert_eq!(code_a, Some(0), "{log_a}");
    assert_eq!(code_b, Some(0), "{log_b}");
    for log in [&log_a, &log_b] {
        assert!(
            log.contains("the default metrics address is taken"),
            "the fallback is logged:\n{log}"
        );
        assert!(log.contains("pokeq-consumer@"), "process named:\n{log}");
    }
    let (port_a, port_b) = (served_port(&log_a), served_port(&log_b));
    assert!(port_a.is_some() && port_b.is_some(), "{log_a}\n{log_b}");
    assert_ne!(port_a, port_b, "each on a port of its own");
    assert_ne!(port_a, Some(9000));
    assert!(
        !log_a.contains('\u{1b}'),
        "no colour codes in logs that go to a pipe:\n{log_a}"
    );
}

#[tokio::test]
async fn a_chosen_metrics_address_that_is_taken_exits_2() {
    let env = TestEnv::start(StubConfig {
        count: 1,
        ..StubConfig::default()
    })
    .await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = holder.local_addr().expect("addr").to_string();
    let started = Instant::now();
    let (code, log) = finish(consumer(&env, Some(&taken))).await;
    assert_eq!(code, Some(2), "{log}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        log.contains("METRICS_ADDR") && log.contains(&taken),
        "names the setting and the address:\n{log}"
    );
}

#[tokio::test]
async fn every_series_is_on_metrics_from_the_start_with_its_help() {
    let env = TestEnv::start(StubConfig {
        count: 1,
        ..StubConfig::default()
    })
    .await;
    // The binary binds its metrics port itself: see `free_port` for the (small) race.
    let addr = format!("127.0.0.1:{}", free_port());
    let expected = [
        "# HELP pokeq_jobs_total",
        "pokeq_jobs_total{outcome=\"dead\",resource=\"pokemon\"} 0",
        "pokeq_dead_letters_total{kind=\"delivery_limit\",resource=\"pokemon\"} 0",
        "pokeq_settle_failures_total{target=\"retry\"} 0",
        "pokeq_reconnects_total{target=\"database\"} 0",
        "pokeq_api_circuit_open 0",
        "# HELP pokeq_api_circuit_open",
    ];
    let child = consumer(&env, Some(&addr));
    let client = reqwest::Client::new();
    let mut page = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !expected.iter().all(|line| page.contains(line)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(response) = client.get(format!("http://{addr}/metrics")).send().await {
            page = response.text().await.unwrap_or_default();
        }
    }
    let (code, log) = stop(child).await;
    assert_eq!(code, Some(0), "{log}");
    for line in expected {
        assert!(
            page.contains(line),
            "{line:?} missing before any job:\n{page}"
        );
    }
    assert_eq!(
        env.stub.total_detail_requests(),
        0,
        "no job ran: the series are there from the start"
    );
}
