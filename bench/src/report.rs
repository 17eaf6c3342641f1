//! results.jsonl: appending runs, the markdown table of the latest run of each configuration,
//! the targets checked against it, and the human summary of one run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

pub fn append(path: &Path, record: &Value) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(file, "{record}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn load(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

fn f(record: &Value, path: &str) -> Option<f64> {
    record.pointer(path).and_then(Value::as_f64)
}

fn s<'a>(record: &'a Value, path: &str) -> &'a str {
    record.pointer(path).and_then(Value::as_str).unwrap_or("")
}

fn num(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The configuration a record measured; the table keeps the latest record of each.
type Key = (String, u64, u64, u64, u64, u64, String, String);

/// Extra consumer or producer arguments and environment of a run, joined.
fn extras(record: &Value) -> String {
    [
        "/consumer_args",
        "/consumer_env",
        "/producer_args",
        "/db_settings",
    ]
    .iter()
    .filter_map(|path| record.pointer(path).and_then(Value::as_array))
    .flatten()
    .filter_map(Value::as_str)
    .collect::<Vec<_>>()
    .join(" ")
}

fn key(record: &Value) -> Key {
    let u = |path: &str| record.pointer(path).and_then(Value::as_u64).unwrap_or(0);
    (
        s(record, "/payload").to_owned(),
        u("/added_latency_ms"),
        u("/items"),
        u("/consumers"),
        u("/prefetch"),
        record
            .pointer("/api_concurrency")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| u("/prefetch")),
        s(record, "/queue_type").to_owned(),
        extras(record),
    )
}

/// The latest record of each configuration, ordered by payload, latency, items, consumers.
pub fn latest(records: &[Value]) -> Vec<&Value> {
    let mut by_key: BTreeMap<_, &Value> = BTreeMap::new();
    for record in records {
        by_key.insert(key(record), record);
    }
    by_key.into_values().collect()
}

pub fn table(records: &[Value]) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | items | consumers × prefetch | added latency | payload | items/s | \
         publish→commit p50 / p95 / p99 ms | machine CPU ms/item | CPU ms/item: producer / \
         consumers / stub / RabbitMQ / Postgres | peak RSS MB: consumer (max) / producer / stub | \
         concurrency bound achieved | stub alone req/s (pipeline share) | rerun s | commit |\n",
    );
    out.push_str("|---|---:|---|---:|---|---:|---|---:|---|---|---:|---|---:|---|\n");
    for record in latest(records) {
        let ok = record
            .pointer("/ok")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut scenario = s(record, "/scenario").to_owned();
        let extra = extras(record);
        if !extra.is_empty() {
            scenario.push_str(&format!(" `{extra}`"));
        }
        if s(record, "/queue_type") != "quorum" {
            scenario.push_str(&format!(" ({} queue)", s(record, "/queue_type")));
        }
        if !ok {
            scenario.push_str(" (**failed**)");
        }
        let cpu = |what: &str| num(f(record, &format!("/cpu_s_per_1000_items/{what}")), 2);
        let bound = f(record, "/concurrency_bound/achieved").map_or_else(
            || "–".to_owned(),
            |a| {
                format!(
                    "{:.0}% of {}",
                    a * 100.0,
                    num(f(record, "/concurrency_bound/items_per_s"), 0)
                )
            },
        );
        let stub = match f(record, "/stub_alone/rps") {
            Some(rps) => format!(
                "{rps:.0} ({:.0}%)",
                f(record, "/stub_alone/pipeline_fraction").unwrap_or(0.0) * 100.0
            ),
            None => "–".to_owned(),
        };
        let api = f(record, "/api_concurrency");
        let shape = match api {
            Some(api) if Some(api) != f(record, "/prefetch") => format!(
                "{} × {} (API {api:.0})",
                num(f(record, "/consumers"), 0),
                num(f(record, "/prefetch"), 0)
            ),
            _ => format!(
                "{} × {}",
                num(f(record, "/consumers"), 0),
                num(f(record, "/prefetch"), 0)
            ),
        };
        let commit = format!(
            "{}{}",
            s(record, "/commit"),
            if record
                .pointer("/dirty")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                "+dirty"
            } else {
                ""
            }
        );
        out.push_str(&format!(
            "| {scenario} | {} | {shape} | {} ms | {} | {} | {} / {} / {} | {} | {} / {} / {} / {} / {} | {} / {} / {} | {bound} | {stub} | {} | {commit} |\n",
            num(f(record, "/items"), 0),
            num(f(record, "/added_latency_ms"), 0),
            s(record, "/payload"),
            num(f(record, "/items_per_s"), 0),
            num(f(record, "/publish_to_commit_ms/p50"), 0),
            num(f(record, "/publish_to_commit_ms/p95"), 0),
            num(f(record, "/publish_to_commit_ms/p99"), 0),
            cpu("machine"),
            cpu("producer"),
            cpu("consumers"),
            cpu("stub"),
            cpu("rabbitmq"),
            cpu("postgres"),
            num(f(record, "/peak_rss_mb/consumer_max"), 1),
            num(f(record, "/peak_rss_mb/producer"), 1),
            num(f(record, "/peak_rss_mb/stub"), 1),
            num(f(record, "/rerun/s"), 2),
        ));
    }
    out
}

/// The latest successful run of this shape at the bench's default prefetch and API
/// concurrency for its latency.
fn find<'a>(
    rows: &[&'a Value],
    payload: &str,
    latency: u64,
    items: u64,
    consumers: u64,
) -> Option<&'a Value> {
    let (prefetch, api) = if latency > 0 {
        crate::LATENCY_SHAPE
    } else {
        crate::DEFAULT_SHAPE
    };
    find_shape(
        rows,
        payload,
        latency,
        items,
        consumers,
        (u64::from(prefetch), u64::from(api)),
    )
}

/// The latest successful run of this shape, with this (prefetch, API concurrency), a quorum
/// queue and no extra arguments.
fn find_shape<'a>(
    rows: &[&'a Value],
    payload: &str,
    latency: u64,
    items: u64,
    consumers: u64,
    (prefetch, api): (u64, u64),
) -> Option<&'a Value> {
    rows.iter()
        .copied()
        .filter(|r| r.pointer("/ok").and_then(Value::as_bool).unwrap_or(false))
        .find(|r| {
            let k = key(r);
            k.0 == payload
                && k.1 == latency
                && k.2 == items
                && k.3 == consumers
                && k.4 == prefetch
                && k.5 == api
                && k.6 == "quorum"
                && k.7.is_empty()
        })
}

/// The median items/s of the last `last` successful runs of scenario (c)'s shape with
/// `consumers`, and how many runs it took.
fn recent_median(ok: &[Value], consumers: u64, last: usize) -> Option<(f64, usize)> {
    let rows: Vec<&Value> = ok.iter().collect();
    let (prefetch, api) = crate::DEFAULT_SHAPE;
    let shape = (u64::from(prefetch), u64::from(api));
    let mut rates: Vec<f64> = rows
        .iter()
        .filter(|r| find_shape(&[**r], "synthetic", 0, 20000, consumers, shape).is_some())
        .filter_map(|r| f(r, "/items_per_s"))
        .collect();
    let recent = rates.split_off(rates.len().saturating_sub(last));
    let mut sorted = recent;
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    Some((median, n))
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**MISSED**" }
}

/// The targets, each checked against the latest successful matching run (a failed run
/// shows in the table, but says nothing about a target).
pub fn targets(records: &[Value]) -> String {
    let ok: Vec<Value> = records
        .iter()
        .filter(|r| r.pointer("/ok").and_then(Value::as_bool).unwrap_or(false))
        .cloned()
        .collect();
    let rows = latest(&ok);
    let mut out = String::new();
    let missing = |what: &str| format!("- {what}: not measured yet\n");

    match find(&rows, "synthetic", 0, 20000, 2) {
        Some(r) => {
            let rate = f(r, "/items_per_s").unwrap_or(0.0);
            let cpu = f(r, "/cpu_s_per_1000_items/machine").unwrap_or(f64::MAX);
            out.push_str(&format!(
                "- (a) ≥ 3,000 items/s on 20,000 items, no latency, 2 consumers: {} ({rate:.0} items/s)\n",
                verdict(rate >= 3000.0)
            ));
            out.push_str(&format!(
                "- (a) ≤ 0.6 ms whole-machine CPU per item: {} ({cpu:.2} ms/item)\n",
                verdict(cpu <= 0.6)
            ));
        }
        None => out.push_str(&missing("(a) 20,000 items, no latency, 2 consumers")),
    }
    match find(&rows, "synthetic", 50, 20000, 2) {
        Some(r) => {
            let rate = f(r, "/items_per_s").unwrap_or(0.0);
            let achieved = f(r, "/concurrency_bound/achieved").unwrap_or(0.0);
            out.push_str(&format!(
                "- (b) 50 ms latency, ≥ 80% of the concurrency bound: {} ({:.0}% of {} items/s)\n",
                verdict(achieved >= 0.8),
                achieved * 100.0,
                num(f(r, "/concurrency_bound/items_per_s"), 0)
            ));
            out.push_str(&format!(
                "- (b) 50 ms latency, ≥ 2,000 items/s with 2 consumers: {} ({rate:.0} items/s)\n",
                verdict(rate >= 2000.0)
            ));
        }
        None => out.push_str(&missing("(b) 20,000 items, 50 ms latency, 2 consumers")),
    }
    // Runs minutes apart differ by 5-10% on a shared machine, more than the tolerance: each
    // point is the median of the last 3 runs of its shape.
    let medians: Vec<(f64, usize)> = [1, 2, 4]
        .iter()
        .filter_map(|k| recent_median(&ok, *k, 3))
        .collect();
    let runs = medians.iter().map(|(_, n)| *n).min().unwrap_or(0);
    let rates: Vec<f64> = medians.iter().map(|(rate, _)| *rate).collect();
    let series = (rates.len() == 3).then_some((crate::DEFAULT_SHAPE.0, rates));
    match series {
        Some((prefetch, rates)) => {
            // 5% tolerance for run-to-run noise.
            let met = rates[1] >= rates[0] * 0.95 && rates[2] >= rates[1] * 0.95;
            out.push_str(&format!(
                "- (c) throughput does not drop from 1 → 2 → 4 consumers (5% tolerance): {} ({:.0} → {:.0} → {:.0} items/s at prefetch {prefetch}, medians of {})\n",
                verdict(met),
                rates[0],
                rates[1],
                rates[2],
                if runs >= 3 { "the last 3 runs each".to_owned() } else { format!("at least {runs} run(s) each") }
            ));
        }
        None => out.push_str(&missing("(c) 1, 2 and 4 consumers on 20,000 items")),
    }
    let rss: Vec<(f64, String)> = rows
        .iter()
        .filter(|r| {
            let k = key(r);
            (k.4, k.5) == (64, u64::from(crate::DEFAULT_SHAPE.1)) && k.7.is_empty()
        })
        .filter_map(|r| {
            Some((
                f(r, "/peak_rss_mb/consumer_max")?,
                s(r, "/scenario").to_owned(),
            ))
        })
        .collect();
    match rss.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
        Some((mb, scenario)) => out.push_str(&format!(
            "- consumer peak RSS ≤ 40 MB at the default prefetch (64): {} (max {mb:.1} MB, in {scenario})\n",
            verdict(*mb <= 40.0)
        )),
        None => out.push_str(&missing("consumer peak RSS at prefetch 64")),
    }
    match find(&rows, "synthetic", 0, 1351, 2).and_then(|r| f(r, "/rerun/s")) {
        Some(secs) => out.push_str(&format!(
            "- (d) rerun with everything done < 2 s for 1,351 items: {} ({secs:.2} s)\n",
            verdict(secs < 2.0)
        )),
        None => out.push_str(&missing("(d) rerun of 1,351 items")),
    }
    out
}

pub const README_BEGIN: &str = "<!-- bench:results:begin -->";
pub const README_END: &str = "<!-- bench:results:end -->";

/// Replaces the text between the markers of `readme` with the table and the targets.
pub fn update_readme(readme: &Path, records: &[Value]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(readme)
        .with_context(|| format!("cannot read {}", readme.display()))?;
    let (Some(begin), Some(end)) = (text.find(README_BEGIN), text.find(README_END)) else {
        anyhow::bail!(
            "{} lacks the markers {README_BEGIN} and {README_END}",
            readme.display()
        );
    };
    anyhow::ensure!(begin < end, "the README markers are out of order");
    let generated = format!(
        "{README_BEGIN}\n<!-- generated by `cargo run --release -p bench -- --update-readme`; do not edit -->\n\n{}\nTargets (latest successful matching run):\n\n{}\n",
        table(records),
        targets(records)
    );
    let updated = format!("{}{generated}{}", &text[..begin], &text[end..]);
    std::fs::write(readme, updated).with_context(|| format!("cannot write {}", readme.display()))
}

/// The human summary of one run.
pub fn print_run(r: &Value) {
    let n = |path: &str, d: usize| num(f(r, path), d);
    println!(
        "   items/s end to end     {}  ({} items; producer exited at {} s, last commit at {} s)",
        n("/items_per_s", 0),
        n("/done", 0),
        n("/producer_s", 2),
        n("/e2e_s", 2)
    );
    println!(
        "   publish→commit ms      p50 {}  p95 {}  p99 {}  max {}  (n={}, {} without queued_at)",
        n("/publish_to_commit_ms/p50", 0),
        n("/publish_to_commit_ms/p95", 0),
        n("/publish_to_commit_ms/p99", 0),
        n("/publish_to_commit_ms/max", 0),
        n("/publish_to_commit_ms/n", 0),
        n("/publish_to_commit_ms/missing_queued_at", 0)
    );
    let c = |what: &str| n(&format!("/cpu_s_per_1000_items/{what}"), 3);
    println!(
        "   CPU s per 1000 items   machine {} = producer {} + consumers {} + stub {} + RabbitMQ {} + Postgres {} + bench {} + other {}",
        c("machine"),
        c("producer"),
        c("consumers"),
        c("stub"),
        c("rabbitmq"),
        c("postgres"),
        c("bench"),
        c("other")
    );
    let consumers: Vec<String> = r
        .pointer("/peak_rss_mb/consumers")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| num(v.as_f64(), 1)).collect())
        .unwrap_or_default();
    println!(
        "   (machine = /proc/stat busy {} minus {} used by niced foreign processes; {} cores of foreign load)",
        c("machine_raw"),
        c("foreign_niced"),
        n("/foreign_load_cores", 2)
    );
    println!(
        "   peak RSS MB            consumers {} | producer {} | stub {}",
        consumers.join(", "),
        n("/peak_rss_mb/producer", 1),
        n("/peak_rss_mb/stub", 1)
    );
    if r.pointer("/concurrency_bound")
        .is_some_and(|v| !v.is_null())
    {
        println!(
            "   concurrency bound      {} in flight / {} ms = {} items/s; achieved {}%",
            n("/concurrency_bound/in_flight", 0),
            n("/added_latency_ms", 0),
            n("/concurrency_bound/items_per_s", 0),
            num(f(r, "/concurrency_bound/achieved").map(|a| a * 100.0), 0)
        );
    }
    println!(
        "   jobs queue             ready mean {} max {}; empty while work remained in {}% of samples; unacked (mgmt, 5 s stale) mean {}",
        n("/queue/ready_mean", 0),
        n("/queue/ready_max", 0),
        num(f(r, "/queue/starved_fraction").map(|v| v * 100.0), 0),
        n("/queue/mgmt_unacked_mean", 0)
    );
    let activity = r
        .pointer("/postgres/activity")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", num(v.as_f64(), 2)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    println!(
        "   Postgres               {} xacts/item, {} ms active per xact, {} busy backends on average ({} ms busy per item), {} WAL syncs/item, {} kB WAL/item (synchronous_commit={})",
        n("/postgres/xacts_per_item", 2),
        n("/postgres/active_ms_per_xact", 3),
        n("/postgres/busy_backends_mean", 2),
        n("/postgres/busy_ms_per_item", 3),
        n("/postgres/wal_syncs_per_item", 2),
        n("/postgres/wal_kb_per_item", 1),
        s(r, "/postgres/synchronous_commit")
    );
    println!("   backends (mean count)  {activity}");
    if let Some(statements) = r.pointer("/postgres/statements").and_then(Value::as_array) {
        println!("   statements (mean active backends, by wait kind; sampled every 100 ms):");
        for statement in statements.iter().take(6) {
            println!(
                "     {:>6}  {}",
                num(f(statement, "/active_backends"), 3),
                s(statement, "/statement")
            );
        }
    }
    if r.pointer("/rerun").is_some_and(|v| !v.is_null()) {
        println!(
            "   rerun                  {} s (published {}, listed {})",
            n("/rerun/s", 3),
            n("/rerun/published", 0),
            n("/rerun/listed", 0)
        );
    }
    if r.pointer("/stub_alone").is_some_and(|v| !v.is_null()) {
        println!(
            "   stub alone             {} req/s with {} clients ({} MB/s, {} kB/body, stub {} ms CPU/req); pipeline at {}% of it",
            n("/stub_alone/rps", 0),
            n("/stub_alone/clients", 0),
            n("/stub_alone/mb_per_s", 0),
            n("/stub_alone/mean_body_kb", 0),
            n("/stub_alone/stub_cpu_ms_per_req", 3),
            num(f(r, "/stub_alone/pipeline_fraction").map(|v| v * 100.0), 0)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn latest_wins_and_targets_read_it() {
        let old = json!({"scenario": "a-20000-k2-p64-api16", "ok": true, "payload": "synthetic",
            "added_latency_ms": 0, "items": 20000, "consumers": 2, "prefetch": 64,
            "api_concurrency": 16, "queue_type": "quorum", "items_per_s": 1000.0,
            "cpu_s_per_1000_items": {"machine": 1.0}});
        let mut new = old.clone();
        new["items_per_s"] = json!(3500.0);
        new["cpu_s_per_1000_items"]["machine"] = json!(0.5);
        let records = vec![old, new];
        assert_eq!(latest(&records).len(), 1);
        let table = table(&records);
        assert!(table.contains("| 3500 |"), "{table}");
        let targets = targets(&records);
        assert!(targets.contains("≥ 3,000 items/s on 20,000 items, no latency, 2 consumers: met"));
        assert!(targets.contains("(b) 20,000 items, 50 ms latency, 2 consumers: not measured"));
    }
}
