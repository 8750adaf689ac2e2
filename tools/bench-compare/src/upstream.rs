//! The two upstreams, v1 and v2: minimal hyper HTTP/1.1 servers answering every request with
//! the same body and counting what they serve.
//!
//! They run in a child process (the bench binary started again with `upstreams`), so that they
//! can be pinned to the load tool's cores and never share a CPU budget with the harness.
//! Protocol on the child's stdio: it prints `upstreams v1=ADDR v2=ADDR` once bound; each
//! `counts` line on stdin is answered with `counts v1=N v2=M`; end of stdin ends the process.

use std::convert::Infallible;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves one upstream on `listener` until the process ends, adding 1 to `count` per request.
async fn serve(listener: TcpListener, body: Bytes, count: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let count = count.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                count.fetch_add(1, Ordering::Relaxed);
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The child process's main: `threads` runtime threads, `body_bytes` per answer.
pub fn run(threads: usize, body_bytes: usize) -> ! {
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let body = Bytes::from(vec![b'w'; body_bytes]);
    let counts = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let addrs: Vec<SocketAddr> = runtime.block_on(async {
        let mut addrs = Vec::new();
        for count in &counts {
            // A backlog for every proxy's burst of 1,000 upstream connections (tokio's
            // `bind` asks for 1,024: SYNs dropped, a connect retried after a second).
            let socket = tokio::net::TcpSocket::new_v4().expect("upstream socket");
            socket
                .bind("127.0.0.1:0".parse().expect("address"))
                .expect("bind upstream");
            let listener = socket.listen(8192).expect("listen upstream");
            addrs.push(listener.local_addr().expect("local addr"));
            tokio::spawn(serve(listener, body.clone(), count.clone()));
        }
        addrs
    });
    let control = {
        let counts = counts.clone();
        std::thread::spawn(move || {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "upstreams v1={} v2={}", addrs[0], addrs[1]);
            let _ = out.flush();
            for line in std::io::stdin().lock().lines() {
                match line.as_deref().map(str::trim) {
                    Ok("counts") => {
                        let _ = writeln!(
                            out,
                            "counts v1={} v2={}",
                            counts[0].load(Ordering::Relaxed),
                            counts[1].load(Ordering::Relaxed)
                        );
                        let _ = out.flush();
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
    };
    // The runtime's threads serve; this one waits for the harness to hang up.
    let _guard = runtime.enter();
    runtime.block_on(async {
        let _ = tokio::task::spawn_blocking(move || control.join()).await;
    });
    std::process::exit(0)
}

/// Parses `upstreams v1=ADDR v2=ADDR`.
pub fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("upstreams ")?;
    let (v1, v2) = rest.split_once(' ')?;
    Some((
        v1.strip_prefix("v1=")?.parse().ok()?,
        v2.strip_prefix("v2=")?.parse().ok()?,
    ))
}

/// Parses `counts v1=N v2=M`.
pub fn parse_counts(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("counts ")?;
    let (v1, v2) = rest.split_once(' ')?;
    Some((
        v1.strip_prefix("v1=")?.parse().ok()?,
        v2.strip_prefix("v2=")?.parse().ok()?,
    ))
}
