//! cargo run -p weir-router --example embed
//!
//! A Rust service embedding weir-router: a hyper server that routes each request with the
//! lesson's VirtualService, picks the endpoint with the DestinationRule's load balancer (as
//! the sidecar would), and answers with the version and endpoint it picked; then a client
//! that sends it traffic, rolls the canary back, and shows the split before and after.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use weir_router::balance::{Balancers, hash_key};
use weir_router::{ConfigSource, Extension, LiveTable, RequestHead};

async fn route(
    live: Arc<LiveTable>,
    balancers: Extension<Balancers>,
    peer: std::net::SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let head = RequestHead::of(&req);
    // One atomic load, kept for the whole request: the table and its balancers.
    let published = live.load();
    let decision = match published.decide_random(&head) {
        Ok(d) => d,
        Err(no_route) => {
            return Ok(Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::new(Bytes::from(no_route.to_string())))
                .unwrap());
        }
    };
    let balancer = published
        .extension(balancers)
        .expect("registered at start")
        .cluster(decision.destination.cluster);
    let Some(pick) = balancer.pick(hash_key(balancer.policy(), &head, Some(peer.ip()))) else {
        return Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::new(Bytes::from_static(b"no healthy upstream")))
            .unwrap());
    };
    // A real service would forward to the endpoint now, holding `pick.lease` until the
    // response is done (least request counts it in flight).
    let endpoint = &decision.cluster.endpoints[pick.index];
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{} {}",
        decision.cluster.labels.destination_version, endpoint.authority
    )))))
}

async fn split(
    addr: std::net::SocketAddr,
    n: usize,
    canary_header: bool,
) -> BTreeMap<String, usize> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let mut req = Request::get("/pay").header("host", "payment-svc");
        if canary_header {
            req = req.header("x-canary", "true");
        }
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        *counts
            .entry(String::from_utf8_lossy(&body).into_owned())
            .or_insert(0) += 1;
    }
    counts
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/payment-svc.yaml");
    let (live, warnings) = LiveTable::from_sources(&[ConfigSource::read(path)?])?;
    for w in &warnings.0 {
        eprintln!("{w}");
    }
    let live = Arc::new(live);
    // Load-balancer state (round-robin cursors, in-flight counts) published with every table.
    let balancers = live.extend(Balancers::build);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_live = live.clone();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let live = server_live.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| route(live.clone(), balancers, peer, req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    println!(
        "90/10 split, 10000 requests:  {:?}",
        split(addr, 10_000, false).await
    );
    println!(
        "dark launch (x-canary: true): {:?}",
        split(addr, 100, true).await
    );
    let applied = live.rollback(Some("payment-svc"))?;
    println!("rolled back (generation {})", applied.generation);
    println!(
        "after rollback, 10000:        {:?}",
        split(addr, 10_000, false).await
    );
    Ok(())
}
