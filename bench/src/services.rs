//! The shared services the benchmark talks to directly: Postgres (admin and statistics),
//! RabbitMQ (live queue depth over AMQP, per-second depth and cleanup over the management API).

use std::time::Duration;

use anyhow::{Context, bail};
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use serde_json::Value;
use tokio_postgres::{Client, NoTls};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Connects with a timeout; the connection task runs in the background.
pub async fn pg_connect(url: &str) -> anyhow::Result<Client> {
    let config: tokio_postgres::Config = url.parse().context("bad Postgres URL")?;
    let (client, connection) = tokio::time::timeout(TIMEOUT, config.connect(NoTls))
        .await
        .context("Postgres connect timed out")?
        .context("cannot connect to Postgres")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The URL of database `db` on the server of `base` (any path in `base` is replaced).
pub fn database_url(base: &str, db: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(base).with_context(|| format!("bad Postgres URL {base:?}"))?;
    url.set_path(&format!("/{db}"));
    Ok(url.to_string())
}

pub async fn create_database(admin: &Client, db: &str) -> anyhow::Result<()> {
    admin
        .batch_execute(&format!("create database \"{db}\""))
        .await
        .with_context(|| format!("cannot create database {db}"))
}

pub async fn drop_database(admin: &Client, db: &str) -> anyhow::Result<()> {
    admin
        .batch_execute(&format!("drop database if exists \"{db}\" with (force)"))
        .await
        .with_context(|| format!("cannot drop database {db}"))
}

/// Counters of `pg_stat_database` for one database, and cluster-wide `pg_stat_wal`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgCounters {
    pub xact_commit: i64,
    pub xact_rollback: i64,
    /// Milliseconds backends of this database spent executing statements.
    pub active_ms: f64,
    pub tup_inserted: i64,
    pub tup_updated: i64,
    pub wal_records: i64,
    pub wal_bytes: f64,
    pub wal_sync: i64,
}

impl PgCounters {
    pub async fn read(client: &Client, db: &str) -> anyhow::Result<Self> {
        let row = client
            .query_one(
                "select d.xact_commit, d.xact_rollback, coalesce(d.active_time, 0)::float8,
                        d.tup_inserted, d.tup_updated,
                        w.wal_records, w.wal_bytes::float8, w.wal_sync
                 from pg_stat_database d, pg_stat_wal w where d.datname = $1",
                &[&db],
            )
            .await
            .context("cannot read pg_stat_database / pg_stat_wal")?;
        Ok(Self {
            xact_commit: row.get(0),
            xact_rollback: row.get(1),
            active_ms: row.get(2),
            tup_inserted: row.get(3),
            tup_updated: row.get(4),
            wal_records: row.get(5),
            wal_bytes: row.get(6),
            wal_sync: row.get(7),
        })
    }

    pub fn since(&self, before: &Self) -> Self {
        Self {
            xact_commit: self.xact_commit - before.xact_commit,
            xact_rollback: self.xact_rollback - before.xact_rollback,
            active_ms: self.active_ms - before.active_ms,
            tup_inserted: self.tup_inserted - before.tup_inserted,
            tup_updated: self.tup_updated - before.tup_updated,
            wal_records: self.wal_records - before.wal_records,
            wal_bytes: self.wal_bytes - before.wal_bytes,
            wal_sync: self.wal_sync - before.wal_sync,
        }
    }
}

/// A channel that survives failed passive declares (a missing queue closes the channel).
pub struct QueueProbe {
    connection: Connection,
    channel: Option<Channel>,
    queue: String,
}

/// Ready messages and consumers of a queue, live from the broker.
#[derive(Debug, Clone, Copy)]
pub struct QueueDepth {
    pub ready: u32,
    pub consumers: u32,
}

impl QueueProbe {
    pub async fn connect(amqp_url: &str, queue: String) -> anyhow::Result<Self> {
        let connection = pokeq_shared::broker::connect_once(amqp_url, "pokeq-bench", None)
            .await
            .context("cannot connect to RabbitMQ")?;
        Ok(Self {
            connection,
            channel: None,
            queue,
        })
    }

    /// `None` while the queue does not exist.
    pub async fn depth(&mut self) -> anyhow::Result<Option<QueueDepth>> {
        let channel = match self.channel.take() {
            Some(channel) if channel.status().connected() => channel,
            _ => tokio::time::timeout(TIMEOUT, self.connection.create_channel())
                .await
                .context("opening a channel timed out")??,
        };
        let declared = tokio::time::timeout(
            TIMEOUT,
            channel.queue_declare(
                ShortString::from(self.queue.as_str()),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .context("passive queue.declare timed out")?;
        match declared {
            Ok(queue) => {
                self.channel = Some(channel);
                Ok(Some(QueueDepth {
                    ready: queue.message_count(),
                    consumers: queue.consumer_count(),
                }))
            }
            Err(_) => Ok(None),
        }
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, ShortString::from("bye")).await;
    }
}

/// The RabbitMQ management HTTP API (vhost `/`).
#[derive(Clone)]
pub struct Management {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
}

/// Ready and unacknowledged messages of a queue as the management API last aggregated them
/// (RabbitMQ refreshes these every `collect_statistics_interval`, 5 s by default).
#[derive(Debug, Clone, Copy, Default)]
pub struct MgmtDepth {
    pub ready: i64,
    pub unacked: i64,
}

impl Management {
    /// `url` like `http://guest:guest@127.0.0.1:15672`.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).with_context(|| format!("bad management URL {url:?}"))?;
        let user = if parsed.username().is_empty() {
            "guest".to_owned()
        } else {
            parsed.username().to_owned()
        };
        let password = parsed.password().unwrap_or("guest").to_owned();
        let mut base = parsed.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .context("cannot build the HTTP client")?,
            base: base.as_str().trim_end_matches('/').to_owned(),
            user,
            password,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .with_context(|| format!("management API GET {path}"))?;
        if !response.status().is_success() {
            bail!("management API GET {path}: HTTP {}", response.status());
        }
        let body = response.bytes().await?;
        Ok(serde_json::from_slice(&body)?)
    }

    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .with_context(|| format!("management API DELETE {path}"))?;
        if !response.status().is_success() && response.status().as_u16() != 404 {
            bail!("management API DELETE {path}: HTTP {}", response.status());
        }
        Ok(())
    }

    pub async fn queue_depth(&self, queue: &str) -> anyhow::Result<MgmtDepth> {
        let value = self
            .get(&format!(
                "/api/queues/%2F/{}?columns=messages_ready,messages_unacknowledged",
                encode(queue)
            ))
            .await?;
        Ok(MgmtDepth {
            ready: value["messages_ready"].as_i64().unwrap_or(0),
            unacked: value["messages_unacknowledged"].as_i64().unwrap_or(0),
        })
    }

    /// Deletes every queue and exchange whose name starts with `<prefix>.`; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> anyhow::Result<usize> {
        let start = format!("{prefix}.");
        let mut deleted = 0;
        for kind in ["queues", "exchanges"] {
            let list = self.get(&format!("/api/{kind}/%2F?columns=name")).await?;
            let names: Vec<String> = list
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| item["name"].as_str())
                        .filter(|name| name.starts_with(&start))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            for name in names {
                self.delete(&format!("/api/{kind}/%2F/{}", encode(&name)))
                    .await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            database_url(
                "postgres://postgres@127.0.0.1:5432/postgres",
                "pokeq_bench_ab"
            )
            .ok(),
            Some("postgres://postgres@127.0.0.1:5432/pokeq_bench_ab".to_owned())
        );
        assert_eq!(encode("bench-1.retry 5s/x"), "bench-1.retry%205s%2Fx");
    }
}
