//! The queue part of a report: the management API's list and samples, counted exactly over AMQP.

use std::collections::HashMap;
use std::time::Duration;

use pokeq_shared::config::{Common, parse_duration};
use pokeq_shared::topology::Topology;

use super::report::{Missing, QueueRow};
use crate::management::{Management, QueueStats};
use crate::probe::{Counts, ProbeError, QueueProbe};

/// The queues, the management API's errors and the broker's. The management API is asked
/// first, for what only it knows (which queues exist, which retry queues there are, types,
/// unacknowledged counts; its list of queues is current, only its figures are samples); then
/// the queues it listed are counted over AMQP. When it fails, the jobs and dead queues are
/// counted over AMQP all the same.
pub(super) async fn queue_part(
    common: &Common,
    management: &Management,
    probe: &mut Option<QueueProbe>,
    topology: &Topology,
) -> (Option<Vec<QueueRow>>, Option<Missing>, Option<Missing>) {
    let (found, queues_error) = match management.queues(&topology.prefix).await {
        Ok(found) => (Some(found), None),
        Err(error) => (
            None,
            Some(Missing {
                misconfigured: error.misconfiguration(management.config()),
                reason: error.to_string(),
            }),
        ),
    };
    let names = queue_names(topology, found.as_deref().unwrap_or_default());
    // A queue the management API does not list does not exist: asking the broker about it would
    // only earn a 404 (which lapin logs as an error).
    let listed: Vec<&str> = names
        .iter()
        .map(|(_, name)| name.as_str())
        .filter(|name| {
            found
                .as_ref()
                .is_none_or(|found| found.iter().any(|stats| stats.name == *name))
        })
        .collect();
    let (exact, broker_error) = match count_all(common, probe, &listed).await {
        Ok(mut exact) => {
            for (_, name) in &names {
                exact.entry(name.clone()).or_insert(None);
            }
            (Some(exact), None)
        }
        Err(error) => {
            // Reconnect on the next refresh.
            if let Some(failed) = probe.take() {
                failed.close().await;
            }
            (None, Some(error))
        }
    };
    if found.is_none() && exact.is_none() {
        return (None, queues_error, broker_error);
    }
    let rows = queue_rows(&names, found.as_deref(), exact.as_ref());
    (Some(rows), queues_error, broker_error)
}

/// Exact counts of each queue, `None` for a queue the broker does not have. Connects only if
/// there is something to count.
async fn count_all(
    common: &Common,
    probe: &mut Option<QueueProbe>,
    names: &[&str],
) -> Result<HashMap<String, Option<Counts>>, Missing> {
    let mut exact = HashMap::new();
    if names.is_empty() {
        return Ok(exact);
    }
    if probe.as_ref().is_some_and(|p| !p.connected()) {
        *probe = None;
    }
    if probe.is_none() {
        *probe = Some(
            QueueProbe::open(common)
                .await
                .map_err(ProbeError::missing)?,
        );
    }
    let Some(open) = probe.as_mut() else {
        return Err(Missing::outage("no connection".to_owned()));
    };
    for name in names {
        let counts = open.counts(name).await.map_err(ProbeError::missing)?;
        exact.insert((*name).to_owned(), counts);
    }
    Ok(exact)
}

/// The jobs queue, the retry wait queues the management API found, shortest delay first, the
/// dead queue, then the dead-letter ledger if there is one (consumers empty it; letters piling
/// up there mean none reads it), each with its role. Jobs and dead are always listed.
pub(super) fn queue_names(
    topology: &Topology,
    found: &[QueueStats],
) -> Vec<(&'static str, String)> {
    let retry_prefix = format!("{}.", topology.retry());
    let mut retries: Vec<(Duration, String)> = found
        .iter()
        .filter_map(|stats| {
            let label = stats.name.strip_prefix(&retry_prefix)?;
            Some((
                parse_duration(label).unwrap_or(Duration::MAX),
                stats.name.clone(),
            ))
        })
        .collect();
    retries.sort();
    let mut names = vec![("jobs", topology.jobs())];
    names.extend(retries.into_iter().map(|(_, name)| ("retry", name)));
    names.push(("dead", topology.dead()));
    if found.iter().any(|stats| stats.name == topology.ledger()) {
        names.push(("ledger", topology.ledger()));
    }
    names
}

/// One row per name, the exact counts (when AMQP answered) over the management API's sample.
pub(super) fn queue_rows(
    names: &[(&'static str, String)],
    found: Option<&[QueueStats]>,
    exact: Option<&HashMap<String, Option<Counts>>>,
) -> Vec<QueueRow> {
    names
        .iter()
        .map(|(role, name)| {
            let stats = found.and_then(|found| found.iter().find(|s| &s.name == name));
            let counts = exact.map(|exact| exact.get(name).copied().flatten());
            let exists = match counts {
                Some(counts) => counts.is_some(),
                None => stats.is_some(),
            };
            let (messages_ready, consumers, counts_source) = match (counts, stats) {
                (Some(Some(counts)), _) => (
                    Some(u64::from(counts.ready)),
                    Some(u64::from(counts.consumers)),
                    Some("amqp"),
                ),
                (None, Some(stats)) => (stats.messages_ready, stats.consumers, Some("management")),
                _ => (None, None, None),
            };
            QueueRow {
                name: name.clone(),
                role,
                exists,
                queue_type: stats.and_then(|s| s.queue_type.clone()),
                messages_ready,
                messages_unacknowledged: stats
                    .filter(|_| exists)
                    .and_then(|s| s.messages_unacknowledged),
                consumers,
                counts_source,
                management_messages_ready: stats.filter(|_| exists).and_then(|s| s.messages_ready),
            }
        })
        .collect()
}
