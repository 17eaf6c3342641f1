//! The report as people read it.

use super::report::{ApiCircuit, Items, ProducerRun, QueueRow, Report};
use crate::table::{Align, Table, age};
use pokeq_shared::config::Common;

/// The report as people read it.
pub fn render(report: &Report, common: &Common) -> String {
    let mut text = format!(
        "pokeq status: prefix {}, vhost {}, database {}\n\n",
        report.prefix,
        report.vhost,
        common.database.get_dbname().unwrap_or("?")
    );

    text.push_str("Items (every resource)\n");
    match (&report.items, &report.database_error) {
        (Some(items), _) => {
            let mut table = Table::new(&[
                ("STATUS", Align::Left),
                ("ITEMS", Align::Right),
                ("", Align::Left),
            ]);
            let kinds = items
                .failed_by_kind
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            for (status, n, detail) in [
                ("pending", items.pending, String::new()),
                ("queued", items.queued, String::new()),
                ("done", items.done, String::new()),
                ("failed", items.failed, kinds),
                ("total", items.total, String::new()),
            ] {
                table.row(vec![status.to_owned(), n.to_string(), detail]);
            }
            text.push_str(&table.render("  "));
            if !items.resources.is_empty() {
                text.push_str(&render_resources(items));
            }
        }
        (None, error) => text.push_str(&format!(
            "  unavailable: {}\n",
            error.as_deref().unwrap_or("unknown error")
        )),
    }
    if let Some(throughput) = &report.throughput {
        text.push_str(&format!("\nThroughput: {}\n", throughput.describe()));
    }

    if let Some(circuit) = &report.api_circuit {
        text.push_str(&render_circuit(circuit));
    }

    text.push_str("\nQueues\n");
    match &report.queues {
        Some(queues) => text.push_str(&render_queues(report, queues)),
        None => text.push_str(&format!(
            "  queue figures unavailable: {}\n  counts over AMQP unavailable: {}\n",
            report.queues_error.as_deref().unwrap_or("unknown error"),
            report.broker_error.as_deref().unwrap_or("unknown error"),
        )),
    }

    text.push_str("\nProducer runs (latest first)\n");
    if report.producer_runs.is_empty() {
        match &report.database_error {
            None => text.push_str("  none recorded\n"),
            Some(_) => text.push_str("  unavailable (database)\n"),
        }
    }
    for run in &report.producer_runs {
        text.push_str(&render_run(run));
    }
    text
}

/// One row per resource present, then the total.
fn render_resources(items: &Items) -> String {
    let mut table = Table::new(&[
        ("RESOURCE", Align::Left),
        ("PENDING", Align::Right),
        ("QUEUED", Align::Right),
        ("DONE", Align::Right),
        ("FAILED", Align::Right),
        ("TOTAL", Align::Right),
    ]);
    let rows = items
        .resources
        .iter()
        .map(|r| {
            (
                r.resource.as_str(),
                [r.pending, r.queued, r.done, r.failed, r.total],
            )
        })
        .chain([(
            "total",
            [
                items.pending,
                items.queued,
                items.done,
                items.failed,
                items.total,
            ],
        )]);
    for (name, counts) in rows {
        table.row(
            std::iter::once(name.to_owned())
                .chain(counts.map(|n| n.to_string()))
                .collect(),
        );
    }
    format!("\nItems by resource\n{}", table.render("  "))
}

pub(super) fn render_queues(report: &Report, queues: &[QueueRow]) -> String {
    let mut table = Table::new(&[
        ("QUEUE", Align::Left),
        ("TYPE", Align::Left),
        ("READY", Align::Right),
        ("UNACKED", Align::Right),
        ("CONSUMERS", Align::Right),
    ]);
    let figure = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    for queue in queues {
        if queue.exists {
            table.row(vec![
                queue.name.clone(),
                queue.queue_type.clone().unwrap_or_else(|| "?".into()),
                figure(queue.messages_ready),
                figure(queue.messages_unacknowledged),
                figure(queue.consumers),
            ]);
        } else {
            table.row(vec![
                queue.name.clone(),
                "not declared".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    let mut text = table.render("  ");
    let max_age = age(report.management_max_age_seconds);
    match (&report.broker_error, &report.queues_error) {
        (None, None) => text.push_str(&format!(
            "  READY and CONSUMERS are exact, counted now; UNACKED is the management API's \
             sample, up to ~{max_age} old\n"
        )),
        (None, Some(error)) => text.push_str(&format!(
            "  READY and CONSUMERS are exact, counted now; management API: queue figures \
             unavailable (UNACKED, retry queues): {error}\n"
        )),
        (Some(error), _) => text.push_str(&format!(
            "  counts over AMQP unavailable ({error}): every figure is the management API's \
             sample, up to ~{max_age} old\n"
        )),
    }
    let behind: Vec<String> = queues
        .iter()
        .filter(|q| q.counts_source == Some("amqp"))
        .filter_map(|q| match (q.management_messages_ready, q.messages_ready) {
            (Some(sampled), Some(exact)) if sampled != exact => {
                Some(format!("{} ready in {}", sampled, q.name))
            }
            _ => None,
        })
        .collect();
    if !behind.is_empty() {
        text.push_str(&format!(
            "  the management API is behind: it still shows {}\n",
            behind.join(", ")
        ));
    }
    if queues
        .iter()
        .any(|q| q.exists && q.messages_unacknowledged.is_none() && report.queues_error.is_none())
    {
        text.push_str("  (? = no statistics from the broker yet)\n");
    }
    text
}

fn render_run(run: &ProducerRun) -> String {
    let planned = run
        .pages_planned
        .map_or_else(|| "?".to_owned(), |n| n.to_string());
    let total = run
        .total
        .map_or_else(String::new, |n| format!(" of {n} in the API"));
    let mut text = format!(
        "  #{} {}: pages {}/{}, listed {}, published {}, skipped {}{}\n",
        run.id, run.state, run.pages_done, planned, run.listed, run.published, run.skipped, total
    );
    text.push_str(&format!(
        "     started {}, last update {} ({} ago)",
        run.started_at,
        run.updated_at,
        age(run.seconds_since_update)
    ));
    if let Some(finished) = &run.finished_at {
        text.push_str(&format!(", finished {finished}"));
    }
    text.push('\n');
    if let Some(error) = &run.error {
        text.push_str(&format!("     error: {error}\n"));
    }
    text
}

fn render_circuit(circuit: &ApiCircuit) -> String {
    if circuit.open_consumers == 0 {
        return "\nAPI circuit: closed (the API answers)\n".to_owned();
    }
    let mut text = format!(
        "\nAPI circuit: OPEN in {} consumer{} since {} ({}): jobs wait, probing once a second\n",
        circuit.open_consumers,
        if circuit.open_consumers == 1 { "" } else { "s" },
        circuit.since.as_deref().unwrap_or("?"),
        age(circuit.seconds_open.unwrap_or(0)),
    );
    if let Some(error) = &circuit.last_error {
        text.push_str(&format!("  last failure: {error}\n"));
    }
    text
}
