//! The stub's own serving rate: concurrent keep-alive reqwest clients fetching details, with no
//! broker or database in the way. The pipeline cannot go faster than this on the same machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use crate::procfs;

#[derive(Debug, Clone, Copy, Default)]
pub struct StubRate {
    pub clients: usize,
    pub secs: f64,
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    /// Stub CPU seconds during the measurement.
    pub stub_cpu_s: f64,
    /// The benchmark's own CPU seconds (the clients) during the measurement.
    pub client_cpu_s: f64,
}

impl StubRate {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.secs.max(1e-9)
    }
}

/// The ids the stub lists (its list endpoint, one page).
pub async fn listed_ids(base: &str, count: u32) -> anyhow::Result<Vec<i32>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let body = http
        .get(format!("{base}/pokemon?offset=0&limit={count}"))
        .send()
        .await
        .context("cannot list the stub's pokemon")?
        .error_for_status()?
        .bytes()
        .await?;
    let page: Value = serde_json::from_slice(&body).context("stub list is not JSON")?;
    let ids: Vec<i32> = page["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .filter_map(|entry| entry["url"].as_str())
                .filter_map(|url| url.trim_end_matches('/').rsplit('/').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(!ids.is_empty(), "the stub listed no pokemon");
    Ok(ids)
}

/// `clients` tasks, each fetching details in a loop over `ids` for `duration`.
pub async fn measure(
    base: &str,
    ids: Vec<i32>,
    clients: usize,
    duration: Duration,
    stub_pid: i32,
) -> anyhow::Result<StubRate> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(clients)
        .build()?;
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let tck = procfs::clk_tck();
    let stub_before = procfs::read_stat(stub_pid).map_or(0, |s| s.ticks);
    let self_before = procfs::self_cpu_s();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (http, ids, next) = (http.clone(), ids.clone(), next.clone());
        let (requests, errors, bytes) = (requests.clone(), errors.clone(), bytes.clone());
        let base = base.to_owned();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let id = ids[next.fetch_add(1, Ordering::Relaxed) % ids.len()];
                let result = async {
                    let response = http
                        .get(format!("{base}/pokemon/{id}/"))
                        .send()
                        .await?
                        .error_for_status()?;
                    response.bytes().await
                }
                .await;
                match result {
                    Ok(body) => {
                        requests.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(duration + Duration::from_secs(35), task)
            .await
            .context("a stub client did not finish")?
            .context("a stub client panicked")?;
    }
    let secs = start.elapsed().as_secs_f64();
    let stub_after = procfs::read_stat(stub_pid).map_or(0, |s| s.ticks);
    Ok(StubRate {
        clients,
        secs,
        requests: requests.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        stub_cpu_s: stub_after.saturating_sub(stub_before) as f64 / tck,
        client_cpu_s: procfs::self_cpu_s() - self_before,
    })
}
