//! A TCP proxy in front of the stub that counts the detail requests going through it.
//!
//! The stub keeps its request counters inside its own process and prints none, and a consumer's
//! `/metrics` die with it (a SIGKILLed consumer's in-flight requests are never counted by
//! anyone). Counting request lines on the wire between the consumers and the stub gives the
//! number the stub saw, exactly, whatever happens to the consumers. HTTP/1.1 without TLS, GET
//! requests without bodies: every detail request starts with `GET /api/v2/pokemon/<digit>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const DETAIL: &[u8] = b"GET /api/v2/pokemon/";

/// Finds `GET /api/v2/pokemon/<digit>` in a byte stream fed in arbitrary pieces.
#[derive(Default)]
struct Matcher {
    /// Bytes of `DETAIL` matched so far; `DETAIL.len()` means "now a digit is needed".
    state: usize,
}

impl Matcher {
    fn feed(&mut self, bytes: &[u8]) -> u64 {
        let mut found = 0;
        for &byte in bytes {
            if self.state == DETAIL.len() {
                if byte.is_ascii_digit() {
                    found += 1;
                }
                self.state = 0;
            } else if byte == DETAIL[self.state] {
                self.state += 1;
                continue;
            } else {
                self.state = 0;
            }
            // `G` appears only first in the pattern, so restarting here is enough.
            if byte == DETAIL[0] {
                self.state = 1;
            }
        }
        found
    }
}

/// The proxy: listens on a spare port, forwards to the stub, counts detail requests.
pub struct Counter {
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Counter {
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let count = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&count);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, counted).await;
                    }
                });
            }
        });
        Ok(Self { addr, count, task })
    }

    /// Detail requests that went through so far.
    pub fn detail_requests(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, count: Arc<AtomicU64>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async move {
        let mut matcher = Matcher::default();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    count.fetch_add(matcher.feed(&buffer[..n]), Ordering::Relaxed);
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_write.shutdown().await;
    };
    let responses = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        // The stub ended the response stream (or aborted it mid-body): so does the proxy.
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, responses);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_detail_requests_split_anywhere() {
        let stream = b"GET /api/v2/pokemon?offset=0&limit=100 HTTP/1.1\r\nhost: x\r\n\r\n\
                       GET /api/v2/pokemon/25/ HTTP/1.1\r\nhost: x\r\n\r\n\
                       GGET /api/v2/pokemon/10001/ HTTP/1.1\r\n\r\n\
                       GET /api/v2/pokemon/x HTTP/1.1\r\n\r\n";
        for split in 0..stream.len() {
            let mut matcher = Matcher::default();
            let (a, b) = stream.split_at(split);
            assert_eq!(matcher.feed(a) + matcher.feed(b), 2, "split at {split}");
        }
        let mut matcher = Matcher::default();
        let one_by_one: u64 = stream.iter().map(|b| matcher.feed(&[*b])).sum();
        assert_eq!(one_by_one, 2);
    }
}
