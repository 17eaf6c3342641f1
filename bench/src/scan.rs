//! `bench scan`: transform's decode (serde_json into the struct of the fields the row needs,
//! every other member skipped as `IgnoredAny`) against sonic-rs, each doing the same job: from a
//! pokemon document to those fields. Issue #13 measured shared's hand-made SIMD scanner here
//! against the same crates (bench/README.md has the figures); once it validated what it
//! skipped, serde_json was within 15% of it on compact documents, and it was removed.
//!
//! Every implementation decodes into the same borrowed struct, [`Fields`], and is first checked
//! to produce what serde_json produces on every payload measured; a difference is printed in
//! the table instead of a time. The figures are printed, never asserted: they depend on the
//! machine and on whatever else runs on it.

use std::borrow::Cow;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The top-level fields transform reads (`shared/src/transform.rs`, `FIELDS`).
const FIELDS: [&str; 12] = [
    "id",
    "name",
    "height",
    "weight",
    "base_experience",
    "types",
    "abilities",
    "stats",
    "sprites",
    "species",
    "is_default",
    "order",
];

/// transform's `Raw`, borrowing its strings from the document where it can (no escapes), so
/// that the crates which decode straight from the document are not charged for copies.
#[derive(Debug, PartialEq, Deserialize)]
pub struct Fields<'a> {
    id: i32,
    #[serde(borrow)]
    name: Cow<'a, str>,
    height: i32,
    weight: i32,
    base_experience: Option<i32>,
    #[serde(borrow)]
    types: Vec<Type<'a>>,
    #[serde(default, borrow)]
    abilities: Vec<Ability<'a>>,
    #[serde(default, borrow)]
    stats: Vec<Stat<'a>>,
    #[serde(borrow)]
    sprites: Option<Sprites<'a>>,
    #[serde(borrow)]
    species: Option<Named<'a>>,
    is_default: Option<bool>,
    order: Option<i32>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Type<'a> {
    slot: i32,
    #[serde(rename = "type", borrow)]
    kind: Named<'a>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Ability<'a> {
    slot: i32,
    #[serde(borrow)]
    ability: Option<Named<'a>>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Stat<'a> {
    base_stat: i32,
    effort: i32,
    #[serde(borrow)]
    stat: Named<'a>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Sprites<'a> {
    #[serde(borrow)]
    front_default: Option<Cow<'a, str>>,
}

/// One way of doing transform's job: decode `body` and hand the fields to `then`.
type Decode = fn(&[u8], &mut dyn FnMut(&Fields<'_>)) -> Result<(), String>;

/// The implementations, transform's first (the others' ratios are to it).
const IMPLEMENTATIONS: [(&str, Decode); 4] = [
    ("serde_json", serde_json_ignored),
    ("sonic-rs get_many", sonic_get_many),
    ("sonic-rs object iter", sonic_object_iter),
    ("sonic-rs serde", sonic_serde),
];

/// What transform does: serde_json straight from the document; serde's derive skips every
/// other member as `IgnoredAny`, which serde_json tokenises and validates.
fn serde_json_ignored(body: &[u8], then: &mut dyn FnMut(&Fields<'_>)) -> Result<(), String> {
    let fields: Fields = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    then(&fields);
    Ok(())
}

/// sonic-rs's lazy API: `get_many` finds the twelve members (skipping the others with SIMD and
/// validation) and returns their raw text; each is then decoded by sonic-rs. It stops once all
/// twelve are found, so what follows the last one is not read.
fn sonic_get_many(body: &[u8], then: &mut dyn FnMut(&Fields<'_>)) -> Result<(), String> {
    thread_local! {
        static TREE: sonic_rs::PointerTree = {
            let mut tree = sonic_rs::PointerTree::new();
            for name in FIELDS {
                tree.add_path([name]);
            }
            tree
        };
    }
    let values = TREE
        .with(|tree| sonic_rs::get_many(body, tree))
        .map_err(|e| e.to_string())?;
    then(&lazy_fields(&values)?);
    Ok(())
}

/// The twelve fields decoded from their raw text, found by a sonic-rs lazy API in `FIELDS`'
/// order.
fn lazy_fields<'v>(values: &'v [Option<sonic_rs::LazyValue<'_>>]) -> Result<Fields<'v>, String> {
    let raw = |k: usize| values[k].as_ref().map(|v| v.as_raw_str());
    Ok(Fields {
        id: required(raw(0), "id")?,
        name: required(raw(1), "name")?,
        height: required(raw(2), "height")?,
        weight: required(raw(3), "weight")?,
        base_experience: optional(raw(4))?,
        types: required(raw(5), "types")?,
        abilities: optional(raw(6))?.unwrap_or_default(),
        stats: optional(raw(7))?.unwrap_or_default(),
        sprites: optional(raw(8))?,
        species: optional(raw(9))?,
        is_default: optional(raw(10))?,
        order: optional(raw(11))?,
    })
}

/// sonic-rs's lazy object iterator: every member in turn, each value skipped with validation
/// unless it is one of the twelve; a repeated field is refused, as serde's derive does.
fn sonic_object_iter(body: &[u8], then: &mut dyn FnMut(&Fields<'_>)) -> Result<(), String> {
    let mut values: [Option<sonic_rs::LazyValue<'_>>; 12] = Default::default();
    for member in sonic_rs::to_object_iter(body) {
        let (key, value) = member.map_err(|e| e.to_string())?;
        if let Some(k) = FIELDS.iter().position(|name| *name == key)
            && values[k].replace(value).is_some()
        {
            return Err(format!("duplicate field `{key}`"));
        }
    }
    then(&lazy_fields(&values)?);
    Ok(())
}

/// sonic-rs's serde deserializer: like serde_json's, it skips the other members (with SIMD and
/// validation) as `IgnoredAny`.
fn sonic_serde(body: &[u8], then: &mut dyn FnMut(&Fields<'_>)) -> Result<(), String> {
    let fields: Fields = sonic_rs::from_slice(body).map_err(|e| e.to_string())?;
    then(&fields);
    Ok(())
}

fn required<'a, T: Deserialize<'a>>(raw: Option<&'a str>, name: &str) -> Result<T, String> {
    optional(raw)?.ok_or_else(|| format!("missing field `{name}`"))
}

/// An absent member, or `null`, is `None` (as serde's derive has it for an `Option`).
fn optional<'a, T: Deserialize<'a>>(raw: Option<&'a str>) -> Result<Option<T>, String> {
    match raw {
        None => Ok(None),
        Some(raw) => sonic_rs::from_str(raw).map_err(|e| e.to_string()),
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Real payloads: every <dir>/pokemon/*.json.
    #[arg(long, env = "POKEAPI_SAMPLES")]
    samples_dir: Option<PathBuf>,
    /// Synthetic payloads of the stub (seed 1, as the end-to-end runs): how many to generate.
    /// Each size quantile of them gets a row, and all of them one pass per round.
    #[arg(long, default_value_t = 1351)]
    stub_count: u32,
    /// Timed rounds per payload and implementation; the table shows each one's median.
    #[arg(long, default_value_t = 11)]
    rounds: u32,
    /// Shortest round in milliseconds: a round repeats the decode until it lasts this long.
    #[arg(long, default_value_t = 20)]
    round_ms: u64,
}

/// A row of the table: the median time per payload of each implementation (an error where it
/// failed or produced something else than serde_json).
struct Row {
    label: String,
    bytes: usize,
    micros: Vec<Result<f64, String>>,
}

pub fn main(args: &Args) -> anyhow::Result<()> {
    let round = Duration::from_millis(args.round_ms);
    let mut sets = Vec::new();
    if let Some(dir) = &args.samples_dir {
        let files = samples(dir)?;
        let compact = files
            .iter()
            .map(|(name, body)| Ok((name.clone(), compact(body)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        sets.push(("real samples", files));
        sets.push(("real samples, compact", compact));
    } else {
        eprintln!("bench scan: no --samples-dir or POKEAPI_SAMPLES: real samples not measured");
    }
    sets.push(("stub payloads", stub(args.stub_count)));

    println!(
        "bench scan: µs per payload, median of {} rounds of at least {} ms each; \
         (×N) is the time relative to serde_json, transform's decode (lower is faster)\n",
        args.rounds, args.round_ms
    );
    print_rejections();
    for (set, payloads) in sets {
        let mut rows: Vec<Row> = payloads
            .iter()
            .map(|(label, body)| measure_one(label, body, args.rounds, round))
            .collect();
        let summary = summarize(set, &rows);
        if set == "stub payloads" {
            rows.push(measure_all(&stub_all(args.stub_count), args.rounds, round));
        }
        print_table(set, &rows);
        println!("{summary}");
    }
    Ok(())
}

/// Every `<dir>/pokemon/*.json`, smallest first.
fn samples(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let dir = dir.join("pokemon");
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let body =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let name = path
                .file_name()
                .map_or_else(String::new, |n| format!("pokemon/{}", n.to_string_lossy()));
            files.push((name, body));
        }
    }
    if files.is_empty() {
        bail!("no pokemon/*.json in {}", dir.display());
    }
    files.sort_by_key(|(_, body)| body.len());
    Ok(files)
}

/// A sample as the live API and the stub send it: compact (the files of PokeAPI's static dump
/// are indented, which is 40% to 60% of their bytes).
fn compact(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(body).context("a sample is not JSON")?;
    Ok(serde_json::to_vec(&value)?)
}

/// The quantiles of the stub's payload sizes that get a row each.
const QUANTILES: [(&str, f64); 7] = [
    ("min", 0.0),
    ("p10", 0.1),
    ("p25", 0.25),
    ("median", 0.5),
    ("p75", 0.75),
    ("p90", 0.9),
    ("max", 1.0),
];

/// The stub's payloads at the size quantiles of [`QUANTILES`].
fn stub(count: u32) -> Vec<(String, Vec<u8>)> {
    let mut all = stub_all(count);
    all.sort_by_key(Vec::len);
    QUANTILES
        .iter()
        .map(|(name, q)| {
            let k = ((all.len() - 1) as f64 * q).round() as usize;
            (format!("stub {name} (seed 1)"), all[k].clone())
        })
        .collect()
}

fn stub_all(count: u32) -> Vec<Vec<u8>> {
    let dataset = pokeapi_stub::Dataset::synthetic(count.max(1), 1);
    dataset
        .ids()
        .iter()
        .filter_map(|&id| dataset.payload(id))
        .map(|body| body.to_vec())
        .collect()
}

/// The implementations on one payload: first checked against serde_json, then timed in
/// interleaved rounds (so that a burst of foreign load hits them all alike).
fn measure_one(label: &str, body: &[u8], rounds: u32, round: Duration) -> Row {
    let reference = describe(IMPLEMENTATIONS[0].1, body);
    let mut ok: Vec<Result<(), String>> = IMPLEMENTATIONS
        .iter()
        .map(|(_, decode)| match (&reference, describe(*decode, body)) {
            (Ok(expected), Ok(got)) if *expected == got => Ok(()),
            (Ok(_), Ok(_)) => Err("differs".to_owned()),
            (_, Err(error)) => Err(format!("error: {error}")),
            (Err(_), Ok(_)) => Err("serde_json failed".to_owned()),
        })
        .collect();
    let mut samples = vec![Vec::new(); IMPLEMENTATIONS.len()];
    let mut iterations = vec![0u32; IMPLEMENTATIONS.len()];
    for _ in 0..rounds {
        for (k, (_, decode)) in IMPLEMENTATIONS.iter().enumerate() {
            if ok[k].is_err() {
                continue;
            }
            let once = || {
                decode(black_box(body), &mut |fields| {
                    black_box(fields);
                })
            };
            if iterations[k] == 0 {
                iterations[k] = calibrate(&once, round);
            }
            let start = Instant::now();
            for _ in 0..iterations[k] {
                if let Err(error) = once() {
                    ok[k] = Err(format!("error: {error}"));
                }
            }
            samples[k].push(start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations[k]));
        }
    }
    Row {
        label: label.to_owned(),
        bytes: body.len(),
        micros: ok
            .into_iter()
            .zip(samples)
            .map(|(ok, mut samples)| ok.map(|()| median(&mut samples)))
            .collect(),
    }
}

/// One pass over every payload per round, per implementation: the mean over the whole
/// distribution of sizes, weighted as the end-to-end runs weigh it.
fn measure_all(payloads: &[Vec<u8>], rounds: u32, round: Duration) -> Row {
    let mut ok: Vec<Result<(), String>> = vec![Ok(()); IMPLEMENTATIONS.len()];
    for body in payloads {
        let reference = describe(IMPLEMENTATIONS[0].1, body);
        for (k, (_, decode)) in IMPLEMENTATIONS.iter().enumerate() {
            if ok[k].is_ok() && describe(*decode, body) != reference {
                ok[k] = Err("differs".to_owned());
            }
        }
    }
    let mut samples = vec![Vec::new(); IMPLEMENTATIONS.len()];
    for _ in 0..rounds.div_ceil(2).max(3) {
        for (k, (_, decode)) in IMPLEMENTATIONS.iter().enumerate() {
            if ok[k].is_err() {
                continue;
            }
            let start = Instant::now();
            let mut passes = 0u32;
            while passes == 0 || start.elapsed() < round {
                for body in payloads {
                    if decode(black_box(body), &mut |fields| {
                        black_box(fields);
                    })
                    .is_err()
                    {
                        ok[k] = Err("error".to_owned());
                    }
                }
                passes += 1;
            }
            let per_payload = start.elapsed().as_secs_f64() * 1e6
                / (f64::from(passes) * payloads.len().max(1) as f64);
            samples[k].push(per_payload);
        }
    }
    let bytes = payloads.iter().map(Vec::len).sum::<usize>() / payloads.len().max(1);
    Row {
        label: format!("stub, all {} payloads (mean; bytes: mean)", payloads.len()),
        bytes,
        micros: ok
            .into_iter()
            .zip(samples)
            .map(|(ok, mut samples)| ok.map(|()| median(&mut samples)))
            .collect(),
    }
}

/// How many repetitions make a round last at least `round`.
fn calibrate(once: &dyn Fn() -> Result<(), String>, round: Duration) -> u32 {
    let mut n = 1u32;
    loop {
        let start = Instant::now();
        for _ in 0..n {
            let _ = once();
        }
        let elapsed = start.elapsed();
        if elapsed >= round / 4 || n >= 1 << 20 {
            let per = elapsed.as_secs_f64() / f64::from(n);
            return ((round.as_secs_f64() / per.max(1e-9)).ceil() as u32).clamp(1, 1 << 22);
        }
        n *= 2;
    }
}

/// The decoded fields as text, to compare implementations; or why decoding failed.
fn describe(decode: Decode, body: &[u8]) -> Result<String, String> {
    let mut text = String::new();
    decode(body, &mut |fields| text = format!("{fields:?}"))?;
    Ok(text)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    match samples.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => samples[n / 2],
        n => (samples[n / 2 - 1] + samples[n / 2]) / 2.0,
    }
}

fn print_table(set: &str, rows: &[Row]) {
    println!("### {set}\n");
    let names: Vec<&str> = IMPLEMENTATIONS.iter().map(|(name, _)| *name).collect();
    println!("| payload | bytes | {} µs |", names.join(" µs | "));
    println!("|---|---:|{}", "---:|".repeat(names.len()));
    for row in rows {
        let base = row.micros[0].as_ref().ok().copied();
        let cells: Vec<String> = row
            .micros
            .iter()
            .enumerate()
            .map(|(k, cell)| match (cell, base) {
                (Ok(us), _) if k == 0 => format!("{us:.1}"),
                (Ok(us), Some(base)) => format!("{us:.1} (×{:.2})", us / base),
                (Ok(us), None) => format!("{us:.1}"),
                (Err(why), _) => why.clone(),
            })
            .collect();
        println!("| {} | {} | {} |", row.label, row.bytes, cells.join(" | "));
    }
    println!();
}

/// Per implementation: the total over the set's rows (each payload once) against
/// serde_json's, and the median of the per-payload ratios.
fn summarize(set: &str, rows: &[Row]) -> String {
    let mut lines = vec![format!(
        "{set}, {} payloads: total µs (ratio of totals) / median per-payload ratio",
        rows.len()
    )];
    let total = |k: usize| -> Option<f64> {
        rows.iter()
            .map(|r| r.micros[k].as_ref().ok().copied())
            .sum()
    };
    let base = total(0);
    for (k, (name, _)) in IMPLEMENTATIONS.iter().enumerate() {
        let mut ratios: Vec<f64> = rows
            .iter()
            .filter_map(|r| Some(r.micros[k].as_ref().ok()? / r.micros[0].as_ref().ok()?))
            .collect();
        let line = match (total(k), base) {
            (Some(t), Some(b)) => format!(
                "- {name}: {t:.0} µs (×{:.2}) / ×{:.2}",
                t / b,
                median(&mut ratios)
            ),
            _ => format!("- {name}: failed on some payload"),
        };
        lines.push(line);
    }
    lines.join("\n") + "\n"
}

/// Documents that are valid but for one member the row does not read, and whether each
/// implementation refuses them as serde_json does.
fn print_rejections() {
    const HEAD: &str = r#"{"id":1,"name":"a","height":1,"weight":1,"types":[{"slot":1,"type":{"name":"t"}}],"moves":"#;
    let cases: [(&str, String); 14] = [
        ("`[1,,2]`", format!("{HEAD}[1,,2]}}")),
        ("`[1,]`", format!("{HEAD}[1,]}}")),
        (r#"`{"a":1,}`"#, format!("{HEAD}{{\"a\":1,}}}}")),
        (r#"`{"a" 1}`"#, format!("{HEAD}{{\"a\" 1}}}}")),
        ("`tru`", format!("{HEAD}tru}}")),
        ("`01`", format!("{HEAD}01}}")),
        ("`1.`", format!("{HEAD}1.}}")),
        ("`-`", format!("{HEAD}-}}")),
        ("`\"\\x\"`", format!("{HEAD}\"\\x\"}}")),
        ("`\"\\u12\"`", format!("{HEAD}\"\\u12\"}}")),
        ("tab in a string", format!("{HEAD}\"a\tb\"}}")),
        ("`[1 2]`", format!("{HEAD}[1 2]}}")),
        ("after the last field: `,\"x\":[1,,2]`", {
            let mut body = format!("{HEAD}[]}}");
            body.pop();
            body + r#","order":1,"is_default":true,"species":null,"sprites":null,"stats":[],"abilities":[],"base_experience":1,"x":[1,,2]}"#
        }),
        ("trailing `x` after the object", format!("{HEAD}[]}} x")),
    ];
    println!("### Refusals of a damaged member the row does not read\n");
    let names: Vec<&str> = IMPLEMENTATIONS.iter().map(|(name, _)| *name).collect();
    println!("| member | serde_json::Value | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    for (label, body) in &cases {
        let value = serde_json::from_str::<serde_json::Value>(body).is_ok();
        let verdict = |accepted: bool| if accepted { "accepts" } else { "refuses" };
        let cells: Vec<&str> = IMPLEMENTATIONS
            .iter()
            .map(|(_, decode)| verdict(describe(*decode, body.as_bytes()).is_ok()))
            .collect();
        println!("| {label} | {} | {} |", verdict(value), cells.join(" | "));
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The comparison is only fair if every implementation does transform's job: the same
    /// fields out of the same payloads.
    #[test]
    fn every_implementation_decodes_what_serde_json_decodes() {
        for body in stub_all(40) {
            let expected = describe(serde_json_ignored, &body).unwrap();
            for (name, decode) in IMPLEMENTATIONS {
                assert_eq!(describe(decode, &body).as_ref(), Ok(&expected), "{name}");
            }
        }
    }
}
