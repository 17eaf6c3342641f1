//! The HTTP surface: pagination, detail bodies, 404/400, faults, counters, latency.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{get, path_of};
use pokeapi_stub::{FaultKind, FaultRule, ListFault, StubConfig, StubHandle, spawn};
use serde_json::Value;

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn stub(config: StubConfig) -> StubHandle {
    spawn(config, local()).await.expect("spawn stub")
}

#[tokio::test]
async fn pagination_covers_every_id_once() {
    let s = stub(StubConfig::default()).await;
    let addr = s.addr();
    assert_eq!(s.base_url(), format!("http://{addr}/api/v2"));
    let mut seen = Vec::new();
    let mut path = "/api/v2/pokemon?limit=100".to_owned();
    let mut previous_offset: Option<usize> = None;
    let mut pages = 0;
    loop {
        let reply = get(addr, &path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert!(reply.complete());
        let page = reply.json();
        assert_eq!(page["count"], 1351);
        let offset = pages * 100;
        match previous_offset {
            None => assert!(page["previous"].is_null()),
            Some(p) => assert_eq!(
                page["previous"],
                format!("http://{addr}/api/v2/pokemon?offset={p}&limit=100")
            ),
        }
        for item in page["results"].as_array().expect("results") {
            let url = item["url"].as_str().expect("url");
            let rest = path_of(url, addr);
            let id: i32 = rest
                .strip_prefix("/api/v2/pokemon/")
                .and_then(|r| r.strip_suffix('/'))
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| panic!("bad url {url}"));
            assert_eq!(item["name"].as_str(), s.dataset().name(id));
            seen.push(id);
        }
        pages += 1;
        previous_offset = Some(offset);
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(
                    next,
                    format!(
                        "http://{addr}/api/v2/pokemon?offset={}&limit=100",
                        offset + 100
                    )
                );
                path = path_of(next, addr);
            }
            None => break,
        }
    }
    assert_eq!(pages, 14);
    assert_eq!(seen, s.dataset().ids());
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1351);
    assert_eq!(s.list_requests(), 14);

    // Trailing slash, defaults, past the end.
    let page = get(addr, "/api/v2/pokemon/").await.json();
    assert_eq!(page["results"].as_array().map(Vec::len), Some(20));
    assert_eq!(
        page["next"],
        format!("http://{addr}/api/v2/pokemon?offset=20&limit=20")
    );
    let page = get(addr, "/api/v2/pokemon/?offset=2000&limit=20")
        .await
        .json();
    assert_eq!(page["results"].as_array().map(Vec::len), Some(0));
    assert!(page["next"].is_null());
    assert_eq!(
        page["previous"],
        format!("http://{addr}/api/v2/pokemon?offset=1980&limit=20")
    );
    let page = get(addr, "/api/v2/pokemon?offset=1340&limit=20")
        .await
        .json();
    assert_eq!(page["results"].as_array().map(Vec::len), Some(11));
    assert_eq!(
        page["results"][10]["url"],
        format!("http://{addr}/api/v2/pokemon/10326/")
    );
    assert!(page["next"].is_null());
    for bad in ["limit=abc", "offset=-5", "limit=0", "offset=1e3"] {
        let reply = get(addr, &format!("/api/v2/pokemon?{bad}")).await;
        assert_eq!(reply.status, 400, "{bad}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn detail_serves_the_dataset_payload() {
    let s = stub(StubConfig {
        count: 1100,
        ..StubConfig::default()
    })
    .await;
    let addr = s.addr();
    for id in [1, 25, 1025, 10001, 10075] {
        for path in [
            format!("/api/v2/pokemon/{id}/"),
            format!("/api/v2/pokemon/{id}"),
        ] {
            let reply = get(addr, &path).await;
            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(reply.header("content-type"), Some("application/json"));
            assert!(reply.complete(), "{path}");
            let expected = s.dataset().payload(id).expect("payload");
            assert_eq!(reply.body, expected.as_ref(), "{path}");
            assert_eq!(reply.json()["id"], id);
        }
        assert_eq!(s.detail_requests(id), 2);
    }
    for path in [
        "/api/v2/pokemon/10076/",
        "/api/v2/pokemon/0/",
        "/api/v2/pokemon/pikachu/",
        "/api/v2/pokemon/25/encounters",
        "/api/v2/berry/1/",
        "/nothing",
    ] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.text(), "Not Found", "{path}");
    }
    assert_eq!(s.detail_requests(10076), 0);
    assert_eq!(s.total_detail_requests(), 10 + 3);
    assert_eq!(s.list_requests(), 0);
    s.shutdown().await;
}

#[tokio::test]
async fn each_fault_kind_behaves() {
    let s = stub(StubConfig {
        count: 200,
        ..StubConfig::default()
    })
    .await;
    let addr = s.addr();
    let full_len = |id: i32| s.dataset().payload(id).expect("payload").len();

    s.set_fault(1, Some(FaultRule::always(FaultKind::NotFound)));
    let r = get(addr, "/api/v2/pokemon/1/").await;
    assert_eq!((r.status, r.text().as_str()), (404, "Not Found"));

    s.set_fault(
        2,
        Some(FaultRule::always(FaultKind::TooManyRequests {
            retry_after_secs: 7,
        })),
    );
    let r = get(addr, "/api/v2/pokemon/2/").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));

    for code in [500u16, 503] {
        s.set_fault(3, Some(FaultRule::always(FaultKind::ServerError(code))));
        let r = get(addr, "/api/v2/pokemon/3/").await;
        assert_eq!(r.status, code);
    }

    s.set_fault(4, Some(FaultRule::always(FaultKind::MalformedJson)));
    let r = get(addr, "/api/v2/pokemon/4/").await;
    assert_eq!(r.status, 200);
    assert!(r.complete(), "the HTTP framing is fine");
    assert!(r.body.len() < full_len(4));
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    s.set_fault(5, Some(FaultRule::always(FaultKind::DropMidBody)));
    let r = get(addr, "/api/v2/pokemon/5/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), Some(full_len(5)));
    assert!(!r.body.is_empty(), "part of the body arrives");
    assert!(r.body.len() < full_len(5), "but not all of it");

    s.set_fault(
        6,
        Some(FaultRule::always(FaultKind::SlowBody(
            Duration::from_millis(400),
        ))),
    );
    let r = get(addr, "/api/v2/pokemon/6/").await;
    assert_eq!(r.status, 200);
    assert!(r.complete());
    assert_eq!(r.body, s.dataset().payload(6).expect("payload").as_ref());
    assert!(r.done_at >= Duration::from_millis(400), "{:?}", r.done_at);
    assert!(
        r.done_at - r.headers_at >= Duration::from_millis(250),
        "headers {:?} body {:?}",
        r.headers_at,
        r.done_at
    );

    s.set_fault(7, Some(FaultRule::always(FaultKind::WrongId)));
    let r = get(addr, "/api/v2/pokemon/7/").await;
    assert_eq!(r.status, 200);
    assert!(r.complete());
    let v = r.json();
    let served = v["id"].as_i64().expect("id") as i32;
    assert_ne!(served, 7);
    assert!(s.dataset().contains(served));
    assert_eq!(v["name"].as_str(), s.dataset().name(7));

    s.set_fault(8, Some(FaultRule::always(FaultKind::NulInString)));
    let r = get(addr, "/api/v2/pokemon/8/").await;
    assert_eq!(r.status, 200);
    assert!(r.complete());
    let v = r.json();
    let species = v["species"]["name"].as_str().expect("species name");
    assert!(species.ends_with('\0'), "{species:?}");
    assert_eq!(v["name"].as_str(), s.dataset().name(8), "otherwise valid");

    // Removing a rule restores normal service.
    s.set_fault(1, None);
    assert_eq!(get(addr, "/api/v2/pokemon/1/").await.status, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn times_fails_n_then_succeeds_and_counts() {
    let mut faults = std::collections::HashMap::new();
    faults.insert(25, FaultRule::times(FaultKind::ServerError(503), 2));
    let s = stub(StubConfig {
        count: 50,
        faults,
        ..StubConfig::default()
    })
    .await;
    let addr = s.addr();
    assert_eq!(get(addr, "/api/v2/pokemon/25/").await.status, 503);
    assert_eq!(get(addr, "/api/v2/pokemon/25/").await.status, 503);
    let r = get(addr, "/api/v2/pokemon/25/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], 25);
    assert_eq!(get(addr, "/api/v2/pokemon/25/").await.status, 200);
    assert_eq!(s.detail_requests(25), 4);

    // Runtime rules count from when they are set.
    s.set_fault(
        26,
        Some(FaultRule::times(
            FaultKind::TooManyRequests {
                retry_after_secs: 1,
            },
            1,
        )),
    );
    assert_eq!(get(addr, "/api/v2/pokemon/26/").await.status, 429);
    assert_eq!(get(addr, "/api/v2/pokemon/26").await.status, 200);
    assert_eq!(s.detail_requests(26), 2);
    assert_eq!(s.total_detail_requests(), 6);
    s.shutdown().await;
}

#[tokio::test]
async fn a_list_fault_spoils_only_that_entry() {
    let s = stub(StubConfig {
        count: 10,
        ..StubConfig::default()
    })
    .await;
    let addr = s.addr();
    s.set_list_fault(3, Some(ListFault::NulInName));
    let names = |page: Value| -> Vec<String> {
        page["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|entry| entry["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let listed = names(get(addr, "/api/v2/pokemon?limit=10").await.json());
    for (i, name) in listed.iter().enumerate() {
        let id = i as i32 + 1;
        let served = s.dataset().name(id).expect("name");
        if id == 3 {
            assert_eq!(name, &format!("{served}\0"));
        } else {
            assert_eq!(name, served);
        }
    }
    let detail = get(addr, "/api/v2/pokemon/3/").await;
    assert_eq!(detail.json()["name"].as_str(), s.dataset().name(3));

    s.set_list_fault(3, None);
    let listed = names(get(addr, "/api/v2/pokemon?limit=10").await.json());
    assert_eq!(listed[2], s.dataset().name(3).expect("name"));
    s.shutdown().await;
}

/// Status of each id's first request; drops show up as 0.
async fn first_statuses(s: &StubHandle, ids: &[i32]) -> Vec<u16> {
    let mut out = Vec::new();
    for &id in ids {
        let r = get(s.addr(), &format!("/api/v2/pokemon/{id}/")).await;
        let dropped = r.status == 200 && !r.complete();
        out.push(if dropped { 0 } else { r.status });
    }
    out
}

#[tokio::test]
async fn fault_rate_is_deterministic() {
    let config = StubConfig {
        count: 120,
        seed: 11,
        fault_rate: 0.3,
        ..StubConfig::default()
    };
    let ids: Vec<i32> = (1..=120).collect();
    let a = stub(config.clone()).await;
    let first = first_statuses(&a, &ids).await;
    a.shutdown().await;
    let b = stub(config).await;
    let again = first_statuses(&b, &ids).await;
    b.shutdown().await;
    assert_eq!(first, again, "same seed, same faults");
    let faulted = first.iter().filter(|&&s| s != 200).count();
    assert!(
        (15..=60).contains(&faulted),
        "{faulted} of 120 faulted at rate 0.3"
    );
    assert!(first.iter().all(|s| [200, 429, 503, 0].contains(s)));
    for kind in [429, 503, 0] {
        assert!(first.contains(&kind), "kind {kind} appears: {first:?}");
    }

    let all = stub(StubConfig {
        count: 20,
        fault_rate: 1.0,
        ..StubConfig::default()
    })
    .await;
    let statuses = first_statuses(&all, &(1..=20).collect::<Vec<_>>()).await;
    assert!(statuses.iter().all(|&s| s != 200), "{statuses:?}");
    all.shutdown().await;
}

#[tokio::test]
async fn latency_applies_to_list_and_detail() {
    let s = stub(StubConfig {
        count: 10,
        latency: Duration::from_millis(150),
        ..StubConfig::default()
    })
    .await;
    let r = get(s.addr(), "/api/v2/pokemon?limit=5").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers_at >= Duration::from_millis(150),
        "{:?}",
        r.headers_at
    );
    let r = get(s.addr(), "/api/v2/pokemon/3/").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers_at >= Duration::from_millis(150),
        "{:?}",
        r.headers_at
    );
    s.shutdown().await;
}

#[tokio::test]
async fn bad_config_is_rejected() {
    let err = spawn(
        StubConfig {
            fault_rate: 1.5,
            ..StubConfig::default()
        },
        local(),
    )
    .await
    .err()
    .expect("rate 1.5 is rejected");
    assert!(err.to_string().contains("fault_rate"), "{err}");
}
