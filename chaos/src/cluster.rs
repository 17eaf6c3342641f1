//! The cluster mode's broker: three private RabbitMQ nodes on this machine, joined into one
//! cluster with `rabbitmqctl join_cluster`, and what the scenarios ask of it (which node leads a
//! quorum queue, which node each client is connected to).
//!
//! Each node is a [`Rabbit`] of its own (node name, AMQP and distribution ports, data and logs
//! in the suite's directory); the three share one `HOME`, hence one Erlang cookie, which the
//! nodes need to talk to each other and `rabbitmqctl` to talk to any of them.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::infra::Rabbit;

/// Nodes in the cluster: a quorum queue on three tolerates the loss of one.
pub const NODES: usize = 3;

/// Starts `NODES` nodes and joins the 2nd and 3rd to the 1st.
pub async fn start(root: &Path) -> Result<Vec<Rabbit>> {
    let tag = rand::random::<u32>() & 0xff_ffff;
    let home = root.join("rabbitmq-home");
    let mut nodes = Vec::with_capacity(NODES);
    for i in 1..=NODES {
        nodes.push(Rabbit::launch_new(
            &root.join(format!("rabbitmq-{i}")),
            format!("chaos-{tag:06x}-{i}@localhost"),
            home.clone(),
        )?);
    }
    // Booted one after the other: the first one creates the shared Erlang cookie, which the
    // others must find rather than race to write.
    for node in &mut nodes {
        node.wait_ready(Duration::from_secs(120)).await?;
    }
    let first = nodes[0].node.clone();
    for node in nodes.iter_mut().skip(1) {
        node.ctl(&["stop_app"]).await?;
        node.ctl(&["join_cluster", &first]).await?;
        node.ctl(&["start_app"]).await?;
        node.wait_ready(Duration::from_secs(120)).await?;
    }
    let status = nodes[0].query("rabbitmqctl", &["cluster_status"]).await?;
    for node in &nodes {
        if !status.contains(&node.node) {
            bail!("{} is not in the cluster:\n{status}", node.node);
        }
    }
    Ok(nodes)
}

/// `AMQP_URL` for clients of the whole cluster: every node's URL, comma-separated.
pub fn url(nodes: &[Rabbit]) -> String {
    nodes.iter().map(Rabbit::url).collect::<Vec<_>>().join(",")
}

/// A running node to ask questions of.
fn running(nodes: &[Rabbit]) -> Result<&Rabbit> {
    nodes
        .iter()
        .find(|node| node.running())
        .context("no RabbitMQ node is running")
}

/// Which node leads the quorum queue `queue`, and how many members it has.
pub async fn leader(nodes: &[Rabbit], queue: &str) -> Result<(usize, usize)> {
    let text = running(nodes)?
        .query(
            "rabbitmqctl",
            &[
                "list_queues",
                "-q",
                "--formatter",
                "json",
                "name",
                "leader",
                "members",
            ],
        )
        .await?;
    let queues: serde_json::Value = serde_json::from_str(text.trim())
        .with_context(|| format!("list_queues printed no JSON: {text}"))?;
    let entry = queues
        .as_array()
        .and_then(|all| all.iter().find(|q| q["name"] == queue))
        .with_context(|| format!("no queue {queue} in the cluster"))?;
    let leader = entry["leader"].as_str().unwrap_or_default();
    let members = entry["members"].as_array().map_or(0, Vec::len);
    let index = nodes
        .iter()
        .position(|node| node.node == leader)
        .with_context(|| format!("queue {queue} has no leader among the nodes: {entry}"))?;
    Ok((index, members))
}

/// How many client connections whose name starts with `name` each node has.
pub async fn connections(nodes: &[Rabbit], name: &str) -> Result<Vec<usize>> {
    let mut seen = std::collections::HashSet::new();
    for node in nodes.iter().filter(|node| node.running()) {
        let text = node
            .query(
                "rabbitmqctl",
                &[
                    "list_connections",
                    "-q",
                    "--formatter",
                    "json",
                    "name",
                    "port",
                    "client_properties",
                ],
            )
            .await?;
        let list: serde_json::Value = serde_json::from_str(text.trim())
            .with_context(|| format!("list_connections printed no JSON: {text}"))?;
        for connection in list.as_array().into_iter().flatten() {
            // `name` is the peer's address (unique); the name the client gave is among its
            // properties, and the server port tells which node the connection is on.
            let port = connection["port"].as_u64().unwrap_or_default();
            let peer = connection["name"].as_str().unwrap_or_default();
            if connection["client_properties"].to_string().contains(name) {
                seen.insert((peer.to_owned(), port));
            }
        }
    }
    Ok(nodes
        .iter()
        .map(|node| {
            seen.iter()
                .filter(|(_, port)| *port == u64::from(node.port))
                .count()
        })
        .collect())
}
