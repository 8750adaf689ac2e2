//! The whole sidecar in the test's own runtime, without the binary: [`weir_proxy::start`] on
//! port 0, driven over real HTTP (proxy and admin API), and its typed start errors.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use weir_proxy::admin::api::{
    ChangeResponse, ErrorResponse, RollbackResponse, RoutesResponse, WeightChange,
};
use weir_proxy::feed::Changed;
use weir_proxy::{ConfigFeed, FeedError, RunningSidecar, SidecarOptions, StartError};
use weir_router::{Code, ConfigSource};

const LESSON: &str = include_str!("../../../config/payment-svc.yaml");
/// Generous bound for anything a test waits on: a loaded 2-core machine is slow, not stuck.
const PATIENCE: Duration = Duration::from_secs(20);

/// An upstream answering its name after `delay`, counting the requests it received.
struct Upstream {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
}

async fn upstream(name: &'static str, delay: Duration) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    count.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            name.as_bytes(),
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream { addr, received }
}

/// The lesson's config pointed at `v1` and `v2`, with the 90/10 split as `v1_weight`/`v2_weight`.
fn lesson(v1: &Upstream, v2: &Upstream, v1_weight: u32, v2_weight: u32) -> String {
    LESSON
        .replace("http: 18081", &format!("http: {}", v1.addr.port()))
        .replace("http: 18082", &format!("http: {}", v2.addr.port()))
        .replace("weight: 90 #", &format!("weight: {v1_weight} #"))
        .replace("weight: 10 #", &format!("weight: {v2_weight} #"))
}

fn options(dir: &tempfile::TempDir, config: &str) -> SidecarOptions {
    let path = dir.path().join("payment-svc.yaml");
    std::fs::write(&path, config).unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    SidecarOptions {
        config: vec![path],
        listen: any,
        admin: any,
        workload: "test".into(),
        drain_timeout: Duration::from_secs(5),
        reload_poll: None,
        workers: 0,
        ..SidecarOptions::default()
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET http://payment-svc/pay` through the proxy: the status and the body.
async fn pay(client: &HttpClient, running: &RunningSidecar) -> (StatusCode, String) {
    let req = Request::get(format!("http://{}/pay", running.proxy_addr))
        .header("host", "payment-svc")
        .body(Full::default())
        .unwrap();
    let resp = client.request(req).await.expect("the proxy answers");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One admin call with a JSON body; the status and the answer as `T`.
async fn admin<T: DeserializeOwned>(
    client: &HttpClient,
    running: &RunningSidecar,
    method: Method,
    path: &str,
    body: Option<&impl Serialize>,
) -> (StatusCode, T) {
    let bytes = body.map_or_else(Bytes::new, |b| serde_json::to_vec(b).unwrap().into());
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", running.admin_addr))
        .body(Full::new(bytes))
        .unwrap();
    let resp = client.request(req).await.expect("the admin API answers");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let answer = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, answer)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_and_admin_api_serve_in_process() {
    let (v1, v2) = (
        upstream("v1", Duration::ZERO).await,
        upstream("v2", Duration::ZERO).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let running = weir_proxy::start(options(&dir, &lesson(&v1, &v2, 90, 10)))
        .await
        .expect("the lesson's config starts");
    assert_ne!(running.proxy_addr.port(), 0);
    assert_ne!(running.admin_addr.port(), 0);
    let client = client();

    let (status, body) = pay(&client, &running).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == "v1" || body == "v2", "{body}");

    let (status, routes): (_, RoutesResponse) =
        admin(&client, &running, Method::GET, "/routes", None::<&()>).await;
    assert_eq!(status, StatusCode::OK);
    let vs = &routes.virtual_services[0];
    assert_eq!(vs.name, "payment-svc");
    let split = vs
        .rules
        .iter()
        .find(|r| r.name.as_deref() == Some("canary-split"))
        .expect("the split rule");
    let weights: Vec<u32> = split.destinations.iter().map(|d| d.weight).collect();
    assert_eq!(weights, vec![90, 10]);

    // The canary to 0% through the typed PUT /weights body: every request then reaches v1.
    let change = WeightChange {
        virtual_service: "payment-svc".into(),
        rule: Some("canary-split".into()),
        weights: [("v1".into(), 100), ("v2".into(), 0)].into(),
        ..WeightChange::default()
    };
    let (status, changed): (_, ChangeResponse) =
        admin(&client, &running, Method::PUT, "/weights", Some(&change)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(changed.generation, routes.generation + 1);
    let before = v2.received.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(pay(&client, &running).await, (StatusCode::OK, "v1".into()));
    }
    assert_eq!(v2.received.load(Ordering::SeqCst), before);

    // The 99/1 typo is refused with its finding, and nothing changes.
    let typo = WeightChange {
        weights: [("v1".into(), 1), ("v2".into(), 99)].into(),
        ..change.clone()
    };
    let (status, refused): (_, ErrorResponse) =
        admin(&client, &running, Method::PUT, "/weights", Some(&typo)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let codes: Vec<String> = refused
        .findings
        .unwrap_or_default()
        .into_iter()
        .map(|f| f.code)
        .collect();
    assert!(
        codes.contains(&Code::CanaryMajority.to_string()),
        "{codes:?}"
    );
    assert_eq!(running.sidecar().live.generation(), changed.generation);

    let (status, rolled): (_, RollbackResponse) =
        admin(&client, &running, Method::POST, "/rollback", None::<&()>).await;
    assert_eq!(status, StatusCode::OK);
    assert!(rolled.took_us.is_some());
    assert_eq!(
        rolled.virtual_services,
        Some(vec!["production/payment-svc".to_string()])
    );
    assert!(running.sidecar().live.is_latched("payment-svc"));

    running.shutdown().await.expect("a clean stop");
}

#[tokio::test]
async fn a_refused_config_is_start_error_refused() {
    let (v1, v2) = (
        upstream("v1", Duration::ZERO).await,
        upstream("v2", Duration::ZERO).await,
    );
    let dir = tempfile::tempdir().unwrap();
    // The incident's typo: the canary gets the majority.
    match weir_proxy::start(options(&dir, &lesson(&v1, &v2, 1, 99))).await {
        Err(e @ StartError::Refused { .. }) => {
            let findings = e.findings().expect("a refusal carries its findings");
            assert!(findings.contains(Code::CanaryMajority), "{findings}");
        }
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(running) => panic!("started on a refused config at {}", running.proxy_addr),
    }
}

#[tokio::test]
async fn a_taken_port_is_start_error_bind_naming_the_listener() {
    let (v1, v2) = (
        upstream("v1", Duration::ZERO).await,
        upstream("v2", Duration::ZERO).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    for flag in ["--listen", "--admin"] {
        let mut options = options(&dir, &lesson(&v1, &v2, 90, 10));
        if flag == "--listen" {
            options.listen = addr;
        } else {
            options.admin = addr;
        }
        match weir_proxy::start(options).await {
            Err(StartError::Bind {
                addr: at,
                what,
                source,
            }) => {
                assert_eq!((at, what), (addr, flag));
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            }
            Err(e) => panic!("{flag}: expected a bind error, got {e}"),
            Ok(_) => panic!("{flag}: started on a taken port"),
        }
    }
}

#[tokio::test]
async fn an_unreadable_config_is_start_error_feed() {
    let dir = tempfile::tempdir().unwrap();
    let options = SidecarOptions {
        config: vec![dir.path().join("absent.yaml")],
        ..options(&dir, "")
    };
    match weir_proxy::start(options).await {
        Err(StartError::Feed(FeedError::Read { path, .. })) => {
            assert!(path.ends_with("absent.yaml"), "{}", path.display())
        }
        Err(e) => panic!("expected a feed error, got {e}"),
        Ok(_) => panic!("started without a config"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight_while_readyz_says_draining() {
    let slow = upstream("v1", Duration::from_millis(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let running = weir_proxy::start(options(&dir, &lesson(&slow, &slow, 90, 10)))
        .await
        .unwrap();
    let (proxy_addr, admin_addr) = (running.proxy_addr, running.admin_addr);
    let requests: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let req = Request::get(format!("http://{proxy_addr}/pay"))
                    .header("host", "payment-svc")
                    .body(Full::default())
                    .unwrap();
                let resp = client()
                    .request(req)
                    .await
                    .expect("answered during the drain");
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, body)
            })
        })
        .collect();
    eventually("three requests at the upstream", async || {
        slow.received.load(Ordering::SeqCst) == 3
    })
    .await;
    running.shutdown_handle().shutdown();

    // The admin API outlives the drain so that a load balancer sees it.
    let readyz = Request::get(format!("http://{admin_addr}/readyz"))
        .body(Full::default())
        .unwrap();
    let resp = client().request(readyz).await.expect("admin API up");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    for r in requests {
        assert_eq!(
            r.await.unwrap(),
            (StatusCode::OK, Bytes::from_static(b"v1"))
        );
    }
    tokio::time::timeout(PATIENCE, running.wait())
        .await
        .expect("stops once drained")
        .expect("a clean stop");
    assert!(tokio::net::TcpStream::connect(proxy_addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(admin_addr).await.is_err());
}

/// A feed other than files (what a Kubernetes watch would be): the sidecar reads it at start
/// and reloads when it says so.
struct MemoryFeed {
    text: Mutex<String>,
    changed: Notify,
}

impl ConfigFeed for MemoryFeed {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn read(&self) -> Result<Vec<ConfigSource>, FeedError> {
        let text = self.text.lock().unwrap().clone();
        Ok(vec![ConfigSource::new("memory.yaml", text)])
    }

    fn changed(&self) -> Changed<'_> {
        Box::pin(self.changed.notified())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_feed_is_read_at_start_and_on_every_change() {
    let (v1, v2) = (
        upstream("v1", Duration::ZERO).await,
        upstream("v2", Duration::ZERO).await,
    );
    let feed = Arc::new(MemoryFeed {
        text: Mutex::new(lesson(&v1, &v2, 100, 0)),
        changed: Notify::new(),
    });
    let dir = tempfile::tempdir().unwrap();
    let options = SidecarOptions {
        config: Vec::new(),
        ..options(&dir, "")
    };
    let running = weir_proxy::start_with_feed(options, feed.clone())
        .await
        .expect("the feed's config starts");
    let client = client();
    assert_eq!(pay(&client, &running).await, (StatusCode::OK, "v1".into()));
    assert_eq!(running.sidecar().live.generation(), 1);

    *feed.text.lock().unwrap() = lesson(&v1, &v2, 90, 10);
    feed.changed.notify_one();
    eventually("the feed's change in force", async || {
        running.sidecar().live.generation() == 2
    })
    .await;
    let table = running.sidecar().live.load_full();
    let split = table
        .virtual_service("payment-svc")
        .unwrap()
        .rules
        .iter()
        .find(|r| r.name.as_deref() == Some("canary-split"))
        .unwrap();
    let weights: Vec<u32> = split.destinations.iter().map(|d| d.weight).collect();
    assert_eq!(weights, vec![90, 10]);
    running.shutdown().await.unwrap();
}
