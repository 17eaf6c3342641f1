//! A minimal HTTP/1.1 client over a raw TcpStream, so tests can see what a real client library
//! would hide: a body shorter than its Content-Length, and when the headers arrived.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the end of the headers arrived, from just before connecting.
    pub headers_at: Duration,
    /// When the connection ended.
    pub done_at: Duration,
    /// The connection ended with an error (e.g. reset) rather than a clean EOF.
    pub read_error: bool,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")?.parse().ok()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body was complete per Content-Length.
    pub fn complete(&self) -> bool {
        self.content_length() == Some(self.body.len())
    }
}

/// `GET path` with `Connection: close`, reading until the server closes.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    tokio::time::timeout(Duration::from_secs(60), get_inner(addr, path))
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
}

async fn get_inner(addr: SocketAddr, path: &str) -> Reply {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut head_end = None;
    let mut headers_at = None;
    let mut read_error = false;
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if head_end.is_none()
                    && let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n")
                {
                    head_end = Some(p + 4);
                    headers_at = Some(start.elapsed());
                }
            }
            Err(_) => {
                read_error = true;
                break;
            }
        }
    }
    let done_at = start.elapsed();
    let head_end = head_end.unwrap_or_else(|| panic!("no complete response head for {path}"));
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: buf[head_end..].to_vec(),
        headers_at: headers_at.unwrap_or(done_at),
        done_at,
        read_error,
    }
}

/// The path (and query) of an absolute `http://<addr>...` URL served by `addr`.
pub fn path_of(url: &str, addr: SocketAddr) -> String {
    let prefix = format!("http://{addr}");
    url.strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{url} is not under {prefix}"))
        .to_owned()
}
