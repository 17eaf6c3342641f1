//! Guards that remove what a test made on the shared RabbitMQ and Postgres when they drop, so
//! that a test that fails (panics) leaves nothing behind either: a test's database and its queue
//! prefix are each owned by one, which [`super::Fresh`] holds.
//!
//! `Drop` cannot await, and inside a test the runtime of the test is either blocked on the
//! test's future or unwinding out of it after a panic: the guards do their work on a thread and
//! runtime of their own ([`on_own_runtime`]) and wait for it. A removal that fails is reported
//! on stderr and never panics: a panic while the test is unwinding would abort the whole binary.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use super::{amqp_url, management_url, pg_server_url};
use crate::store;

/// How long one removal may take before the guard gives up and reports it.
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `task` to the end on a new thread with a current-thread runtime of its own, and waits
/// for it: usable from `Drop`, from inside another runtime (whose `block_on` would refuse) and
/// while a panicking test's runtime unwinds.
pub(crate) fn on_own_runtime<T, F>(task: F) -> Result<T, String>
where
    T: Send + 'static,
    F: Future<Output = Result<T, String>> + Send + 'static,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        runtime.block_on(async {
            tokio::time::timeout(REMOVAL_TIMEOUT, task)
                .await
                .map_err(|_| format!("gave up after {REMOVAL_TIMEOUT:?}"))?
        })
    })
    .join()
    .map_err(|_| "the cleanup thread panicked".to_owned())?
}

/// A test's Postgres database: on drop, it and every database whose name starts with its name
/// (those a test derives from it, `<name>_fresh` say) are dropped `WITH (FORCE)`, through the
/// server's maintenance database `postgres`, whoever is still connected to them.
///
/// The database itself need not exist yet: whoever creates it (the store on open, `pokeq
/// migrate`) does so after the guard is made, so that nothing is left if that fails halfway.
pub struct TestDatabase {
    name: String,
}

impl TestDatabase {
    /// `name` must be unique to the test (a random tag in it): every database it begins is
    /// dropped.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        if let Err(error) = on_own_runtime(drop_databases(name)) {
            eprintln!(
                "testkit: database {} not (fully) dropped: {error}",
                self.name
            );
        }
    }
}

async fn drop_databases(name: String) -> Result<(), String> {
    let url = format!("{}/postgres", pg_server_url());
    let config = store::parse_url(&url).map_err(|e| e.to_string())?;
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    tokio::spawn(connection);
    let rows = client
        .query(
            "select datname from pg_database where starts_with(datname, $1)",
            &[&name],
        )
        .await
        .map_err(|e| e.to_string())?;
    for row in rows {
        let database: String = row.get(0);
        // One statement each: DROP DATABASE refuses to run inside a multi-statement string.
        client
            .batch_execute(&format!(
                "drop database if exists \"{}\" with (force)",
                database.replace('"', "\"\"")
            ))
            .await
            .map_err(|e| format!("{database}: {e}"))?;
    }
    Ok(())
}

/// A test's queue prefix: on drop, every queue and exchange of the broker's virtual host (the
/// one of `TEST_AMQP_URL`) whose name starts with the prefix is deleted through the management
/// API, whatever declared them (the test, the binaries under test, a mistyped `<prefix>-typo`).
pub struct TestQueues {
    prefix: String,
}

impl TestQueues {
    /// `prefix` must be unique to the test (a random tag in it): every queue and exchange it
    /// begins is deleted.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for TestQueues {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        if let Err(error) = on_own_runtime(delete_queues(prefix)) {
            eprintln!(
                "testkit: queues and exchanges of prefix {} not (fully) deleted: {error}",
                self.prefix
            );
        }
    }
}

async fn delete_queues(prefix: String) -> Result<(), String> {
    let management = Management::new()?;
    // Queues first: an exchange's bindings go with either, and nothing routes meanwhile.
    for kind in ["queues", "exchanges"] {
        for name in management.names(kind, &prefix).await? {
            management.delete(kind, &name).await?;
        }
    }
    Ok(())
}

/// The management API of `TEST_MANAGEMENT_URL`, for the virtual host of `TEST_AMQP_URL`.
struct Management {
    client: reqwest::Client,
    base: url::Url,
    user: String,
    password: Option<String>,
    vhost: String,
}

impl Management {
    fn new() -> Result<Self, String> {
        let mut base = url::Url::parse(&management_url()).map_err(|e| e.to_string())?;
        let user = base.username().to_owned();
        let password = base.password().map(str::to_owned);
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let amqp = url::Url::parse(&amqp_url()).map_err(|e| e.to_string())?;
        // An AMQP URL's path is its virtual host, percent-encoded; none at all means `/`.
        let vhost = match amqp.path().trim_start_matches('/') {
            "" => "/".to_owned(),
            // Decoded as a form value, whose `+` would be a space.
            encoded => {
                url::form_urlencoded::parse(format!("v={}", encoded.replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, value)| value.into_owned())
                    .unwrap_or_else(|| "/".to_owned())
            }
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            base,
            user,
            password,
            vhost,
        })
    }

    /// `api/<kind>/<vhost>/<name...>`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<url::Url, String> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| "the management URL cannot have a path".to_owned())?
            .pop_if_empty()
            .push("api")
            .extend(segments);
        Ok(url)
    }

    /// Names of the `kind` (queues, exchanges) of the virtual host that start with `prefix`.
    async fn names(&self, kind: &str, prefix: &str) -> Result<Vec<String>, String> {
        let mut url = self.url(&[kind, &self.vhost])?;
        url.set_query(Some("columns=name"));
        let response = self
            .client
            .get(url)
            .basic_auth(&self.user, self.password.as_deref())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("listing {kind}: {e}"))?;
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let listed: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(listed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["name"].as_str())
            .filter(|name| name.starts_with(prefix))
            .map(str::to_owned)
            .collect())
    }

    /// Deletes one queue or exchange; one already gone counts as deleted.
    async fn delete(&self, kind: &str, name: &str) -> Result<(), String> {
        let response = self
            .client
            .delete(self.url(&[kind, &self.vhost, name])?)
            .basic_auth(&self.user, self.password.as_deref())
            .send()
            .await
            .map_err(|e| format!("deleting {name}: {e}"))?;
        match response.status().as_u16() {
            200..=299 | 404 => Ok(()),
            status => Err(format!("deleting {name}: HTTP {status}")),
        }
    }
}
