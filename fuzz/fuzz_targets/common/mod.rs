#![allow(dead_code)] // Each target uses the part of the fixture it drives.
//! One in-process sidecar for the network targets: the lesson's config with its two
//! endpoints on an in-process upstream, proxy and admin API on 127.0.0.1:0, started once per
//! fuzzing process on a runtime of its own. A panic anywhere (a connection task included)
//! aborts, so that libFuzzer sees it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

pub struct Fixture {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("{info}");
            std::process::abort();
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let upstream = upstream().await;
                let dir = std::env::temp_dir().join(format!("weir-fuzz-{}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let config = dir.join("payment-svc.yaml");
                let text = include_str!("../../../config/payment-svc.yaml")
                    .replace("http: 18081", &format!("http: {}", upstream.port()))
                    .replace("http: 18082", &format!("http: {}", upstream.port()));
                std::fs::write(&config, text).unwrap();
                let any = SocketAddr::from(([127, 0, 0, 1], 0));
                let mut options = weir_proxy::SidecarOptions::default();
                options.config = vec![config];
                options.listen = any;
                options.admin = any;
                options.reload_poll = None;
                let running = weir_proxy::start(options).await.expect("the sidecar starts");
                tx.send(Fixture {
                    proxy: running.proxy_addr,
                    admin: running.admin_addr,
                })
                .unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().unwrap()
    })
}

/// An upstream that reads each request whole and answers 200.
async fn upstream() -> SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let _ = req.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Writes `bytes` on a new connection to `addr`, half-closes, and reads what comes back
/// (up to 64 KiB, for at most a second).
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut out);
    out
}

/// The status codes of every response in `answer`.
pub fn statuses(answer: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(answer);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}
