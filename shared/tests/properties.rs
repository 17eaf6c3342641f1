//! Properties of the two decoders of untrusted input: `Job::decode` (a message body anyone with
//! queue access can publish) and `transform` (a document fetched from the API). Neither may
//! panic; each either accepts exactly what the contract calls valid or refuses with a reason.
//!
//! Case counts are kept small enough for a debug run on 2 cores; set `POKEQ_PROPTEST_SCALE=10`
//! (a multiplier) for a longer search. `POKEAPI_SAMPLES` seeds the payload properties with real
//! payloads; without it the stub's synthetic payloads are the seeds.

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use pokeq_shared::job::{InvalidMessage, Job, MAX_BODY, RESOURCE, VERSION};
use pokeq_shared::transform::{MalformedPayload, transform};
use proptest::prelude::*;
use proptest::sample::Index;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::{Value, json};

fn config(cases: u32) -> ProptestConfig {
    let scale = std::env::var("POKEQ_PROPTEST_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    ProptestConfig {
        cases: cases * scale,
        // A failure prints its minimal input; no regression file is written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The job decoder
// ---------------------------------------------------------------------------------------------

/// How every refusal of `Job::decode` starts: each names what was wrong.
const JOB_REASONS: [&str; 6] = [
    "body of ",
    "body is not UTF-8: ",
    "body is not a job: ",
    "unknown version v=",
    "unknown resource ",
    "id ",
];

/// The members of a JSON object, duplicates kept; values of members a job does not have are
/// skipped as `Job::decode` skips them (without a depth limit), so they cannot change the answer.
struct Members(Vec<(String, Option<Value>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = if ["v", "resource", "id", "name"].contains(&key.as_str()) {
                        Some(map.next_value::<Value>()?)
                    } else {
                        map.next_value::<IgnoredAny>()?;
                        None
                    };
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// The job the contract says `body` is, if any: at most `MAX_BODY` bytes of UTF-8 holding one
/// JSON object with `v` = 1, `resource` = "pokemon", an integer `id` in 1..=2^31-1 and `name`
/// absent or a string, none of them twice; other members are ignored.
fn contract_job(body: &[u8]) -> Option<Job> {
    if body.len() > MAX_BODY {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let Members(members) = serde_json::from_str(text).ok()?;
    let mut seen = HashSet::new();
    let (mut v, mut resource, mut id, mut name) = (None, None, None, None);
    for (key, value) in members {
        let Some(value) = value else { continue };
        if !seen.insert(key.clone()) {
            return None;
        }
        match key.as_str() {
            "v" => v = Some(value),
            "resource" => resource = Some(value),
            "id" => id = Some(value),
            _ => name = Some(value),
        }
    }
    if v?.as_i64()? != i64::from(VERSION) || resource?.as_str()? != RESOURCE {
        return None;
    }
    let id = i32::try_from(id?.as_i64()?).ok().filter(|id| *id > 0)?;
    let name = match name {
        None => String::new(),
        Some(Value::String(name)) => name,
        Some(_) => return None,
    };
    Some(Job::new(id, name))
}

/// A JSON array at top level, which serde lets stand for a struct (see `a_json_array_is_not_a_job`).
fn is_top_level_array(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// The decision on `body` is the contract's: a job that round-trips, or a precise refusal.
fn check_job_decision(
    body: &[u8],
    decoded: Result<Job, InvalidMessage>,
) -> Result<(), TestCaseError> {
    let lossy = String::from_utf8_lossy(body);
    match decoded {
        Ok(job) => {
            prop_assert_eq!(job.v, VERSION);
            prop_assert_eq!(&job.resource, RESOURCE);
            prop_assert!(job.id > 0, "accepted id {} from {:?}", job.id, lossy);
            prop_assert_eq!(Job::decode(&job.encode()), Ok(job.clone()), "round trip");
            if !is_top_level_array(body) {
                prop_assert_eq!(
                    contract_job(body),
                    Some(job),
                    "accepted a body that is not a valid job: {:?}",
                    lossy
                );
            }
        }
        Err(InvalidMessage(reason)) => {
            prop_assert!(
                JOB_REASONS.iter().any(|r| reason.starts_with(r))
                    && reason.len() > "body is not a job: ".len(),
                "imprecise reason {:?} for {:?}",
                reason,
                lossy
            );
            prop_assert_eq!(
                contract_job(body),
                None,
                "refused a valid job ({}): {:?}",
                reason,
                lossy
            );
        }
    }
    Ok(())
}

/// Any JSON value, nested a few levels.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[a-z]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,8}|v|id|name|resource", inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// An object shaped like a job, each member right, wrong or missing.
fn arb_job_value() -> impl Strategy<Value = Value> {
    let v = prop_oneof![
        4 => Just(Some(json!(1))),
        1 => prop_oneof![Just(json!(0)), Just(json!(2)), Just(json!(1.0)), Just(json!("1"))].prop_map(Some),
        1 => arb_json().prop_map(Some),
        1 => Just(None),
    ];
    let resource = prop_oneof![
        4 => Just(Some(json!("pokemon"))),
        1 => prop_oneof![Just(json!("berry")), Just(json!("Pokemon")), Just(json!(""))].prop_map(Some),
        1 => arb_json().prop_map(Some),
        1 => Just(None),
    ];
    let id = prop_oneof![
        3 => (1..=i32::MAX).prop_map(|id| Some(json!(id))),
        2 => prop_oneof![
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!(i32::MIN)),
            Just(json!(i64::from(i32::MAX) + 1)),
            Just(json!(u64::MAX)),
            Just(json!(1e20)),
            Just(json!(25.0)),
            Just(json!("25")),
        ]
        .prop_map(Some),
        1 => any::<i64>().prop_map(|id| Some(json!(id))),
        1 => arb_json().prop_map(Some),
        1 => Just(None),
    ];
    let name = prop_oneof![
        3 => any::<String>().prop_map(|n| Some(json!(n))),
        1 => arb_json().prop_map(Some),
        2 => Just(None),
    ];
    let extra = prop::collection::vec(("[a-z_]{1,6}", arb_json()), 0..3);
    (v, resource, id, name, extra).prop_map(|(v, resource, id, name, extra)| {
        let mut object = serde_json::Map::new();
        for (key, value) in [("v", v), ("resource", resource), ("id", id), ("name", name)] {
            if let Some(value) = value {
                object.insert(key.into(), value);
            }
        }
        for (key, value) in extra {
            object.entry(key).or_insert(value);
        }
        Value::Object(object)
    })
}

/// Raw JSON text for an `id` member, including forms no JSON value prints (overflows, hex, +).
static ID_TEXTS: [&str; 22] = [
    "0",
    "-0",
    "-1",
    "-2147483648",
    "2147483647",
    "2147483648",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999",
    "1e20",
    "1E3",
    "25.0",
    "25.5",
    "0x19",
    "025",
    "+25",
    "NaN",
    "Infinity",
    "\"25\"",
    "null",
    "[25]",
    "{\"id\":25}",
];

/// The text of one member value of a job body: usually right, else a wrong type or literal.
fn member_text(
    right: BoxedStrategy<String>,
    literals: &'static [&'static str],
) -> BoxedStrategy<String> {
    prop_oneof![
        6 => right,
        2 => prop::sample::select(literals).prop_map(str::to_owned),
        1 => arb_json().prop_map(|v| v.to_string()),
        1 => (1usize..200).prop_map(|depth| "[".repeat(depth) + &"]".repeat(depth)),
        1 => (100usize..4000).prop_map(|depth| "[".repeat(depth)),
    ]
    .boxed()
}

/// A byte-level mutation, applied at a position taken modulo the body's length.
#[derive(Debug, Clone)]
enum ByteEdit {
    Flip { at: Index, mask: u8 },
    Truncate { at: Index },
    Insert { at: Index, bytes: Vec<u8> },
    Delete { at: Index, len: usize },
    Duplicate { at: Index, len: usize },
}

fn arb_byte_edit() -> impl Strategy<Value = ByteEdit> {
    let snippet = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..8),
        prop::sample::select(vec![
            &b"\""[..],
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b":",
            b"-",
            b"0",
            b"\\",
            b"\\u0000",
            b"\\ud800",
            b"\xff",
            b"\xc3\x28",
            b"null",
            b"1e999",
            b" ",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(at, mask)| ByteEdit::Flip { at, mask }),
        any::<Index>().prop_map(|at| ByteEdit::Truncate { at }),
        (any::<Index>(), snippet).prop_map(|(at, bytes)| ByteEdit::Insert { at, bytes }),
        (any::<Index>(), 1..64usize).prop_map(|(at, len)| ByteEdit::Delete { at, len }),
        (any::<Index>(), 1..64usize).prop_map(|(at, len)| ByteEdit::Duplicate { at, len }),
    ]
}

fn apply(body: &mut Vec<u8>, edit: &ByteEdit) {
    let at = |index: &Index| {
        if body.is_empty() {
            0
        } else {
            index.index(body.len())
        }
    };
    match edit {
        ByteEdit::Flip { at: i, mask } => {
            if !body.is_empty() {
                let i = at(i);
                body[i] ^= mask;
            }
        }
        ByteEdit::Truncate { at: i } => {
            let i = at(i);
            body.truncate(i);
        }
        ByteEdit::Insert { at: i, bytes } => {
            let i = at(i);
            body.splice(i..i, bytes.iter().copied());
        }
        ByteEdit::Delete { at: i, len } => {
            let i = at(i);
            let end = (i + len).min(body.len());
            body.drain(i..end);
        }
        ByteEdit::Duplicate { at: i, len } => {
            let i = at(i);
            let end = (i + len).min(body.len());
            let copy = body[i..end].to_vec();
            body.splice(end..end, copy);
        }
    }
}

/// A job body built member by member from text, then edited byte by byte.
fn arb_mutated_job() -> impl Strategy<Value = Vec<u8>> {
    let v = member_text(
        Just("1".to_owned()).boxed(),
        &["0", "2", "-1", "1.0", "4294967297", "\"1\"", "null", "true"],
    );
    let resource = member_text(
        Just("\"pokemon\"".to_owned()).boxed(),
        &[
            "\"berry\"",
            "\"Pokemon\"",
            "\"pokemon \"",
            "\"pok\\u0065mon\"",
            "\"\"",
            "null",
            "1",
            "[\"pokemon\"]",
        ],
    );
    let id = member_text(
        (1..=i32::MAX).prop_map(|id| id.to_string()).boxed(),
        &ID_TEXTS,
    );
    let name = prop_oneof![
        any::<String>().prop_map(|n| Some(Value::String(n).to_string())),
        Just(None),
        Just(Some("null".to_owned())),
        Just(Some("\"\\ud800\"".to_owned())),
        Just(Some(format!("\"{}\"", "x".repeat(MAX_BODY)))),
    ];
    let shape = prop_oneof![
        6 => Just(0u8), // as written
        1 => Just(1),   // a member twice
        1 => Just(2),   // reordered
    ];
    let edits = prop::collection::vec(arb_byte_edit(), 0..3);
    (v, resource, id, name, shape, edits).prop_map(|(v, resource, id, name, shape, edits)| {
        let mut members = vec![
            format!("\"v\":{v}"),
            format!("\"resource\":{resource}"),
            format!("\"id\":{id}"),
        ];
        if let Some(name) = name {
            members.push(format!("\"name\":{name}"));
        }
        match shape {
            1 => members.push(members[2].clone()),
            2 => members.reverse(),
            _ => {}
        }
        let mut body = format!("{{{}}}", members.join(",")).into_bytes();
        for edit in &edits {
            apply(&mut body, edit);
        }
        body
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn job_decode_of_arbitrary_bytes_accepts_only_valid_jobs(
        body in prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..256),
            2 => any::<String>().prop_map(String::into_bytes),
            2 => "[\\[\\]{}:,\" 0-9a-z.eE+-]{0,64}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), MAX_BODY - 4..MAX_BODY + 4),
        ]
    ) {
        check_job_decision(&body, Job::decode(&body))?;
    }

    #[test]
    fn job_decode_of_arbitrary_json_accepts_exactly_the_contract_jobs(
        value in prop_oneof![arb_json(), arb_job_value(), arb_job_value()]
    ) {
        let body = serde_json::to_vec(&value).unwrap();
        check_job_decision(&body, Job::decode(&body))?;
    }

    #[test]
    fn job_decode_of_mutated_jobs_accepts_only_valid_jobs(body in arb_mutated_job()) {
        check_job_decision(&body, Job::decode(&body))?;
    }

    #[test]
    fn every_valid_job_is_accepted_and_round_trips(id in 1..=i32::MAX, name in any::<String>()) {
        let job = Job::new(id, name);
        let body = job.encode();
        prop_assume!(body.len() <= MAX_BODY);
        prop_assert_eq!(Job::decode(&body), Ok(job));
    }
}

#[test]
fn job_decode_refuses_deep_nesting_with_a_reason() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        ("[".repeat(10_000).into_bytes(), "limit"),
        ("[".repeat(4_000).into_bytes(), "not a job"),
        ("{\"a\":".repeat(800).into_bytes(), "not a job"),
        (
            format!(
                "{{\"v\":1,\"resource\":\"pokemon\",\"id\":1,\"name\":{}}}",
                "[".repeat(4_000)
            )
            .into_bytes(),
            "not a job",
        ),
        (
            format!(
                "{{\"v\":1,\"resource\":\"pokemon\",\"id\":{}1{}}}",
                "[".repeat(2_000),
                "]".repeat(2_000)
            )
            .into_bytes(),
            "not a job",
        ),
    ];
    for (body, reason) in cases {
        let error = Job::decode(&body).expect_err("deep nesting refused");
        assert!(error.0.contains(reason), "{error} should say {reason}");
        check_job_decision(&body, Err(error)).unwrap();
    }
}

#[test]
fn job_decode_ignores_a_deeply_nested_unknown_member() {
    let body = format!(
        "{{\"v\":1,\"resource\":\"pokemon\",\"id\":7,\"x\":{}{}}}",
        "[".repeat(2_000),
        "]".repeat(2_000)
    );
    let decoded = Job::decode(body.as_bytes());
    assert_eq!(decoded, Ok(Job::new(7, "")));
}

#[test]
fn job_decode_refuses_absurd_ids_with_a_reason() {
    for id in ID_TEXTS {
        let body = format!("{{\"v\":1,\"resource\":\"pokemon\",\"id\":{id}}}");
        let decoded = Job::decode(body.as_bytes());
        if id == "2147483647" {
            assert_eq!(decoded, Ok(Job::new(i32::MAX, "")));
        } else {
            let error = decoded.expect_err(id);
            assert!(!error.0.is_empty());
        }
        check_job_decision(body.as_bytes(), Job::decode(body.as_bytes())).unwrap();
    }
}

/// The contract's job body is a JSON object. serde's derived `Deserialize` also reads a struct
/// from a sequence, so `[1,"pokemon",25]` decodes as job 25 unless `Job::decode` refuses arrays.
#[test]
fn a_json_array_is_not_a_job() {
    for body in [
        &br#"[1,"pokemon",25]"#[..],
        br#"[1,"pokemon",25,"pikachu"]"#,
    ] {
        let decoded = Job::decode(body);
        assert!(
            decoded.is_err(),
            "{} decoded as {decoded:?}",
            String::from_utf8_lossy(body)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The payload decoder
// ---------------------------------------------------------------------------------------------

/// One document `transform` accepts as is, and the id it is requested under.
struct Seed {
    id: i32,
    body: Vec<u8>,
}

/// Whole payloads (most are 10 KB to 1 MB), and the same with the big arrays cut, as `Value`s.
struct Seeds {
    big: Vec<Seed>,
    small: Vec<(i32, Value)>,
}

fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let big: Vec<Seed> = match std::env::var_os("POKEAPI_SAMPLES") {
            Some(dir) => {
                let dir = std::path::Path::new(&dir).join("pokemon");
                let mut seeds: Vec<Seed> = std::fs::read_dir(&dir)
                    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                    .map(|entry| {
                        let body = std::fs::read(entry.unwrap().path()).unwrap();
                        let id = serde_json::from_slice::<Value>(&body).unwrap()["id"]
                            .as_i64()
                            .unwrap() as i32;
                        Seed { id, body }
                    })
                    .collect();
                seeds.sort_by_key(|s| s.id);
                seeds
            }
            None => {
                let dataset = pokeapi_stub::Dataset::synthetic(8, 11);
                dataset
                    .ids()
                    .iter()
                    .map(|&id| Seed {
                        id,
                        body: dataset.payload(id).unwrap().to_vec(),
                    })
                    .collect()
            }
        };
        assert!(!big.is_empty(), "no seed payloads");
        let small = big
            .iter()
            .map(|seed| {
                let mut value: Value = serde_json::from_slice(&seed.body).unwrap();
                let object = value.as_object_mut().unwrap();
                for key in [
                    "moves",
                    "game_indices",
                    "held_items",
                    "cries",
                    "past_abilities",
                ] {
                    object.remove(key);
                }
                let sprite = object
                    .get("sprites")
                    .and_then(|s| s.get("front_default"))
                    .cloned();
                object.insert("sprites".into(), json!({ "front_default": sprite }));
                (seed.id, value)
            })
            .collect();
        Seeds { big, small }
    })
}

/// The result of `transform` is a row true to the request, or a refusal with a reason.
fn check_transform(requested: i32, body: &[u8]) -> Result<(), TestCaseError> {
    match transform(requested, body) {
        Ok(pokemon) => {
            prop_assert_eq!(pokemon.id, requested);
            prop_assert!(pokemon.height >= 0, "height {}", pokemon.height);
            prop_assert!(pokemon.weight >= 0, "weight {}", pokemon.weight);
            prop_assert!(!pokemon.types.is_empty(), "no types");
            prop_assert!(!pokemon.name.trim().is_empty(), "blank name");
            let strings = [&pokemon.name]
                .into_iter()
                .chain(&pokemon.types)
                .chain(&pokemon.abilities)
                .chain(pokemon.stats.iter().map(|s| &s.name))
                .chain(&pokemon.sprite)
                .chain(&pokemon.species);
            for text in strings {
                prop_assert!(!text.contains('\0'), "NUL in a stored string: {:?}", text);
            }
        }
        Err(MalformedPayload(reason)) => {
            prop_assert!(!reason.trim().is_empty(), "refusal without a reason");
        }
    }
    Ok(())
}

/// Values that break a field's type or range.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec![
            json!(-1),
            json!(0),
            json!(i32::MIN),
            json!(i64::from(i32::MAX) + 1),
            json!(1e20),
            json!(4.5),
            json!(""),
            json!("   "),
            json!("25"),
            json!("nul\u{0}inside"),
            Value::Null,
            json!(true),
            json!([]),
            json!({}),
            json!([{}]),
            json!([{"slot": 1}]),
            json!([{"slot": 1, "type": null}]),
            json!([{"slot": "1", "type": {"name": "fire"}}]),
            json!({"name": null}),
            json!({"front_default": 5}),
        ]),
        1 => arb_json(),
        1 => (1usize..300).prop_map(|depth| {
            let text = "[".repeat(depth) + &"]".repeat(depth);
            serde_json::from_str(&text).unwrap_or(Value::Null)
        }),
    ]
}

/// A change to a decoded payload: a member replaced, removed, or an element of a list broken.
#[derive(Debug, Clone)]
enum FieldEdit {
    Set(&'static str, Value),
    Remove(&'static str),
    SetInList {
        list: &'static str,
        at: Index,
        key: &'static str,
        value: Value,
    },
    Empty(&'static str),
}

static FIELDS: [&str; 13] = [
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
    "forms",
];

fn arb_field_edit() -> impl Strategy<Value = FieldEdit> {
    prop_oneof![
        3 => (prop::sample::select(&FIELDS[..]), hostile_value())
            .prop_map(|(field, value)| FieldEdit::Set(field, value)),
        1 => prop::sample::select(&FIELDS[..]).prop_map(FieldEdit::Remove),
        2 => (
            prop::sample::select(vec!["types", "abilities", "stats"]),
            any::<Index>(),
            prop::sample::select(vec!["slot", "type", "ability", "stat", "base_stat", "effort", "name"]),
            hostile_value(),
        )
            .prop_map(|(list, at, key, value)| FieldEdit::SetInList { list, at, key, value }),
        1 => prop::sample::select(vec!["types", "abilities", "stats"]).prop_map(FieldEdit::Empty),
    ]
}

fn edit_value(value: &mut Value, edit: &FieldEdit) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    match edit {
        FieldEdit::Set(field, new) => {
            object.insert((*field).into(), new.clone());
        }
        FieldEdit::Remove(field) => {
            object.remove(*field);
        }
        FieldEdit::SetInList {
            list,
            at,
            key,
            value,
        } => {
            if let Some(items) = object.get_mut(*list).and_then(Value::as_array_mut)
                && !items.is_empty()
            {
                let i = at.index(items.len());
                if let Some(item) = items[i].as_object_mut() {
                    item.insert((*key).into(), value.clone());
                }
            }
        }
        FieldEdit::Empty(list) => {
            object.insert((*list).into(), json!([]));
        }
    }
}

/// Whether `value`, requested as `requested`, breaks a rule `transform` enforces (so it must be
/// refused whatever else is in it).
fn must_refuse(requested: i32, value: &Value) -> Option<String> {
    let int = |key: &str| value.get(key).and_then(Value::as_i64);
    if int("id").is_some_and(|id| id != i64::from(requested)) {
        return Some(format!("id {:?} for {requested}", value.get("id")));
    }
    for key in ["height", "weight"] {
        if int(key).is_some_and(|n| n < 0) {
            return Some(format!("negative {key}"));
        }
    }
    if value
        .get("types")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        return Some("no types".into());
    }
    if value
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| n.trim().is_empty())
    {
        return Some("blank name".into());
    }
    if value
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| n.contains('\0'))
    {
        return Some("NUL in the name".into());
    }
    None
}

fn requested_id(id: i32) -> impl Strategy<Value = i32> {
    prop_oneof![
        6 => Just(id),
        1 => any::<i32>(),
        1 => Just(id.wrapping_add(1)),
    ]
}

#[test]
fn every_seed_payload_transforms() {
    let seeds = seeds();
    for seed in &seeds.big {
        let pokemon = transform(seed.id, &seed.body).unwrap_or_else(|e| panic!("{}: {e}", seed.id));
        assert_eq!(pokemon.id, seed.id);
    }
    for (id, value) in &seeds.small {
        transform(*id, &serde_json::to_vec(value).unwrap()).unwrap();
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn transform_of_arbitrary_bytes_never_panics(
        requested in any::<i32>(),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            "[\\[\\]{}:,\" 0-9a-z.eE+-]{0,128}".prop_map(String::into_bytes),
        ]
    ) {
        check_transform(requested, &body)?;
    }

    #[test]
    fn transform_of_arbitrary_json_never_panics(requested in any::<i32>(), value in arb_json()) {
        check_transform(requested, &serde_json::to_vec(&value).unwrap())?;
    }

    #[test]
    fn transform_of_edited_small_payloads_keeps_its_rules(
        (requested, mut value) in (any::<Index>())
            .prop_flat_map(|at| {
                let (id, value) = seeds().small[at.index(seeds().small.len())].clone();
                (requested_id(id), Just(value))
            }),
        field_edits in prop::collection::vec(arb_field_edit(), 1..4),
        byte_edits in prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec(arb_byte_edit(), 1..4),
        ],
    ) {
        for edit in &field_edits {
            edit_value(&mut value, edit);
        }
        let mut body = serde_json::to_vec(&value).unwrap();
        for edit in &byte_edits {
            apply(&mut body, edit);
        }
        check_transform(requested, &body)?;
        if byte_edits.is_empty()
            && let Some(rule) = must_refuse(requested, &value)
        {
            prop_assert!(transform(requested, &body).is_err(), "accepted despite {}", rule);
        }
    }
}

proptest! {
    // Whole payloads are 10 KB to 1 MB: few cases, byte edits only (no re-serialising).
    #![proptest_config(config(24))]

    #[test]
    fn transform_of_mutated_big_payloads_never_panics(
        (requested, seed) in any::<Index>().prop_flat_map(|at| {
            let i = at.index(seeds().big.len());
            (requested_id(seeds().big[i].id), Just(i))
        }),
        edits in prop::collection::vec(arb_byte_edit(), 1..6),
    ) {
        let mut body = seeds().big[seed].body.clone();
        for edit in &edits {
            apply(&mut body, edit);
        }
        check_transform(requested, &body)?;
    }
}

#[test]
fn transform_refuses_deep_nesting_without_overflowing_the_stack() {
    for depth in [10_000, 1_000_000] {
        let open = "[".repeat(depth);
        for body in [
            open.clone(),
            format!("{{\"id\":1,\"name\":\"x\",\"types\":{open}"),
            format!("{{\"id\":1,\"types\":[{{\"slot\":1,\"type\":{{\"name\":{open}"),
            format!("{{\"x\":{open}"),
        ] {
            let error = transform(1, body.as_bytes()).expect_err("deep nesting refused");
            assert!(
                error.0.starts_with("payload is not a PokeAPI pokemon: "),
                "{error}"
            );
        }
    }
}

#[test]
fn transform_skips_a_deeply_nested_member_it_does_not_read() {
    let (id, value) = &seeds().small[0];
    let mut body = serde_json::to_vec(value).unwrap();
    body.pop(); // the closing brace
    let depth = 100_000;
    body.extend_from_slice(b",\"moves\":");
    body.extend(std::iter::repeat_n(b'[', depth));
    body.extend(std::iter::repeat_n(b']', depth));
    body.push(b'}');
    let pokemon = transform(*id, &body).expect("unread member skipped");
    assert_eq!(pokemon.id, *id);
}

// ---------------------------------------------------------------------------------------------
// The other resources' transforms
// ---------------------------------------------------------------------------------------------

/// Documents of the other resources the transforms accept as they are: the real ones with
/// `POKEAPI_SAMPLES`, the stub's otherwise, a few of each resource.
fn resource_seeds() -> &'static Vec<(&'static str, i32, Vec<u8>)> {
    static SEEDS: OnceLock<Vec<(&'static str, i32, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds = Vec::new();
        for resource in pokeq_shared::resources::ALL {
            let name = resource.name();
            match std::env::var_os("POKEAPI_SAMPLES") {
                Some(dir) => {
                    let dir = std::path::Path::new(&dir).join(name);
                    // A resource without real samples is seeded by none.
                    for entry in std::fs::read_dir(&dir).into_iter().flatten() {
                        let body = std::fs::read(entry.unwrap().path()).unwrap();
                        let id = serde_json::from_slice::<Value>(&body).unwrap()["id"]
                            .as_i64()
                            .unwrap() as i32;
                        seeds.push((name, id, body));
                    }
                }
                None => {
                    let dataset = pokeapi_stub::Dataset::synthetic(40, 11);
                    let stub = pokeapi_stub::Resource::from_name(name).unwrap();
                    for &id in dataset.resource_ids(stub).iter().take(4) {
                        seeds.push((name, id, dataset.document(stub, id).unwrap().to_vec()));
                    }
                }
            }
        }
        assert!(!seeds.is_empty(), "no seed documents");
        seeds
    })
}

/// A resource's transform gives a record true to the request, storable by Postgres, or a
/// refusal with a reason.
fn check_resource_transform(
    resource: &str,
    requested: i32,
    body: &[u8],
) -> Result<(), TestCaseError> {
    let kind = pokeq_shared::resources::by_name(resource).unwrap();
    match kind.transform(requested, body) {
        Ok(record) => {
            prop_assert_eq!(record.id(), requested);
            prop_assert_eq!(record.resource().name(), resource);
            prop_assert!(
                !record.row().to_string().contains("\\u0000"),
                "NUL in a stored row"
            );
            prop_assert!(
                serde_json::from_str::<Value>(record.document()).is_ok(),
                "the stored document is not JSON"
            );
        }
        Err(MalformedPayload(reason)) => {
            prop_assert!(!reason.trim().is_empty(), "refusal without a reason");
        }
    }
    Ok(())
}

#[test]
fn every_resource_seed_transforms() {
    for (resource, id, body) in resource_seeds() {
        let kind = pokeq_shared::resources::by_name(resource).unwrap();
        let record = kind
            .transform(*id, body)
            .unwrap_or_else(|e| panic!("{resource} {id}: {e}"));
        assert_eq!(record.id(), *id);
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn resource_transforms_of_mutated_documents_never_panic(
        (requested, seed) in any::<Index>().prop_flat_map(|at| {
            let i = at.index(resource_seeds().len());
            (requested_id(resource_seeds()[i].1), Just(i))
        }),
        edits in prop::collection::vec(arb_byte_edit(), 1..6),
    ) {
        let (resource, _, body) = &resource_seeds()[seed];
        let mut body = body.clone();
        for edit in &edits {
            apply(&mut body, edit);
        }
        check_resource_transform(resource, requested, &body)?;
    }

    #[test]
    fn resource_transforms_of_arbitrary_json_never_panic(
        resource in prop::sample::select(
            pokeq_shared::resources::ALL.iter().map(|r| r.name()).collect::<Vec<_>>()
        ),
        requested in any::<i32>(),
        value in arb_json(),
    ) {
        check_resource_transform(resource, requested, &serde_json::to_vec(&value).unwrap())?;
    }
}
