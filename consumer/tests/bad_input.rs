//! Hostile input end to end: whatever anyone with queue access publishes, and whatever the API
//! answers, the consumer dead-letters what it cannot run with a precise reason, loses nothing,
//! stores nothing bad, and keeps running.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use pokeapi_stub::{FaultKind, FaultRule, StubConfig};
use pokeq_shared::job::{self, Job, MAX_BODY};
use support::{TestEnv, wait_until};

const SETTLE: Duration = Duration::from_secs(90);
/// The consumer cuts `x-pokeq-error` to this many bytes.
const ERROR_HEADER_MAX: usize = 1000;

fn stub(count: u32) -> StubConfig {
    StubConfig {
        count,
        ..StubConfig::default()
    }
}

/// A body nobody should be able to run, and a phrase its dead letter's reason must contain.
struct Hostile {
    body: Vec<u8>,
    says: &'static str,
}

/// A deterministic byte stream for the garbage bodies (xorshift64*).
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn job_with(v: &str, resource: &str, id: &str) -> Vec<u8> {
    format!("{{\"v\":{v},\"resource\":{resource},\"id\":{id}}}").into_bytes()
}

/// Several hundred bodies of every kind of wrong, each distinct.
fn hostile_messages() -> Vec<Hostile> {
    let mut out = Vec::new();
    let mut add = |body: Vec<u8>, says: &'static str| out.push(Hostile { body, says });

    // Unknown versions.
    for (i, v) in [
        "0",
        "2",
        "3",
        "9",
        "10",
        "100",
        "255",
        "65536",
        "4294967295",
    ]
    .iter()
    .enumerate()
    {
        for id in [1, 50 + i] {
            add(
                job_with(v, "\"pokemon\"", &id.to_string()),
                "unknown version",
            );
        }
    }
    // Unknown resources.
    for resource in [
        "evolution",
        "item",
        "berry",
        "Pokemon",
        "POKEMON",
        "pokemon ",
        " pokemon",
        "pokémon",
        "",
        "pokemon\u{0}",
        "pokemon/25",
        "../pokemon",
        "pokemon\n",
    ] {
        let text = serde_json::to_string(resource).unwrap();
        add(job_with("1", &text, "1"), "unknown resource");
    }
    let long_resource = serde_json::to_string(&"x".repeat(3000)).unwrap();
    add(job_with("1", &long_resource, "1"), "unknown resource");
    // Ids that are not positive.
    for id in [
        0,
        -1,
        -2,
        -25,
        -1025,
        -10001,
        -65536,
        i32::MIN,
        i32::MIN + 1,
    ] {
        add(
            job_with("1", "\"pokemon\"", &id.to_string()),
            "not a positive integer",
        );
    }
    // Ids that are not an i32 at all.
    for (id, says) in [
        ("2147483648", "expected i32"),
        ("4294967296", "expected i32"),
        ("9223372036854775808", "expected i32"),
        ("18446744073709551616", "expected i32"),
        ("-2147483649", "expected i32"),
        ("1e20", "expected i32"),
        ("1E3", "expected i32"),
        ("25.0", "expected i32"),
        ("25.5", "expected i32"),
        ("-0", "expected i32"),
        ("-0.0", "expected i32"),
        ("1e999", "out of range"),
        ("0x19", "expected"),
        ("025", "invalid number"),
        ("+25", "expected value"),
        ("NaN", "expected value"),
        ("Infinity", "expected value"),
    ] {
        add(job_with("1", "\"pokemon\"", id), says);
    }
    // Members of the wrong type.
    for (v, resource, id) in [
        ("\"1\"", "\"pokemon\"", "1"),
        ("1.0", "\"pokemon\"", "1"),
        ("null", "\"pokemon\"", "1"),
        ("true", "\"pokemon\"", "1"),
        ("[1]", "\"pokemon\"", "1"),
        ("1", "1", "1"),
        ("1", "null", "1"),
        ("1", "[\"pokemon\"]", "1"),
        ("1", "{\"name\":\"pokemon\"}", "1"),
        ("1", "\"pokemon\"", "\"25\""),
        ("1", "\"pokemon\"", "null"),
        ("1", "\"pokemon\"", "true"),
        ("1", "\"pokemon\"", "[25]"),
        ("1", "\"pokemon\"", "{\"id\":25}"),
    ] {
        add(job_with(v, resource, id), "invalid type");
    }
    for name in ["5", "null", "[]", "{}", "false"] {
        let body = format!("{{\"v\":1,\"resource\":\"pokemon\",\"id\":3,\"name\":{name}}}");
        add(body.into_bytes(), "invalid type");
    }
    // Not UTF-8.
    for bytes in [
        &b"\xff\xfe"[..],
        b"\xc3\x28",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\xf8\x88\x80\x80\x80",
        b"{\"v\":1,\"resource\":\"pokemon\",\"id\":1,\"name\":\"\xff\"}",
        b"{\"v\":1,\"resource\":\"pok\xe9mon\",\"id\":1}",
        b"{\"v\":1,\"resource\":\"pokemon\",\"id\":1,\"name\":\"pika\xe2\x82\"}",
        b"{\"v\":1,\"resource\":\"pokemon\",\"id\":1}\xff",
        b"\xef\xbb\xbf\xff{}",
    ] {
        add(bytes.to_vec(), "not UTF-8");
    }
    // Deep nesting, within the size cap and beyond it.
    for depth in [129, 200, 1000, 4000] {
        add("[".repeat(depth).into_bytes(), "invalid type: sequence");
    }
    add("[".repeat(10_000).into_bytes(), "limit");
    add(
        format!("{}{}", "[".repeat(2000), "]".repeat(2000)).into_bytes(),
        "invalid type: sequence",
    );
    add("{\"a\":".repeat(800).into_bytes(), "EOF while parsing");
    for member in ["id", "name", "resource"] {
        let body = format!(
            "{{\"v\":1,\"resource\":\"pokemon\",\"id\":1,\"{member}\":{}}}",
            "[".repeat(3000)
        );
        add(body.into_bytes(), "not a job");
    }
    // Over the size cap, even when the rest is a valid job.
    let padded = Job::new(5, "p".repeat(MAX_BODY)).encode();
    add(padded, "-byte limit");
    add(vec![b' '; MAX_BODY + 1], "-byte limit");
    add(vec![b'{'; MAX_BODY * 4], "-byte limit");
    add(Bytes(7).take(64 * 1024), "-byte limit");
    add(Bytes(8).take(MAX_BODY + 1), "-byte limit");
    // Nothing at all, or only blanks.
    add(Vec::new(), "EOF while parsing");
    add(b"   ".to_vec(), "EOF while parsing");
    add(b"\n\t\r\n".to_vec(), "EOF while parsing");
    // Valid JSON of other shapes.
    for (body, says) in [
        ("{}", "missing field `v`"),
        ("[]", "invalid type: sequence"),
        ("null", "invalid type: null"),
        ("true", "invalid type: boolean"),
        ("42", "invalid type: integer"),
        ("-1", "invalid type: integer"),
        ("3.14", "invalid type: floating point"),
        ("\"pokemon/25\"", "invalid type: string"),
        ("[1]", "invalid type: sequence"),
        ("[1,\"pokemon\"]", "invalid type: sequence"),
        ("[[1,\"pokemon\",25]]", "invalid type: sequence"),
        (
            "{\"job\":{\"v\":1,\"resource\":\"pokemon\",\"id\":25}}",
            "missing field `v`",
        ),
        ("{\"v\":1,\"resource\":\"pokemon\"}", "missing field `id`"),
        ("{\"v\":1,\"id\":25}", "missing field `resource`"),
        ("{\"resource\":\"pokemon\",\"id\":25}", "missing field `v`"),
        (
            "{\"V\":1,\"Resource\":\"pokemon\",\"ID\":25}",
            "missing field `v`",
        ),
        (
            "{\"v\":1,\"resource\":\"pokemon\",\"id\":1,\"id\":2}",
            "duplicate field `id`",
        ),
        (
            "{\"v\":1,\"v\":1,\"resource\":\"pokemon\",\"id\":1}",
            "duplicate field `v`",
        ),
        (
            "{\"url\":\"https://pokeapi.co/api/v2/pokemon/25/\"}",
            "missing field `v`",
        ),
        (
            "{\"v\":1,\"resource\":\"pokemon\",\"id\":1} x",
            "trailing characters",
        ),
        (
            "{\"v\":1,\"resource\":\"pokemon\",\"id\":1}{\"v\":1,\"resource\":\"pokemon\",\"id\":2}",
            "trailing characters",
        ),
        (
            "{\"v\":1,\"resource\":\"pokemon\",\"id\":1,}",
            "trailing comma",
        ),
        (
            "{'v':1,'resource':'pokemon','id':1}",
            "key must be a string",
        ),
        (
            "{\"v\":1,\"resource\":\"pokemon\",\"id\":1",
            "EOF while parsing",
        ),
        ("{\"v\":1,\"resource\":\"\\ud800\",\"id\":1}", "hex escape"),
        ("not json at all", "expected ident"),
        ("<xml/>", "expected value"),
        ("v=1&resource=pokemon&id=1", "expected value"),
        ("pokemon/25", "expected value"),
    ] {
        add(body.as_bytes().to_vec(), says);
    }
    // Binary garbage of many lengths.
    let mut garbage = Bytes(0x5EED);
    for i in 0..200 {
        let len = 1 + (i * 37) % 900;
        add(garbage.take(len), "");
    }
    out
}

/// The properties a hostile publisher might set: none, a JSON content type, or a forged id.
fn hostile_properties(i: usize) -> BasicProperties {
    match i % 4 {
        0 => BasicProperties::default(),
        1 => BasicProperties::default().with_content_type(ShortString::from("application/json")),
        2 => Job::new(1 + (i as i32 % 100), "forged").properties(),
        _ => BasicProperties::default()
            .with_content_type(ShortString::from("application/octet-stream"))
            .with_message_id(ShortString::from("pokemon/../../etc/passwd")),
    }
}

#[tokio::test]
async fn hostile_messages_are_dead_lettered_with_their_reason_and_good_jobs_all_finish() {
    let env = TestEnv::start(stub(100)).await;
    env.topology().declare(&env.channel).await.unwrap();

    let hostile = hostile_messages();
    let mut expected: HashMap<Vec<u8>, (String, &'static str)> = HashMap::new();
    for h in &hostile {
        let reason = Job::decode(&h.body)
            .expect_err("a hostile body is refused")
            .0;
        assert!(
            reason.contains(h.says),
            "{reason:?} should say {:?}",
            h.says
        );
        let previous = expected.insert(h.body.clone(), (reason, h.says));
        assert!(previous.is_none(), "hostile bodies are distinct");
    }
    assert!(hostile.len() >= 300, "{} hostile messages", hostile.len());

    // Interleave: a good job before every third hostile one, the rest at the end.
    let good: Vec<Job> = env
        .stub
        .dataset()
        .ids()
        .iter()
        .map(|&id| Job::new(id, ""))
        .collect();
    let mut good_iter = good.iter();
    for (i, h) in hostile.iter().enumerate() {
        if i % 3 == 0
            && let Some(job) = good_iter.next()
        {
            env.publish_raw(&job.encode(), job.properties()).await;
        }
        env.publish_raw(&h.body, hostile_properties(i)).await;
    }
    for job in good_iter {
        env.publish_raw(&job.encode(), job.properties()).await;
    }
    let published = hostile.len() + good.len();

    let consumer = env.spawn_consumer(&[]);
    let dead_queue = env.topology().dead();
    let counts = env.wait_settled(good.len() as i64, SETTLE).await;
    let all_dead = wait_until(SETTLE, || async {
        env.ready(&dead_queue).await as usize >= hostile.len()
    })
    .await;
    assert!(
        all_dead,
        "dead letters: {} of {}",
        env.ready(&dead_queue).await,
        hostile.len()
    );
    assert_eq!(
        (counts.done, counts.failed),
        (good.len() as i64, 0),
        "every good job done, no item failed"
    );
    assert_eq!(
        env.ready(&env.topology().jobs()).await,
        0,
        "jobs queue drained"
    );
    assert!(
        !consumer.task.is_finished(),
        "the consumer is still running after {} hostile messages",
        hostile.len()
    );

    let dead = env.drain_dead().await;
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for letter in &dead {
        let Some((reason, says)) = expected.get(&letter.body) else {
            panic!(
                "dead letter of a message never published as hostile: {:?}",
                String::from_utf8_lossy(&letter.body)
            );
        };
        assert_eq!(
            letter.kind.as_deref(),
            Some("invalid_message"),
            "kind of {:?}",
            String::from_utf8_lossy(&letter.body)
        );
        let error = letter.error.as_deref().expect("x-pokeq-error set");
        if reason.len() <= ERROR_HEADER_MAX {
            assert_eq!(error, reason, "x-pokeq-error is the decoder's reason");
        } else {
            assert!(
                reason.starts_with(error) && error.len() > ERROR_HEADER_MAX - 4,
                "{error:?} is the start of {reason:?}"
            );
        }
        assert!(error.contains(says), "{error:?} says {says:?}");
        assert_eq!(
            letter.attempts, 0,
            "no attempt counted for an undecodable message"
        );
        *seen.entry(letter.body.clone()).or_default() += 1;
    }
    assert_eq!(
        dead.len(),
        hostile.len(),
        "one dead letter per hostile message"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "no hostile message dead-lettered twice"
    );
    assert_eq!(
        counts.done as usize + dead.len(),
        published,
        "done + dead = published: nothing lost"
    );

    let client = env.client().await;
    let items: i64 = client
        .query_one("select count(*) from ingest_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        items,
        good.len() as i64,
        "no item recorded for a hostile message"
    );
    // One request per good job, and one more per retry it recorded: a transient failure is
    // possible even against the stub (see pipeline.rs), and it is not what this test is about.
    let retries: i64 = client
        .query_one(
            "select coalesce(sum(attempts - 1), 0)::int8 from ingest_items",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        env.stub.total_detail_requests(),
        good.len() as u64 + retries as u64,
        "the API is asked only for the good jobs"
    );
    drop(client);

    consumer.stop().await.expect("the consumer stops cleanly");
}

/// Writes a minimal PokeAPI document to `<dir>/pokemon/<file>.json`.
fn write_sample(dir: &Path, file: u32, name: &str, height: i32, weight: i32) {
    let document = serde_json::json!({
        "id": file,
        "name": name,
        "height": height,
        "weight": weight,
        "base_experience": 64,
        "is_default": true,
        "order": file,
        "types": [{"slot": 1, "type": {"name": "grass", "url": "https://pokeapi.co/api/v2/type/12/"}}],
        "abilities": [{"slot": 1, "is_hidden": false, "ability": {"name": "overgrow"}}],
        "stats": [{"base_stat": 45, "effort": 0, "stat": {"name": "hp"}}],
        "sprites": {"front_default": null},
        "species": {"name": name},
        "moves": []
    });
    std::fs::write(
        dir.join("pokemon").join(format!("{file}.json")),
        serde_json::to_vec(&document).unwrap(),
    )
    .unwrap();
}

/// Removes the samples directory when the test ends, passed or not.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn payloads_with_a_wrong_id_or_a_negative_size_end_malformed_and_are_never_stored() {
    let tag: u64 = rand::random();
    let dir = TempDir(std::env::temp_dir().join(format!("pokeq-bad-payloads-{tag:016x}")));
    std::fs::create_dir_all(dir.0.join("pokemon")).unwrap();
    write_sample(&dir.0, 1, "goodmon", 7, 69);
    write_sample(&dir.0, 2, "shortmon", -4, 69);
    write_sample(&dir.0, 3, "lightmon", 7, -60);
    write_sample(&dir.0, 4, "othermon", 7, 69);
    write_sample(&dir.0, 5, "finemon", 10, 100);
    let mut config = stub(5);
    config.samples_dir = Some(dir.0.clone());
    config.faults = HashMap::from([(4, FaultRule::always(FaultKind::WrongId))]);
    let env = TestEnv::start(config).await;

    env.run_producer(&[]).await;
    let consumer = env.spawn_consumer(&["--retry-delays", "100ms"]);
    let counts = env.wait_settled(5, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (2, 3));
    assert!(!consumer.task.is_finished(), "the consumer keeps running");
    consumer.stop().await.expect("the consumer stops cleanly");

    let mut dead = env.drain_dead().await;
    dead.sort_by_key(|d| d.job_id());
    let letters: Vec<_> = dead
        .iter()
        .map(|d| {
            (
                d.job_id().unwrap(),
                d.kind.clone().unwrap(),
                d.attempts,
                d.error.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(letters.len(), 3, "{letters:?}");
    for (letter, (id, phrase)) in letters.iter().zip([
        (2, "negative height -4 or weight 69"),
        (3, "negative height 7 or weight -60"),
        (4, "differs from the requested id 4"),
    ]) {
        assert_eq!(
            (letter.0, letter.1.as_str(), letter.2),
            (id, "malformed_payload", 1)
        );
        assert!(letter.3.contains(phrase), "{letter:?} says {phrase:?}");
    }
    for id in [2, 3, 4] {
        assert_eq!(
            env.stub.detail_requests(id),
            1,
            "no retry of bad payload {id}"
        );
    }

    let client = env.client().await;
    let stored: Vec<i32> = client
        .query("select id from pokemon order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stored, [1, 5], "nothing stored for a bad payload");
    let failed: Vec<(i32, String)> = client
        .query(
            "select id, error_kind from ingest_items where status = 'failed' order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        failed,
        [
            (2, "malformed_payload".to_owned()),
            (3, "malformed_payload".to_owned()),
            (4, "malformed_payload".to_owned())
        ]
    );
    drop(client);
}

/// Publishes jobs 1..=n, job `i` with the header `headers[i - 1]`, runs a consumer, and checks
/// that every job ran and the consumer is still alive afterwards.
async fn run_jobs_with_headers(headers: Vec<(&str, AMQPValue)>) {
    let n = headers.len();
    let env = TestEnv::start(stub(n as u32)).await;
    env.topology().declare(&env.channel).await.unwrap();
    for (id, (name, value)) in (1..).zip(headers) {
        let job = Job::new(id, "");
        let mut table = FieldTable::default();
        table.insert(ShortString::from(name), value);
        env.publish_raw(&job.encode(), job.properties().with_headers(table))
            .await;
    }
    let consumer = env.spawn_consumer(&["--retry-delays", "100ms"]);
    let settled = wait_until(SETTLE, || async {
        let counts = env.counts().await;
        counts.done + counts.failed >= n as i64 || consumer.task.is_finished()
    })
    .await;
    assert!(
        !consumer.task.is_finished(),
        "the consumer died on a retry header: {:?}",
        consumer.task.await
    );
    assert!(settled, "jobs not settled: {:?}", env.counts().await);
    assert_eq!(env.counts().await.done, n as i64, "every job ran");
    consumer.stop().await.expect("the consumer stops cleanly");
}

/// Retry headers are as untrusted as the body: a publisher can set any integer. An absurd
/// attempt count must not crash the consumer (`failures + 1` overflows at `u32::MAX`).
#[tokio::test]
async fn an_absurd_attempts_header_does_not_crash_the_consumer() {
    run_jobs_with_headers(vec![
        (job::ATTEMPTS_HEADER, AMQPValue::LongLongInt(-1)),
        (job::ATTEMPTS_HEADER, AMQPValue::LongString("many".into())),
        (job::ATTEMPTS_HEADER, AMQPValue::LongInt(i32::MAX)),
        (
            job::ATTEMPTS_HEADER,
            AMQPValue::LongLongInt(i64::from(u32::MAX)),
        ),
    ])
    .await;
}

/// A `not-before` time far in the past means "run now", whatever its value
/// (`not_before - now` overflows at `i64::MIN`).
#[tokio::test]
async fn a_not_before_header_far_in_the_past_does_not_crash_the_consumer() {
    run_jobs_with_headers(vec![
        (job::NOT_BEFORE_HEADER, AMQPValue::LongLongInt(-1)),
        (job::NOT_BEFORE_HEADER, AMQPValue::LongString("soon".into())),
        (job::NOT_BEFORE_HEADER, AMQPValue::LongLongInt(i64::MIN + 1)),
        (job::NOT_BEFORE_HEADER, AMQPValue::LongLongInt(i64::MIN)),
    ])
    .await;
}
