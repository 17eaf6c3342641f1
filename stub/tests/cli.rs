//! The `pokeapi-stub` binary: bad values exit 2 naming the flag; it starts, serves, and stops
//! cleanly on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_pokeapi-stub");

#[test]
fn bad_values_exit_2_naming_flag_and_value() {
    for (flag, value) in [
        ("--latency", "fast"),
        ("--fault-rate", "2"),
        ("--fault", "25:teapot"),
        ("--fault", "berry/1:500"),
        ("--count", "minus-one"),
        ("--listen", "nowhere"),
    ] {
        let out = Command::new(BIN)
            .args([flag, value])
            .env_remove("STUB_LATENCY")
            .output()
            .expect("run binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
        assert!(stderr.contains(value), "{value}: {stderr}");
    }
}

#[tokio::test]
async fn serves_then_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--count",
            "30",
            "--fault",
            "3:404",
            "--fault",
            "pokemon-species/2:503",
        ])
        .env("STUB_LATENCY", "1ms")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start binary");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("read line");
    let url = line
        .trim()
        .strip_prefix("pokeapi-stub listening on http://")
        .and_then(|rest| rest.strip_suffix("/api/v2"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: SocketAddr = url.parse().expect("address");

    let page = common::get(addr, "/api/v2/pokemon?limit=100").await.json();
    assert_eq!(page["count"], 30);
    assert_eq!(common::get(addr, "/api/v2/pokemon/2/").await.status, 200);
    assert_eq!(common::get(addr, "/api/v2/pokemon/3/").await.status, 404);
    let species = common::get(addr, "/api/v2/pokemon-species/?limit=100")
        .await
        .json();
    assert_eq!(species["count"], 30);
    assert_eq!(
        common::get(addr, "/api/v2/pokemon-species/2/").await.status,
        503
    );
    assert_eq!(
        common::get(addr, "/api/v2/pokemon-species/3/").await.status,
        200
    );
    assert_eq!(common::get(addr, "/api/v2/pokemon/2/").await.status, 200);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}
