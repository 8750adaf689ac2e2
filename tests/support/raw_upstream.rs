//! A raw-socket HTTP/1.1 upstream that records every byte it receives, for the hostile suites:
//! what it parsed is what a real server behind weir would have seen.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Requests for this path are answered with a body of [`RawUpstream::BIG`] bytes (to fill a
/// client that never reads); every other request gets `200 ok`.
pub const BIG_PATH: &str = "/big";

/// Frames requests strictly (`content-length` or `chunked`, never both) and answers each.
/// A request forwarded with both framings is recorded in `paths` as `BOTH FRAMINGS: <head>`.
pub struct RawUpstream {
    pub addr: SocketAddr,
    /// Every byte received, on every connection, in arrival order.
    pub received: Arc<Mutex<Vec<u8>>>,
    /// The path of every request head parsed.
    pub paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    /// Size of the answer to [`BIG_PATH`], in bytes.
    pub const BIG: usize = 1 << 20;

    pub async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (r, p) = (received.clone(), paths.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(raw_connection(s, r.clone(), p.clone()));
            }
        });
        RawUpstream {
            addr,
            received,
            paths,
            task,
        }
    }

    /// `config/payment-svc.yaml` with both subsets' endpoints on this upstream.
    pub fn lesson_config(&self) -> String {
        let port = self.addr.port();
        super::render(
            &super::read(super::root().join("config/payment-svc.yaml")),
            port,
            port,
            90,
            10,
        )
    }

    /// The paths parsed so far.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }

    /// The bytes received so far.
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

/// Reads until `buf` holds `n` bytes; false on EOF.
async fn fill(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    n: usize,
    all: &Mutex<Vec<u8>>,
) -> bool {
    while buf.len() < n {
        match s.read(chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => {
                all.lock().unwrap().extend_from_slice(&chunk[..k]);
                buf.extend_from_slice(&chunk[..k]);
            }
        }
    }
    true
}

async fn raw_connection(
    mut s: TcpStream,
    received: Arc<Mutex<Vec<u8>>>,
    paths: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let want = buf.len() + 1;
            if !fill(&mut s, &mut buf, &mut chunk, want, &received).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head.contains("transfer-encoding: chunked");
        paths.lock().unwrap().push(path.clone());
        if chunked && length.is_some() {
            paths.lock().unwrap().push(format!("BOTH FRAMINGS: {head}"));
        }
        buf.drain(..head_end);
        if chunked {
            let end = loop {
                if let Some(i) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                    break i + 5;
                }
                let want = buf.len() + 1;
                if !fill(&mut s, &mut buf, &mut chunk, want, &received).await {
                    return;
                }
            };
            buf.drain(..end);
        } else if let Some(n) = length {
            if !fill(&mut s, &mut buf, &mut chunk, n, &received).await {
                return;
            }
            buf.drain(..n);
        }
        let answer = if path == BIG_PATH {
            let mut a = format!(
                "HTTP/1.1 200 OK\r\nx-upstream: raw\r\ncontent-length: {}\r\n\r\n",
                RawUpstream::BIG
            )
            .into_bytes();
            a.resize(a.len() + RawUpstream::BIG, b'b');
            a
        } else {
            b"HTTP/1.1 200 OK\r\nx-upstream: raw\r\ncontent-length: 2\r\n\r\nok".to_vec()
        };
        if s.write_all(&answer).await.is_err() {
            return;
        }
    }
}
