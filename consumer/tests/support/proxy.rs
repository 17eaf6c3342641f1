//! A TCP proxy the tests can cut and restore: the broker or the database "goes away" for the
//! process under test (sockets reset, new connections refused) without disturbing the real
//! service that other tests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    generation: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let cut = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (generation, _) = watch::channel(0u64);
        let proxy = Self {
            addr,
            cut: Arc::clone(&cut),
            refused: Arc::clone(&refused),
            accepted: Arc::clone(&accepted),
            generation: generation.clone(),
        };
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if cut.load(Ordering::SeqCst) {
                    refused.fetch_add(1, Ordering::SeqCst);
                    drop(inbound);
                    continue;
                }
                accepted.fetch_add(1, Ordering::SeqCst);
                let mut cut_signal = generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_signal.changed() => {}
                    }
                    // Dropping both ends resets the connection, as a dead peer would.
                });
            }
        });
        proxy
    }

    /// Drops every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Connections refused while cut, so far: the process under test found the service gone
    /// and is trying it again.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Connections passed through to the upstream so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).expect("url");
        parsed.set_ip_host(self.addr.ip()).expect("ip host");
        parsed.set_port(Some(self.addr.port())).expect("port");
        parsed.to_string()
    }
}

/// The `host:port` a URL points at.
pub fn upstream(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).expect("url");
    let host = parsed.host_str().expect("host");
    let port = parsed
        .port_or_known_default()
        .unwrap_or(match parsed.scheme() {
            "amqp" => 5672,
            _ => 5432,
        });
    format!("{host}:{port}").parse().expect("numeric host:port")
}
