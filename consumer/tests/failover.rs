//! `AMQP_URL` listing several nodes of a cluster: the consumer and the producer connect to one
//! that answers, and a consumer that loses its node goes on through another one while the lost
//! one stays away. Two proxies in front of the machine's broker stand for two nodes.

mod support;

use std::time::Duration;

use pokeapi_stub::StubConfig;
use support::proxy::{Proxy, upstream};
use support::{TestEnv, spawn_consumer, wait_until};

const SETTLE: Duration = Duration::from_secs(90);

/// A URL of the test broker's credentials and vhost on a port where nothing listens (bound,
/// never listening, so no one else takes it while the socket lives).
fn dead_node(env: &TestEnv) -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let port = socket.local_addr().expect("address").port();
    let mut url = url::Url::parse(&env.amqp_url).expect("AMQP URL");
    url.set_port(Some(port)).expect("port");
    (socket, url.to_string())
}

#[tokio::test]
async fn a_consumer_that_loses_its_node_goes_on_through_another_one() {
    let env = TestEnv::start(StubConfig {
        count: 300,
        latency: Duration::from_millis(10),
        ..StubConfig::default()
    })
    .await;
    env.count_writes().await;
    // The producer too takes a list, with a node that is down.
    let (_closed, dead) = dead_node(&env);
    let list = format!("{dead},{}", env.amqp_url);
    let summary = pokeq_producer::run(
        env.producer_config_via(&list, &env.database_url, &[]),
        Default::default(),
    )
    .await
    .expect("the producer publishes through the node that answers");
    assert_eq!(summary.published, 300);

    let nodes = [
        Proxy::start(upstream(&env.amqp_url)).await,
        Proxy::start(upstream(&env.amqp_url)).await,
    ];
    let list = format!(
        "{}, {}",
        nodes[0].url(&env.amqp_url),
        nodes[1].url(&env.amqp_url)
    );
    let config = env.consumer_config_via(&list, &env.database_url, &["--prefetch", "4"]);
    let consumer = spawn_consumer(config);
    assert!(wait_until(SETTLE, || async { env.counts().await.done >= 30 }).await);
    let (lost, other) = match nodes.iter().position(|node| node.accepted() > 0) {
        Some(0) => (&nodes[0], &nodes[1]),
        Some(_) => (&nodes[1], &nodes[0]),
        None => panic!("the consumer is connected through neither node"),
    };
    assert_eq!(other.accepted(), 0, "one connection, to one node");

    // The node goes, and stays away: the consumer must not wait for it.
    lost.cut();
    let done = env.counts().await.done;
    assert!(done < 300, "the node went mid-run");
    assert!(
        wait_until(SETTLE, || async { other.accepted() > 0 }).await,
        "the consumer reconnects to the other node"
    );
    let counts = env.wait_settled(300, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (300, 0));
    assert_eq!(
        lost.refused(),
        0,
        "the consumer went to the other node first, not back to the lost one"
    );
    env.assert_each_row_written_once(300).await;
    assert!(!consumer.task.is_finished(), "the consumer does not exit");
    consumer.stop().await.expect("clean stop");
}
