//! cargo run -p weir-proxy --example payment_client   (also run by `cargo test -p weir-proxy --example payment_client`)
//!
//! A Rust service (a checkout) whose outgoing calls to `payment-svc` go through an in-process
//! weir: no sidecar, no extra hop. The checkout starts two payment upstreams (v1 and a v2
//! canary), routes with the lesson's VirtualService (90/10, weights checked by weir's
//! guards), calls payment-svc through a `weir_proxy::ProxyService` used as a tower client,
//! prints the Istio metrics from the registry, then rolls the canary back through the
//! `LiveTable` while it keeps calling, and checks that everything goes to v1 afterwards.
//!
//! Exits 0 only when the split and the rollback were both observed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_service::Service;
use weir_proxy::{Metrics, Proxy, ProxyOptions, ProxyService};
use weir_router::{ConfigSource, LiveTable};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A payment upstream answering its version.
async fn payment_upstream(version: &'static str) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(move |_req| async move {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                    Bytes::from_static(version.as_bytes()),
                )))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    Ok(addr)
}

/// The checkout's outgoing call: `POST http://payment-svc/pay` through weir.
async fn pay(payments: &mut ProxyService) -> Result<String, Error> {
    let req = http::Request::post("http://payment-svc/pay")
        .header("host", "payment-svc")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"amount\": 10}")))?;
    let resp = payments.call(req).await?;
    if !resp.status().is_success() {
        return Err(format!("payment-svc answered {}", resp.status()).into());
    }
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn calls(payments: &mut ProxyService, n: usize) -> Result<BTreeMap<String, usize>, Error> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(pay(payments).await?).or_insert(0) += 1;
    }
    Ok(seen)
}

/// The whole scenario; `Err` says which expectation failed.
async fn run() -> Result<(), Error> {
    let v1 = payment_upstream("v1").await?;
    let v2 = payment_upstream("v2").await?;
    let config = include_str!("../../../config/payment-svc.yaml")
        .replace("http: 18081", &format!("http: {}", v1.port()))
        .replace("http: 18082", &format!("http: {}", v2.port()));
    let (live, warnings) =
        LiveTable::from_sources(&[ConfigSource::new("payment-svc.yaml", config)])?;
    for w in &warnings.0 {
        eprintln!("{w}");
    }
    let live = Arc::new(live);
    let metrics = Arc::new(Metrics::new("checkout"));
    let proxy = Proxy::new(live.clone(), metrics.clone(), ProxyOptions::default());
    // The checkout's own address as the downstream peer (x-forwarded-for).
    let mut payments = proxy.service(SocketAddr::from(([127, 0, 0, 1], 0)));

    let before = calls(&mut payments, 2_000).await?;
    println!("90/10 split, 2000 payments: {before:?}");
    let canary = before.get("v2").copied().unwrap_or(0);
    if !(100..=300).contains(&canary) || before.get("v1").copied().unwrap_or(0) + canary != 2_000 {
        return Err(format!("expected about 200 of 2000 on v2, saw {before:?}").into());
    }

    let applied = live.rollback(Some("payment-svc"))?;
    println!(
        "rolled back payment-svc (generation {})",
        applied.generation
    );
    let after = calls(&mut payments, 1_000).await?;
    println!("after the rollback, 1000 payments: {after:?}");
    if after.get("v1") != Some(&1_000) {
        return Err(
            format!("expected every payment on v1 after the rollback, saw {after:?}").into(),
        );
    }

    println!("\nistio_requests_total, from weir's registry:");
    let text = metrics.encode(&live);
    for line in text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total"))
    {
        println!("  {line}");
    }
    let v2_count = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total") && l.contains("destination_version=\"v2\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<usize>().ok());
    if v2_count != Some(canary) {
        return Err(format!(
            "the registry counts {v2_count:?} calls to v2, the checkout saw {canary}"
        )
        .into());
    }
    println!("\nsplit and rollback observed");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("payment_client: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    /// The example runs to the end: the split and the rollback are observed.
    #[tokio::test(flavor = "current_thread")]
    async fn split_and_rollback_are_observed() {
        super::run().await.expect("the example's expectations");
    }
}
