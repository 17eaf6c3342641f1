//! `pokeq dead ...`: read, replay and purge the dead-letter queue over AMQP.
//!
//! Every command takes messages with `basic.get` *without* acknowledging them and holds them
//! until it is done, then acknowledges only those it replayed or purged and hands the rest back
//! (`basic.nack` with requeue, in their original order: the dead queue is classic, which keeps
//! positions and counts no deliveries). A CLI killed half-way therefore loses nothing: the
//! broker returns every unacknowledged message when the connection drops. Replay publishes the
//! new job (confirmed) and updates the item *before* acknowledging the dead letter, so the worst
//! a crash can do is leave a job both replayed and still dead, and the consumer's `done` check
//! absorbs the duplicate.
//!
//! While a command runs, the letters it holds are invisible to other readers of the dead queue
//! (another `pokeq dead list` sees fewer); they reappear when it ends.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::builder::PossibleValuesParser;
use clap::{ArgGroup, Args, Subcommand};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use pokeq_shared::broker;
use pokeq_shared::config::Common;
use pokeq_shared::job::{self, Job, RESOURCE};
use pokeq_shared::shutdown::CancellationToken;
use pokeq_shared::store::Store;
use pokeq_shared::topology::Topology;
use serde::Serialize;
use serde_json::{Value, json};

use crate::inspect;
use crate::probe::{self, ProbeError};
use crate::table::{Align, Table, age, clip};
use crate::{Console, UsageError};

/// The kinds a dead letter can have: the consumer's `x-pokeq-error-kind` values, the broker's
/// dead-lettering reasons (`delivery_limit` above all: a job that crashed or stalled every
/// consumer that took it), and `unknown` for a message with neither.
pub const KINDS: &[&str] = &[
    "not_found",
    "malformed_payload",
    "invalid_message",
    "exhausted",
    "delivery_limit",
    "rejected",
    "expired",
    "maxlen",
    "unknown",
];

/// Headers that describe a past failure; a replayed job starts clean without them.
const DEATH_HEADER: &str = "x-death";

#[derive(Debug, Clone, Subcommand)]
pub enum DeadCommand {
    /// List dead letters; nothing is removed (every message taken is handed back).
    List(ListArgs),
    /// Everything about one item's dead letter(s), and its ingest_items row.
    Show(ShowArgs),
    /// Publish chosen dead letters to the jobs queue again, attempts reset, items `queued`.
    Replay(ReplayArgs),
    /// Remove dead letters of one kind for good; their items stay `failed`.
    Purge(PurgeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only letters of this kind.
    #[arg(long, value_parser = PossibleValuesParser::new(KINDS))]
    pub kind: Option<String>,

    /// Show at most this many; the queue is read only as far as needed.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,

    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The pokemon id.
    pub id: i32,

    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("selection")
        .args(["kind", "id", "all"])
        .required(true)
        .multiple(true)
))]
pub struct ReplayArgs {
    /// Letters of this kind. Letters whose body is not a job (no id) are replayed only with
    /// `--kind invalid_message`: anything else would send them to die again unnoticed.
    #[arg(long, value_parser = PossibleValuesParser::new(KINDS))]
    pub kind: Option<String>,

    /// Letters of these pokemon ids (`--id 1 2 3` or `--id 1 --id 2`); with --kind, both must
    /// match.
    #[arg(long, num_args = 1.., value_name = "ID")]
    pub id: Vec<i32>,

    /// Every letter that holds a job (letters without an id are kept).
    #[arg(long, conflicts_with_all = ["kind", "id"])]
    pub all: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// Letters of this kind.
    #[arg(long, value_parser = PossibleValuesParser::new(KINDS))]
    pub kind: String,

    /// Do not ask; required when stdin is not a terminal.
    #[arg(long)]
    pub yes: bool,
}

pub async fn run(
    common: &Common,
    command: &DeadCommand,
    shutdown: &CancellationToken,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    match command {
        DeadCommand::List(args) => list(common, args, console).await,
        DeadCommand::Show(args) => show(common, args, console).await,
        DeadCommand::Replay(args) => replay(common, args, shutdown, console).await,
        DeadCommand::Purge(args) => purge(common, args, shutdown, console).await,
    }
}

/// A dead letter taken from the queue and not yet settled, with what its headers say.
pub struct Letter {
    delivery: Delivery,
    /// The job in the body, `None` when the body is not a job this build can read.
    pub job: Option<Job>,
    pub kind: String,
    pub error: Option<String>,
    pub attempts: u32,
    /// Unix time (seconds) from the `timestamp` property, else the broker's last `x-death` time.
    pub dead_at: Option<u64>,
}

impl Letter {
    pub fn new(delivery: Delivery) -> Self {
        let properties = &delivery.properties;
        let deaths = x_death(properties);
        let last_death = deaths.first().copied();
        let kind = job::header_text(properties, job::ERROR_KIND_HEADER)
            .or_else(|| job::header_text(properties, "x-last-death-reason"))
            .or_else(|| last_death.and_then(|d| table_text(d, "reason")))
            .unwrap_or_else(|| "unknown".to_owned());
        let error = job::header_text(properties, job::ERROR_HEADER).or_else(|| {
            last_death.map(|death| {
                format!(
                    "dead-lettered by the broker from {}: {} (count {})",
                    table_text(death, "queue").unwrap_or_else(|| "?".into()),
                    table_text(death, "reason").unwrap_or_else(|| "?".into()),
                    death
                        .inner()
                        .get("count")
                        .and_then(amqp_int)
                        .map_or_else(|| "?".to_owned(), |n| n.to_string()),
                )
            })
        });
        let dead_at = properties
            .timestamp()
            .or_else(|| match last_death?.inner().get("time")? {
                AMQPValue::Timestamp(time) => Some(*time),
                _ => None,
            });
        Self {
            job: Job::decode(&delivery.data).ok(),
            kind,
            error,
            attempts: job::attempts(properties),
            dead_at,
            delivery,
        }
    }

    pub fn id(&self) -> Option<i32> {
        self.job.as_ref().map(|job| job.id)
    }

    fn age_seconds(&self, now: u64) -> Option<u64> {
        self.dead_at.map(|at| now.saturating_sub(at))
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.delivery.data).into_owned()
    }

    /// What `list --json` shows of a letter.
    fn summary(&self, now: u64) -> Value {
        json!({
            "id": self.id(),
            "name": self.job.as_ref().map(|job| job.name.clone()),
            "kind": self.kind,
            "error": self.error,
            "attempts": self.attempts,
            "dead_at": self.dead_at,
            "age_seconds": self.age_seconds(now),
            "message_id": self.delivery.properties.message_id().as_ref().map(|s| s.to_string()),
            "body": self.body_text(),
        })
    }

    /// What `show --json` shows: the summary plus every property and header.
    fn detail(&self, now: u64) -> Value {
        let mut value = self.summary(now);
        value["properties"] = properties_json(&self.delivery.properties);
        value["headers"] = self
            .delivery
            .properties
            .headers()
            .as_ref()
            .map_or_else(|| json!({}), table_json);
        value["redelivered"] = json!(self.delivery.redelivered);
        value
    }
}

/// The broker's `x-death` entries, most recent first.
fn x_death(properties: &BasicProperties) -> Vec<&FieldTable> {
    let Some(headers) = properties.headers().as_ref() else {
        return Vec::new();
    };
    match headers.inner().get(DEATH_HEADER) {
        Some(AMQPValue::FieldArray(entries)) => entries
            .as_slice()
            .iter()
            .filter_map(|entry| match entry {
                AMQPValue::FieldTable(table) => Some(table),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn table_text(table: &FieldTable, key: &str) -> Option<String> {
    match table.inner().get(key)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

fn amqp_int(value: &AMQPValue) -> Option<i64> {
    match *value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(n)),
        AMQPValue::ShortInt(n) => Some(i64::from(n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(n)),
        AMQPValue::LongInt(n) => Some(i64::from(n)),
        AMQPValue::LongUInt(n) => Some(i64::from(n)),
        AMQPValue::LongLongInt(n) => Some(n),
        AMQPValue::Timestamp(n) => i64::try_from(n).ok(),
        _ => None,
    }
}

/// An AMQP value as JSON, for people and scripts reading headers.
pub fn amqp_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(text) => json!(text.as_str()),
        AMQPValue::LongString(text) => json!(String::from_utf8_lossy(text.as_bytes())),
        AMQPValue::FieldArray(values) => {
            Value::Array(values.as_slice().iter().map(amqp_json).collect())
        }
        AMQPValue::FieldTable(table) => table_json(table),
        AMQPValue::ByteArray(bytes) => json!(String::from_utf8_lossy(bytes.as_slice())),
        AMQPValue::Void => Value::Null,
        other => amqp_int(other).map_or(Value::Null, |n| json!(n)),
    }
}

fn table_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(key, value)| (key.to_string(), amqp_json(value)))
            .collect(),
    )
}

fn properties_json(properties: &BasicProperties) -> Value {
    let text = |value: &Option<ShortString>| value.as_ref().map(|s| s.to_string());
    let mut map = BTreeMap::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            map.insert(key.to_owned(), value);
        }
    };
    put("content_type", json!(text(properties.content_type())));
    put(
        "content_encoding",
        json!(text(properties.content_encoding())),
    );
    put("delivery_mode", json!(properties.delivery_mode()));
    put("priority", json!(properties.priority()));
    put("correlation_id", json!(text(properties.correlation_id())));
    put("reply_to", json!(text(properties.reply_to())));
    put("expiration", json!(text(properties.expiration())));
    put("message_id", json!(text(properties.message_id())));
    put("timestamp", json!(properties.timestamp()));
    put("type", json!(text(properties.kind())));
    put("user_id", json!(text(properties.user_id())));
    put("app_id", json!(text(properties.app_id())));
    json!(map)
}

/// The properties of a replayed job: the original ones (id, content type, trace context) without
/// any record of past failures (pokeq's `x-pokeq-*`, the broker's `x-death`, `x-first-death-*`,
/// `x-last-death-*` and `x-delivery-count`), so the consumer counts attempts from zero;
/// persistent.
pub fn fresh_properties(original: &BasicProperties) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(old) = original.headers().as_ref() {
        for (key, value) in old.inner() {
            let key_text = key.as_str();
            let failure = key_text.starts_with("x-pokeq-")
                || key_text == DEATH_HEADER
                || key_text == "x-delivery-count"
                || key_text.starts_with("x-first-death-")
                || key_text.starts_with("x-last-death-");
            if !failure {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    original.clone().with_headers(headers).with_delivery_mode(2)
}

/// One connection to the broker whose dead queue exists, and the names of the topology.
struct Session {
    connection: Connection,
    channel: Channel,
    topology: Topology,
}

/// Letters taken and not yet settled, in queue order.
struct Held {
    letters: Vec<Letter>,
    /// Messages in the dead queue when the first one was taken.
    total: u64,
}

impl Session {
    async fn open(common: &Common) -> anyhow::Result<Self> {
        let connection = broker::connect(
            common.amqp_url.expose(),
            "pokeq-ctl",
            common.extra_ca.as_deref(),
        )
        .await?;
        // Checked, never declared: a mistyped prefix must read as "nothing there", not create
        // an empty dead queue that lists as "no dead letters".
        let topology = Topology::without_retries(&common.prefix, common.queue_type);
        let vhost = inspect::vhost(common.amqp_url.expose());
        if let Err(error) =
            inspect::require(&connection, &topology.dead(), &common.prefix, &vhost).await
        {
            broker::close(&connection).await;
            return Err(error);
        }
        let channel = connection.create_channel().await?;
        Ok(Self {
            connection,
            channel,
            topology,
        })
    }

    /// A session on the queues as they are, for commands that only read: nothing is declared,
    /// and `None` when the dead queue does not exist.
    async fn existing(common: &Common) -> anyhow::Result<Option<Self>> {
        let connection = broker::connect_once(
            common.amqp_url.expose(),
            "pokeq-ctl",
            common.extra_ca.as_deref(),
        )
        .await?;
        let topology = Topology::without_retries(&common.prefix, common.queue_type);
        let channel = connection.create_channel().await?;
        match probe::passive_declare(&channel, &topology.dead()).await {
            Ok(_) => Ok(Some(Self {
                connection,
                channel,
                topology,
            })),
            Err(ProbeError::NotFound) => {
                broker::close(&connection).await;
                Ok(None)
            }
            Err(error) => {
                broker::close(&connection).await;
                Err(error.into())
            }
        }
    }

    /// Takes messages from the dead queue, unacknowledged, until it is empty or `enough`
    /// (called with each new letter) says stop. On an error everything taken is handed back.
    async fn take(&self, mut enough: impl FnMut(&Letter) -> bool) -> anyhow::Result<Held> {
        let mut held = Held {
            letters: Vec::new(),
            total: 0,
        };
        let queue = self.topology.dead();
        loop {
            let got = self
                .channel
                .basic_get(
                    ShortString::from(queue.as_str()),
                    BasicGetOptions { no_ack: false },
                )
                .await;
            let message = match got {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(error) => {
                    give_back(held.letters.iter()).await;
                    return Err(error).with_context(|| format!("reading {queue}"));
                }
            };
            if held.letters.is_empty() {
                held.total = u64::from(message.message_count) + 1;
            }
            let letter = Letter::new(message.delivery);
            let stop = enough(&letter);
            held.letters.push(letter);
            if stop {
                break;
            }
        }
        Ok(held)
    }

    /// Closes the channel first, so that the broker has processed every ack and nack before
    /// this returns (a test or a script reading the queue next sees the final depth).
    async fn close(self) {
        broker::close_channel(&self.channel).await;
        broker::close(&self.connection).await;
    }
}

/// Hands letters back to the dead queue. A letter whose channel already closed needs nothing:
/// the broker requeued it then.
async fn give_back<'a>(letters: impl Iterator<Item = &'a Letter>) {
    for letter in letters {
        let requeue = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        if let Err(error) = letter.delivery.acker.nack(requeue).await {
            tracing::warn!(%error, "cannot hand a dead letter back; the broker will on disconnect");
        }
    }
}

/// Removes a letter from the dead queue; an error if the broker cannot have received the ack.
async fn remove(letter: &Letter) -> anyhow::Result<()> {
    let acked = letter
        .delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .context("acknowledging a dead letter")?;
    anyhow::ensure!(
        acked,
        "the channel closed before a dead letter could be acknowledged"
    );
    Ok(())
}

fn now() -> u64 {
    pokeq_shared::job::unix_seconds()
}

fn id_text(letter: &Letter) -> String {
    letter
        .id()
        .map_or_else(|| "-".to_owned(), |id| id.to_string())
}

async fn list(common: &Common, args: &ListArgs, console: &mut Console<'_>) -> anyhow::Result<()> {
    let session = Session::open(common).await?;
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let matches = |letter: &Letter| args.kind.as_ref().is_none_or(|k| &letter.kind == k);
    let mut matched = 0;
    let held = session
        .take(|letter| {
            if matches(letter) {
                matched += 1;
            }
            matched >= limit
        })
        .await?;
    let now = now();
    let shown: Vec<&Letter> = held.letters.iter().filter(|l| matches(l)).collect();
    let more_may_match = shown.len() >= limit && (held.letters.len() as u64) < held.total;
    let text = if args.json {
        let document = json!({
            "queue": session.topology.dead(),
            "depth": held.total,
            "kind": args.kind,
            "shown": shown.len(),
            "limit_reached": more_may_match,
            "letters": shown.iter().map(|l| l.summary(now)).collect::<Vec<_>>(),
        });
        format!("{}\n", serde_json::to_string_pretty(&document)?)
    } else {
        let mut table = Table::new(&[
            ("ID", Align::Right),
            ("NAME", Align::Left),
            ("KIND", Align::Left),
            ("ATTEMPTS", Align::Right),
            ("AGE", Align::Right),
            ("ERROR", Align::Left),
        ]);
        for letter in &shown {
            table.row(vec![
                id_text(letter),
                letter
                    .job
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |j| j.name.clone()),
                letter.kind.clone(),
                letter.attempts.to_string(),
                letter.age_seconds(now).map_or_else(|| "-".to_owned(), age),
                clip(letter.error.as_deref().unwrap_or("-"), 100),
            ]);
        }
        let mut text = if table.is_empty() {
            String::new()
        } else {
            table.render("")
        };
        text.push_str(&format!(
            "{} shown, {} in {}",
            shown.len(),
            held.total,
            session.topology.dead()
        ));
        if more_may_match {
            text.push_str(&format!(
                " (limit {limit} reached; raise --limit to see more)"
            ));
        }
        text.push('\n');
        text
    };
    // Everything goes back before anything is printed: a closed stdout must not keep letters.
    give_back(held.letters.iter()).await;
    session.close().await;
    console.out.write_all(text.as_bytes())?;
    Ok(())
}

/// The dead letters of item `id`, each as `list --json` shows it, read as `show` reads them
/// (taken without acknowledging, every one handed back) but declaring nothing: `None` when the
/// dead queue does not exist.
pub async fn letters_of(common: &Common, id: i32) -> anyhow::Result<Option<Vec<Value>>> {
    let Some(session) = Session::existing(common).await? else {
        return Ok(None);
    };
    let held = match session.take(|_| false).await {
        Ok(held) => held,
        Err(error) => {
            session.close().await;
            return Err(error);
        }
    };
    let now = now();
    let mine = held
        .letters
        .iter()
        .filter(|letter| letter.id() == Some(id))
        .map(|letter| letter.summary(now))
        .collect();
    give_back(held.letters.iter()).await;
    session.close().await;
    Ok(Some(mine))
}

/// An `ingest_items` row, as `show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ItemRow {
    pub id: i32,
    pub name: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub error_kind: Option<String>,
    pub updated_at: String,
}

async fn item_row(common: &Common, id: i32) -> anyhow::Result<Option<ItemRow>> {
    let store = crate::open_store(common).await?;
    let client = store.pool().get().await?;
    let row = client
        .query_opt(
            r#"select id, name, status, attempts, last_error, error_kind,
                      to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
               from ingest_items where resource = $1 and id = $2"#,
            &[&RESOURCE, &id],
        )
        .await?;
    Ok(row.map(|row| ItemRow {
        id: row.get(0),
        name: row.get(1),
        status: row.get(2),
        attempts: row.get(3),
        last_error: row.get(4),
        error_kind: row.get(5),
        updated_at: row.get(6),
    }))
}

async fn show(common: &Common, args: &ShowArgs, console: &mut Console<'_>) -> anyhow::Result<()> {
    // The item first, so that no letter is held while Postgres is slow; a database that cannot
    // answer does not hide the letters.
    let item = item_row(common, args.id)
        .await
        .map_err(|e| format!("{e:#}"));
    let session = Session::open(common).await?;
    let held = session.take(|_| false).await?;
    let now = now();
    let mine: Vec<&Letter> = held
        .letters
        .iter()
        .filter(|l| l.id() == Some(args.id))
        .collect();
    let text = if args.json {
        let document = json!({
            "id": args.id,
            "letters": mine.iter().map(|l| l.detail(now)).collect::<Vec<_>>(),
            "item": item.as_ref().ok(),
            "item_error": item.as_ref().err(),
        });
        format!("{}\n", serde_json::to_string_pretty(&document)?)
    } else {
        show_text(args.id, &mine, &item, now)
    };
    let found = mine.len();
    give_back(held.letters.iter()).await;
    session.close().await;
    console.out.write_all(text.as_bytes())?;
    // Either part missing is a failure (exit 1), after everything known was printed.
    let mut missing = Vec::new();
    if found == 0 {
        missing.push(format!(
            "no dead letter for {RESOURCE} {} in {}",
            args.id,
            common.prefix.clone() + ".dead"
        ));
    }
    if let Err(error) = &item {
        missing.push(format!("item {RESOURCE} {} unavailable: {error}", args.id));
    }
    anyhow::ensure!(missing.is_empty(), "{}", missing.join("; "));
    Ok(())
}

fn show_text(
    id: i32,
    letters: &[&Letter],
    item: &Result<Option<ItemRow>, String>,
    now: u64,
) -> String {
    let mut text = String::new();
    if letters.is_empty() {
        text.push_str(&format!("No dead letter for {RESOURCE} {id}\n"));
    }
    for (n, letter) in letters.iter().enumerate() {
        text.push_str(&format!(
            "Dead letter {} of {} for {RESOURCE} {id}\n",
            n + 1,
            letters.len()
        ));
        let mut fields = Table::new(&[("FIELD", Align::Left), ("VALUE", Align::Left)]);
        fields.row(vec!["kind".into(), letter.kind.clone()]);
        fields.row(vec![
            "error".into(),
            letter.error.clone().unwrap_or_else(|| "-".into()),
        ]);
        fields.row(vec!["attempts".into(), letter.attempts.to_string()]);
        fields.row(vec![
            "age".into(),
            letter.age_seconds(now).map_or_else(|| "-".to_owned(), age),
        ]);
        fields.row(vec!["body".into(), letter.body_text()]);
        if let Value::Object(properties) = properties_json(&letter.delivery.properties) {
            for (key, value) in properties {
                fields.row(vec![format!("property {key}"), plain(&value)]);
            }
        }
        if let Some(headers) = letter.delivery.properties.headers().as_ref() {
            // pokeq's own headers are the kind, error and attempts rows above.
            let shown = [
                job::ERROR_KIND_HEADER,
                job::ERROR_HEADER,
                job::ATTEMPTS_HEADER,
            ];
            for (key, value) in headers.inner() {
                if !shown.contains(&key.as_str()) {
                    fields.row(vec![format!("header {key}"), plain(&amqp_json(value))]);
                }
            }
        }
        text.push_str(&fields.render("  "));
    }
    text.push_str(&format!("Item {RESOURCE} {id}\n"));
    match item {
        Ok(Some(row)) => {
            text.push_str(&format!(
                "  status {}, attempts {}, error_kind {}, updated {}\n",
                row.status,
                row.attempts,
                row.error_kind.as_deref().unwrap_or("-"),
                row.updated_at
            ));
            if let Some(error) = &row.last_error {
                text.push_str(&format!("  last_error {error}\n"));
            }
        }
        Ok(None) => text.push_str("  no ingest_items row\n"),
        Err(error) => text.push_str(&format!("  unavailable: {error}\n")),
    }
    text
}

/// A JSON value for people: strings without quotes, the rest compact.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl ReplayArgs {
    fn chooses(&self, letter: &Letter) -> bool {
        if self.all {
            return letter.job.is_some();
        }
        let kind = self.kind.as_ref().is_none_or(|k| &letter.kind == k);
        let id = self.id.is_empty() || letter.id().is_some_and(|id| self.id.contains(&id));
        let readable = letter.job.is_some() || self.kind.as_deref() == Some("invalid_message");
        kind && id && readable
    }
}

async fn replay(
    common: &Common,
    args: &ReplayArgs,
    shutdown: &CancellationToken,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    // Postgres first: a replay must update items, so it does not start without them.
    let store = crate::open_store(common).await?;
    let session = Session::open(common).await?;
    let vhost = inspect::vhost(common.amqp_url.expose());
    let jobs = session.topology.jobs();
    if let Err(error) = inspect::require(&session.connection, &jobs, &common.prefix, &vhost).await {
        session.close().await;
        return Err(error);
    }
    let publish = broker::confirm_channel(&session.connection).await?;
    let held = session.take(|_| false).await?;
    let mut replayed = 0usize;
    let mut failure = None;
    let mut kept = Vec::new();
    let mut lines = String::new();
    for letter in &held.letters {
        if failure.is_some() || shutdown.is_cancelled() || !args.chooses(letter) {
            kept.push(letter);
            continue;
        }
        match replay_one(&session.topology, &publish, &store, letter).await {
            Ok(()) => {
                replayed += 1;
                lines.push_str(&format!("replayed {} ({})\n", id_text(letter), letter.kind));
            }
            Err(error) => {
                failure = Some(error);
                kept.push(letter);
            }
        }
    }
    give_back(kept.iter().copied()).await;
    let _ = publish.close(200, ShortString::from("done")).await;
    session.close().await;
    console.out.write_all(lines.as_bytes())?;
    writeln!(console.out, "replayed={replayed} kept={}", kept.len())?;
    match failure {
        Some(error) => Err(error.context("replay stopped; the letters not replayed were kept")),
        None => Ok(()),
    }
}

/// Publish (confirmed), then the item back to `queued`, then the ack: each step only once the
/// previous one is certain.
async fn replay_one(
    topology: &Topology,
    publish: &Channel,
    store: &Store,
    letter: &Letter,
) -> anyhow::Result<()> {
    broker::publish(
        publish,
        &topology.jobs(),
        RESOURCE,
        &letter.delivery.data,
        fresh_properties(&letter.delivery.properties),
    )
    .await
    .with_context(|| format!("publishing {} to {}", id_text(letter), topology.jobs()))?;
    if let Some(job) = &letter.job {
        store
            .requeue_for_replay(job.id, &job.name)
            .await
            .with_context(|| format!("marking item {} queued", job.id))?;
    }
    remove(letter).await
}

async fn purge(
    common: &Common,
    args: &PurgeArgs,
    shutdown: &CancellationToken,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    if !args.yes && console.input.is_none() {
        return Err(UsageError(
            "refusing to purge: stdin is not a terminal, so nobody can confirm; pass --yes".into(),
        )
        .into());
    }
    let store = crate::open_store(common).await?;
    let session = Session::open(common).await?;
    let held = session.take(|_| false).await?;
    let chosen: Vec<&Letter> = held
        .letters
        .iter()
        .filter(|l| l.kind == args.kind)
        .collect();

    let confirmed = if chosen.is_empty() || args.yes {
        true
    } else if let Some(input) = console.input.as_mut() {
        write!(
            console.out,
            "Purge {} dead letters of kind {}? [y/N] ",
            chosen.len(),
            args.kind
        )?;
        console.out.flush()?;
        let mut answer = String::new();
        input.read_line(&mut answer)?;
        matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    } else {
        false
    };

    let mut purged = 0usize;
    let mut failure = None;
    let mut kept = Vec::new();
    for letter in &held.letters {
        let wanted = confirmed && letter.kind == args.kind;
        if !wanted || failure.is_some() || shutdown.is_cancelled() {
            kept.push(letter);
            continue;
        }
        match purge_one(&store, letter).await {
            Ok(()) => purged += 1,
            Err(error) => {
                failure = Some(error);
                kept.push(letter);
            }
        }
    }
    give_back(kept.iter().copied()).await;
    session.close().await;
    if !confirmed {
        writeln!(console.out, "not confirmed; nothing purged")?;
    }
    writeln!(console.out, "purged={purged}")?;
    // A declined purge did not do what was asked: a script must not read it as done.
    anyhow::ensure!(confirmed, "the purge was declined");
    match failure {
        Some(error) => Err(error.context("purge stopped; the letters not purged were kept")),
        None => Ok(()),
    }
}

/// Marks the item, then removes the letter: a crash in between leaves the letter to purge again,
/// never an item whose reason vanished. The item ends `failed` (unless `done`): its job will not
/// run unless the producer is rerun with `--retry-failed`.
async fn purge_one(store: &Store, letter: &Letter) -> anyhow::Result<()> {
    if let Some(id) = letter.id() {
        store
            .mark_purged(id, &letter.kind, letter.error.as_deref())
            .await
            .with_context(|| format!("marking item {id} purged"))?;
    }
    remove(letter).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in entries {
            table.insert(ShortString::from(*key), value.clone());
        }
        table
    }

    fn text(value: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(value))
    }

    fn broker_dead() -> BasicProperties {
        let death = table(&[
            ("queue", text("p.jobs")),
            ("reason", text("delivery_limit")),
            ("count", AMQPValue::LongLongInt(1)),
            ("time", AMQPValue::Timestamp(1_700_000_000)),
        ]);
        Job::new(7, "squirtle").properties().with_headers(table(&[
            (
                DEATH_HEADER,
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
            ),
            ("traceparent", text("00-abc-def-01")),
        ]))
    }

    #[test]
    fn fresh_properties_drop_failure_headers_and_keep_the_rest() {
        let dead = job::with_headers(
            &broker_dead(),
            &[
                (job::ATTEMPTS_HEADER, AMQPValue::LongInt(5)),
                (job::ERROR_KIND_HEADER, text("exhausted")),
                (job::ERROR_HEADER, text("503 five times")),
                ("x-last-death-reason", text("expired")),
                ("x-delivery-count", AMQPValue::LongLongInt(21)),
            ],
        );
        let fresh = fresh_properties(&dead);
        let headers = fresh.headers().clone().unwrap_or_default();
        let keys: Vec<_> = headers.inner().keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["traceparent"]);
        assert_eq!(job::attempts(&fresh), 0);
        assert_eq!(
            fresh.message_id().as_ref().map(|s| s.as_str()),
            Some("pokemon/7")
        );
        assert_eq!(*fresh.delivery_mode(), Some(2));
    }

    #[test]
    fn broker_dead_letters_read_as_delivery_limit() {
        let properties = broker_dead();
        let deaths = x_death(&properties);
        assert_eq!(deaths.len(), 1);
        assert_eq!(
            table_text(deaths[0], "reason").as_deref(),
            Some("delivery_limit")
        );
        let value = amqp_json(&AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::FieldTable(deaths[0].clone()),
        ])));
        assert_eq!(value[0]["reason"], "delivery_limit");
        assert_eq!(value[0]["time"], 1_700_000_000);
    }
}
