//! The HTTP sources, sinks and webhooks against tiny servers started by each test on
//! 127.0.0.1:0 and stopped when it ends.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_canary::*;

// === a tiny HTTP/1.1 server ===

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

type Handler = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    if let Some(req) = read_request(&conn) {
                        let (status, body) = handler(&req);
                        seen.lock().unwrap().push(req);
                        let _ = write!(
                            &conn,
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                }
            })
        };
        Server {
            addr,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    Some(Seen {
        method,
        path: path.to_string(),
        query,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A port nothing listens on.
fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

fn target() -> Target {
    CanarySpec::from_yaml(
        "c.yaml",
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: payment-svc}\nspec:\n  analysis: {interval: 1m, threshold: 1, stepWeight: 10}\n",
    )
    .unwrap()
    .target
}

// === ScrapeSource ===

#[test]
fn scrape_source_sums_sidecars_and_differences_scrapes() {
    // Each sidecar's counters grow by its own amount per scrape.
    let sidecar = |ok_per_scrape: u64, err_per_scrape: u64| {
        let n = Arc::new(Mutex::new(0u64));
        Server::start(move |req| {
            assert_eq!(req.path, "/metrics");
            let mut n = n.lock().unwrap();
            *n += 1;
            let body = format!(
                "# TYPE istio_requests_total counter\n\
                 istio_requests_total{{destination_service_name=\"payment-svc\",destination_version=\"v2\",response_code=\"200\"}} {}\n\
                 istio_requests_total{{destination_service_name=\"payment-svc\",destination_version=\"v2\",response_code=\"503\"}} {}\n\
                 istio_requests_total{{destination_service_name=\"payment-svc\",destination_version=\"v1\",response_code=\"200\"}} {}\n\
                 istio_requests_total{{destination_service_name=\"other\",destination_version=\"v2\",response_code=\"500\"}} 999\n",
                *n * ok_per_scrape,
                *n * err_per_scrape,
                *n * 1000
            );
            (200, body)
        })
    };
    let a = sidecar(90, 0);
    let b = sidecar(5, 5);
    let mut source = ScrapeSource::new([
        format!("{}/metrics", a.url()),
        format!("{}/metrics", b.url()),
    ])
    .filter(SeriesFilter::service("payment-svc"));
    let t0 = Instant::now();
    let window = Duration::from_secs(10);
    let first = source.observe("v2", window, t0).unwrap();
    assert_eq!(first.requests, 0, "one scrape is no window");
    let second = source
        .observe("v2", window, t0 + Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        second.requests, 100,
        "90 + 10 new requests on the two sidecars"
    );
    assert_eq!(second.success_rate, Some(95.0));
    assert_eq!(second.window, window);
    assert_eq!(
        source
            .request_count("v1", t0 + Duration::from_secs(11))
            .unwrap(),
        Some(6000)
    );
    assert_eq!(a.seen().len(), 3);
    assert_eq!(b.seen().len(), 3);

    // One sidecar failing fails the observation: part of the traffic is never a verdict.
    let broken = Server::start(|_| (503, "down".into()));
    let mut source = ScrapeSource::new([a.url() + "/metrics", broken.url() + "/metrics"]);
    let err = source.observe("v2", window, t0).unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    let mut source = ScrapeSource::new([closed_port()]);
    assert!(matches!(
        source.observe("v2", window, t0),
        Err(SourceError::Http { .. })
    ));
    let garbage = Server::start(|_| {
        (
            200,
            "istio_requests_total{destination_version=\"v2\" 1\n".into(),
        )
    });
    let mut source = ScrapeSource::new([garbage.url()]);
    assert!(matches!(
        source.observe("v2", window, t0),
        Err(SourceError::Exposition { .. })
    ));
}

// === AdminSink ===

/// A fake sidecar admin API: answers `answer(method, path)`, generation 7.
fn admin(answer: impl Fn(&str, &str) -> u16 + Send + Sync + 'static) -> Server {
    Server::start(move |req| {
        let status = answer(&req.method, &req.path);
        let body = match status {
            200 => json!({"generation": 7, "took_us": 35, "virtual_services": ["payment-svc"]}),
            409 => json!({
                "error": "the weight guard refused the change",
                "findings": [{"code": "WEIR004", "severity": "error", "message": "v2 gets 60, more than the stable v1's 40"}]
            }),
            _ => json!({"error": "boom"}),
        };
        (status, body.to_string())
    })
}

#[test]
fn admin_sink_fans_out_and_every_replica_confirms() {
    let a = admin(|_, _| 200);
    let b = admin(|_, _| 200);
    let mut sink = AdminSink::new([a.url(), b.url() + "/"]).token("s3cret");
    let t = target();
    let c = sink.set_weights(&t, Split::canary(10)).unwrap();
    assert_eq!(c.generations, vec![7, 7]);
    sink.set_weights(&t, Split::canary(60)).unwrap();
    sink.rollback(&t).unwrap();
    sink.release(&t).unwrap();
    sink.promote(&t).unwrap();
    assert_eq!(sink.describe(), "admin API of 2 sidecars");
    for server in [&a, &b] {
        let seen = server.seen();
        let calls: Vec<(&str, &str)> = seen
            .iter()
            .map(|s| (s.method.as_str(), s.path.as_str()))
            .collect();
        assert_eq!(
            calls,
            vec![
                ("PUT", "/weights"),
                ("PUT", "/weights"),
                ("POST", "/rollback"),
                ("DELETE", "/rollback"),
                ("POST", "/promote")
            ]
        );
        assert_eq!(
            seen[0].json(),
            json!({"virtual_service": "payment-svc", "weights": {"v1": 90, "v2": 10}, "force": false, "promotion": false}),
            "the body is the admin API's own WeightChange (no rule: the split rule)"
        );
        assert_eq!(
            seen[1].json()["promotion"],
            true,
            "60/40 to the canary is a promotion step"
        );
        assert_eq!(seen[2].json(), json!({"virtual_service": "payment-svc"}));
        assert_eq!(seen[3].json(), json!({"virtual_service": "payment-svc"}));
        assert_eq!(
            seen[4].json(),
            json!({"virtual_service": "payment-svc", "subset": "v2"})
        );
        assert!(
            seen.iter().all(
                |s| s.headers.get("authorization").map(String::as_str) == Some("Bearer s3cret")
            )
        );
        assert!(
            seen.iter()
                .all(|s| s.headers.get("content-type").map(String::as_str)
                    == Some("application/json"))
        );
    }
}

#[test]
fn admin_sink_rolls_every_replica_back_on_a_partial_failure() {
    // (b's status for PUT /weights, error is a refusal)
    for (status, refused) in [(409, true), (500, false)] {
        let a = admin(|_, _| 200);
        let b = admin(move |m, _| if m == "PUT" { status } else { 200 });
        let mut sink = AdminSink::new([a.url(), b.url()]);
        let err = sink.set_weights(&target(), Split::canary(20)).unwrap_err();
        assert_eq!(err.is_refused(), refused, "{err}");
        let text = err.to_string();
        assert!(text.contains("1 of 2 sidecars failed"), "{text}");
        assert!(text.contains("put back"), "{text}");
        if refused {
            assert!(
                text.contains("WEIR004"),
                "the findings are passed on: {text}"
            );
        }
        for server in [&a, &b] {
            let calls: Vec<String> = server
                .seen()
                .iter()
                .map(|s| format!("{} {}", s.method, s.path))
                .collect();
            assert_eq!(
                calls,
                vec!["PUT /weights", "POST /rollback"],
                "every replica is rolled back"
            );
        }
    }

    // A promotion that fails on one replica is undone where it went through.
    let a = admin(|_, _| 200);
    let b = admin(|m, p| {
        if (m, p) == ("POST", "/promote") {
            500
        } else {
            200
        }
    });
    let mut sink = AdminSink::new([a.url(), b.url()]);
    assert!(sink.promote(&target()).is_err());
    let a_seen = a.seen();
    assert_eq!(a_seen.len(), 2);
    assert_eq!(
        a_seen[1].json(),
        json!({"virtual_service": "payment-svc", "subset": "v1"})
    );
    assert_eq!(b.seen().len(), 1, "b never promoted: nothing to undo");

    // An unreachable replica; the undo that follows is reported when it fails as well.
    let a = admin(|m, _| if m == "POST" { 500 } else { 200 });
    let mut sink = AdminSink::new([a.url(), closed_port()]);
    let err = sink.set_weights(&target(), Split::canary(20)).unwrap_err();
    assert!(!err.is_refused());
    assert!(err.to_string().contains("FAILED too"), "{err}");

    // One replica: its own error, nothing to undo.
    let lone = admin(|_, _| 404);
    let err = AdminSink::new([lone.url()])
        .rollback(&target())
        .unwrap_err();
    assert!(matches!(err, SinkError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("404"), "{err}");
}

// === transport errors ===

/// A peer that accepts connections and writes `reply` (nothing at all when empty), then holds
/// each connection open until stopped, or closes it at once when `hold` is false.
fn raw_peer(reply: &'static str, hold: bool) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.write_all(reply.as_bytes());
                    if hold {
                        held.push(conn);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (url, done)
}

#[test]
fn transport_errors_keep_their_cause_and_say_what_happened() {
    use std::error::Error as _;
    let window = Duration::from_secs(1);
    let now = Instant::now();
    // Which predicates hold, by name.
    let transport = |e: &SourceError| -> Vec<&'static str> {
        let SourceError::Http { source, .. } = e else {
            panic!("not a transport error: {e}")
        };
        assert!(
            source.source().is_some(),
            "the client's error is kept: {source:?}"
        );
        let kinds = [
            ("connect", source.is_connect()),
            ("timeout", source.is_timeout()),
            ("answer", source.is_answer()),
        ];
        kinds
            .iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| *k)
            .collect()
    };

    // Nothing listens: a connect error, and the chain reaches the transport error.
    let err = ScrapeSource::new([closed_port()])
        .observe("v2", window, now)
        .unwrap_err();
    assert_eq!(transport(&err), ["connect"], "{err}");
    assert!(err.source().is_some_and(|s| s.is::<TransportError>()));

    // Accepted, never answered: a timeout after the scrape's own timeout.
    let (silent, stop_silent) = raw_peer("", true);
    let started = Instant::now();
    let err = ScrapeSource::with_timeout([silent], Duration::from_millis(200))
        .observe("v2", window, now)
        .unwrap_err();
    assert_eq!(transport(&err), ["timeout"], "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    stop_silent.store(true, Ordering::SeqCst);

    // A status, then a body cut short by the peer closing: the answer could not be read.
    let (cut, stop_cut) = raw_peer(
        "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nistio_",
        false,
    );
    let err = ScrapeSource::with_timeout([cut], Duration::from_millis(200))
        .observe("v2", window, now)
        .unwrap_err();
    assert_eq!(transport(&err), ["answer"], "{err}");
    assert!(err.to_string().contains("reading the answer"), "{err}");
    stop_cut.store(true, Ordering::SeqCst);

    // A status, then a body that never ends: both predicates say so.
    let (slow, stop_slow) = raw_peer("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nistio_", true);
    let err = ScrapeSource::with_timeout([slow], Duration::from_millis(200))
        .observe("v2", window, now)
        .unwrap_err();
    assert_eq!(transport(&err), ["timeout", "answer"], "{err}");
    stop_slow.store(true, Ordering::SeqCst);

    // A sink says the same about a replica it cannot reach, and it is not a refusal.
    let err = AdminSink::new([closed_port()])
        .set_weights(&target(), Split::canary(10))
        .unwrap_err();
    match &err {
        SinkError::Unreachable { source, .. } => assert!(source.is_connect(), "{err}"),
        other => panic!("not unreachable: {other}"),
    }
    assert!(!err.is_refused());
}

// === DnsAdminSink ===

/// A sidecar's admin API that confirms every change with generation 1.
fn admin_replica() -> Server {
    Server::start(|req| match req.path.as_str() {
        "/metrics" => (
            200,
            "istio_requests_total{destination_version=\"v2\",response_code=\"200\"} 7\n".into(),
        ),
        _ => (200, r#"{"generation":1}"#.into()),
    })
}

/// (method, path, weights of v2 if any) of every request a replica saw.
fn calls(server: &Server) -> Vec<(String, String, Option<u64>)> {
    server
        .seen()
        .iter()
        .map(|s| {
            (
                s.method.clone(),
                s.path.clone(),
                s.json()["weights"]["v2"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn dns_sink_follows_the_headless_service() {
    let (a, b, c) = (admin_replica(), admin_replica(), admin_replica());
    // The "DNS": whatever the test says the name resolves to now.
    let answer: Arc<Mutex<Result<Vec<SocketAddr>, String>>> =
        Arc::new(Mutex::new(Ok(vec![a.addr, b.addr])));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (now, log) = (answer.clone(), asked.clone());
    let mut sink = DnsAdminSink::with_resolver("checkout-admin", 15000, move |host: &str, port| {
        log.lock().unwrap().push(format!("{host}:{port}"));
        now.lock()
            .unwrap()
            .clone()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e))
    });
    let replicas = sink.replicas();
    let mut metrics = ScrapeSource::following(replicas.clone(), None);
    let target = target();

    let joined = sink.refresh(&target);
    assert_eq!(joined.len(), 2, "{joined:?}");
    assert!(joined[0].to_string().contains("nothing to catch up on yet"));
    sink.set_weights(&target, Split::canary(10)).unwrap();
    assert_eq!(replicas.urls(), {
        let mut v = vec![a.url(), b.url()];
        v.sort();
        v
    });

    // A third replica appears, and an address nothing answers on: the new one gets the
    // current weights before it counts; the dead one is reported and not counted.
    let dead: SocketAddr = closed_port().trim_start_matches("http://").parse().unwrap();
    *answer.lock().unwrap() = Ok(vec![a.addr, b.addr, c.addr, dead]);
    let t0 = Instant::now();
    metrics.observe("v2", Duration::from_secs(1), t0).unwrap();
    let changes = sink.refresh(&target);
    let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert_eq!(changes.len(), 2, "{text:?}");
    assert!(
        changes.contains(&ReplicaChange::Joined {
            replica: c.url(),
            applied: "weights 90/10".into()
        }),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains(&format!("http://{dead}")) && t.contains("not counted")),
        "{text:?}"
    );
    assert!(changes.iter().any(ReplicaChange::is_problem));
    assert_eq!(calls(&c), [("PUT".into(), "/weights".into(), Some(10))]);
    // Still unreachable on the next refresh: tried again, not reported again.
    assert_eq!(sink.refresh(&target), []);
    assert_eq!(replicas.urls().len(), 3);
    // The newcomer's counters start counting from its first scrape, not from zero: 3 x 7
    // requests already there are no traffic in the window.
    let o = metrics
        .observe("v2", Duration::from_secs(1), t0 + Duration::from_secs(1))
        .unwrap();
    assert_eq!(o.requests, 0, "{o:?}");

    // Replica a goes away: dropped and reported; the rollback reaches the others only.
    *answer.lock().unwrap() = Ok(vec![b.addr, c.addr]);
    let changes = sink.refresh(&target);
    assert_eq!(changes, [ReplicaChange::Left { replica: a.url() }]);
    let before_a = a.seen().len();
    sink.rollback(&target).unwrap();
    assert_eq!(a.seen().len(), before_a);
    assert_eq!(calls(&b).last().unwrap().1, "/rollback");
    assert_eq!(calls(&c).last().unwrap().1, "/rollback");

    // a comes back after the rollback: it is rolled back too before it counts.
    *answer.lock().unwrap() = Ok(vec![a.addr, b.addr, c.addr]);
    let changes = sink.refresh(&target);
    assert_eq!(
        changes,
        [ReplicaChange::Joined {
            replica: a.url(),
            applied: "rolled back".into()
        }]
    );
    assert_eq!(calls(&a).last().unwrap().1, "/rollback");

    // The name stops resolving: reported, and the set is kept.
    *answer.lock().unwrap() = Err("NXDOMAIN".into());
    let changes = sink.refresh(&target);
    assert!(
        matches!(&changes[..], [c @ ReplicaChange::Unresolved { .. }] if c.to_string().contains("NXDOMAIN")),
        "{changes:?}"
    );
    assert_eq!(replicas.urls().len(), 3);
    assert!(sink.describe().contains("checkout-admin:15000 (3 now)"));
    assert!(
        asked
            .lock()
            .unwrap()
            .iter()
            .all(|q| q == "checkout-admin:15000")
    );
}

// === PrometheusSource ===

#[test]
fn prometheus_source_sends_the_builtin_promql_and_reads_the_answers() {
    let queries = BuiltinQueries::new(
        &SeriesFilter::service("payment-svc"),
        "v2",
        Duration::from_secs(60),
    );
    let (requests, rate, p99) = (queries.requests(), queries.success_rate(), queries.p99());
    let answers: BTreeMap<String, &str> = [
        (requests.clone(), "600.4"),
        (rate.clone(), "99.5"),
        (p99.clone(), "123.4"),
        ("sum(rate(my_errors_total[1m]))".to_string(), "NaN"),
    ]
    .into_iter()
    .collect();
    let prom = Server::start(move |req| {
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("GET", "/api/v1/query")
        );
        let q = &req.query["query"];
        match answers.get(q) {
            Some(v) => (
                200,
                format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000.5,"{v}"]}}]}}}}"#
                ),
            ),
            None => (
                400,
                r#"{"status":"error","errorType":"bad_data","error":"unknown query"}"#.into(),
            ),
        }
    });
    let mut source =
        PrometheusSource::new(prom.url() + "/").filter(SeriesFilter::service("payment-svc"));
    assert!(source.supports_queries());
    let o = source
        .observe("v2", Duration::from_secs(60), Instant::now())
        .unwrap();
    assert_eq!(o.requests, 600);
    assert_eq!(o.success_rate, Some(99.5));
    assert_eq!(o.p99_ms, Some(123.4));
    let sent: Vec<String> = prom
        .seen()
        .iter()
        .map(|s| s.query["query"].clone())
        .collect();
    assert_eq!(sent, vec![requests, rate, p99]);
    assert_eq!(
        source
            .query("sum(rate(my_errors_total[1m]))", Instant::now())
            .unwrap(),
        None,
        "NaN is no data"
    );
    let err = source.query("up{", Instant::now()).unwrap_err();
    assert!(err.to_string().contains("bad_data: unknown query"), "{err}");

    // No requests: the rate and p99 are not asked for.
    let empty = Server::start(|_| {
        (
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.into(),
        )
    });
    let mut source = PrometheusSource::new(empty.url());
    let o = source
        .observe("v2", Duration::from_secs(30), Instant::now())
        .unwrap();
    assert_eq!((o.requests, o.success_rate, o.p99_ms), (0, None, None));
    assert_eq!(empty.seen().len(), 1);
}

/// A Prometheus answering each query from `answers` (an empty vector for a query it lacks).
fn prometheus_answering(answers: BTreeMap<String, &'static str>) -> Server {
    Server::start(move |req| {
        let result = match answers.get(&req.query["query"]) {
            Some(v) => format!(r#"[{{"metric":{{}},"value":[1700000000.5,"{v}"]}}]"#),
            None => "[]".to_string(),
        };
        (
            200,
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#),
        )
    })
}

#[test]
fn prometheus_source_sends_flaggers_builtin_queries_verbatim() {
    let flagger = FlaggerQueries::new("default", "podinfo");
    let minute = Duration::from_secs(60);
    // What Flagger's own tests expect it to send for namespace default, target podinfo, 1m.
    let success = concat!(
        r#" sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo", response_code!~"5.*" }[1m] ) )"#,
        r#" / sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) * 100"#
    );
    let duration = r#" histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) by (le) )"#;
    let prom = prometheus_answering(
        [
            (flagger.requests(minute), "240"),
            (success.to_string(), "80"),
            (duration.to_string(), "48.5"),
        ]
        .into_iter()
        .collect(),
    );
    let mut source = PrometheusSource::new(prom.url()).flagger(flagger.clone(), "v2");
    let o = source.observe("v2", minute, Instant::now()).unwrap();
    assert_eq!(
        (o.requests, o.success_rate, o.p99_ms),
        (240, Some(80.0), Some(48.5))
    );
    let sent: Vec<String> = prom
        .seen()
        .iter()
        .map(|s| s.query["query"].clone())
        .collect();
    assert_eq!(
        sent,
        vec![flagger.requests(minute), success.into(), duration.into()]
    );
    // These queries cannot tell versions apart: asking for another one is an error, not the
    // canary's numbers under the stable's name.
    let err = source.observe("v1", minute, Instant::now()).unwrap_err();
    assert!(err.to_string().contains("canary's workload only"), "{err}");

    // Requests but no non-5xx series at all: Flagger's query answers nothing; every request
    // failed, which is 0%, not "no data".
    let failing = prometheus_answering(
        [
            (flagger.requests(minute), "30"),
            (duration.to_string(), "2"),
        ]
        .into_iter()
        .collect(),
    );
    let o = PrometheusSource::new(failing.url())
        .flagger(flagger, "v2")
        .observe("v2", minute, Instant::now())
        .unwrap();
    assert_eq!((o.requests, o.success_rate), (30, Some(0.0)));
}

// === webhooks ===

#[test]
fn webhooks_post_flaggers_payload() {
    let hook = Server::start(|req| {
        if req.body.contains("\"go\"") {
            (200, "{}".into())
        } else {
            (500, "{}".into())
        }
    });
    let spec = CanarySpec::from_yaml(
        "c.yaml",
        &format!(
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: payment-svc, namespace: production}}\nspec:\n  analysis:\n    interval: 1m\n    threshold: 1\n    stepWeight: 10\n    webhooks:\n    - {{name: gate, type: confirm-promotion, url: '{}/gate', timeout: 2s, metadata: {{answer: go}}}}\n    - {{name: other, url: '{}', timeout: 2s}}\n",
            hook.url(),
            closed_port()
        ),
    )
    .unwrap();
    let mut client = HttpWebhooks::new();
    let payload = WebhookPayload {
        name: &spec.name,
        namespace: &spec.namespace,
        phase: Phase::WaitingPromotion,
        metadata: &spec.analysis.webhooks[0].metadata,
    };
    assert_eq!(client.call(&spec.analysis.webhooks[0], &payload), Ok(200));
    let seen = hook.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/gate")
    );
    assert_eq!(
        seen[0].json(),
        json!({"name": "payment-svc", "namespace": "production", "phase": "WaitingPromotion", "metadata": {"answer": "go"}})
    );
    let err = client
        .call(&spec.analysis.webhooks[1], &payload)
        .unwrap_err();
    assert_eq!(err.name, "other");
}
