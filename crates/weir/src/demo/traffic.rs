//! The demo's clients: steady traffic through the sidecar at a fixed rate, some of it QA's
//! `x-canary: true`, with every answer counted by the version that served it; and a watcher of
//! `weir_route_weight` on the admin API, the number an SRE should have looked at.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A request that gets no answer in this time is counted as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One client: requests in sequence at a fixed rate.
#[derive(Clone, Copy, Debug)]
pub struct ClientPlan {
    /// Requests a second.
    pub rate: u32,
    /// Whether it sends `x-canary: true` (QA's dark-launch traffic).
    pub tagged: bool,
}

impl ClientPlan {
    /// `rate` requests a second, with `x-canary: true` when `tagged`.
    pub const fn new(rate: u32, tagged: bool) -> Self {
        ClientPlan { rate, tagged }
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientStats {
    tagged: bool,
    sent: AtomicU64,
    v1: AtomicU64,
    v2: AtomicU64,
    errors: AtomicU64,
    failed: AtomicU64,
    /// Answers to requests sent after the mark, by version.
    after_mark_v1: AtomicU64,
    after_mark_v2: AtomicU64,
    /// When the last answered request was sent, in ns since the epoch (0: none yet).
    last_answered_sent_ns: AtomicU64,
}

struct Shared {
    epoch: Instant,
    stop: AtomicBool,
    /// ns since the epoch; 0: no mark.
    mark_ns: AtomicU64,
    clients: Vec<ClientStats>,
}

/// Sets the traffic's mark.
pub struct Marker(Arc<Shared>);

impl Marker {
    /// From now on, answers are also counted as "after the mark": a request sent after this
    /// call was routed by the table in force at this call or later.
    pub fn mark(&self) {
        let ns = (self.0.epoch.elapsed().as_nanos() as u64).max(1);
        self.0.mark_ns.store(ns, Ordering::SeqCst);
    }
}

/// Sums over every client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficTotals {
    /// Requests sent.
    pub sent: u64,
    /// Of them, with `x-canary: true`.
    pub sent_tagged: u64,
    /// Answers from v1 and v2 (by their `x-upstream` header).
    pub v1: u64,
    pub v2: u64,
    /// 5xx answers.
    pub errors: u64,
    /// No answer (connection error or timeout).
    pub failed: u64,
    /// Answers to requests sent after the mark, by version.
    pub after_mark_v1: u64,
    pub after_mark_v2: u64,
}

/// Steady traffic to the sidecar's proxy; stops when dropped.
pub struct Traffic {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Traffic {
    /// Starts one task per client, each sending `GET /pay` with `Host: payment-svc`.
    pub fn start(proxy: SocketAddr, plans: &[ClientPlan]) -> Traffic {
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            mark_ns: AtomicU64::new(0),
            clients: plans
                .iter()
                .map(|p| ClientStats {
                    tagged: p.tagged,
                    ..ClientStats::default()
                })
                .collect(),
        });
        let client = http_client();
        let tasks = plans
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                tokio::spawn(drive(Arc::clone(&shared), client.clone(), proxy, i, *plan))
            })
            .collect();
        Traffic { shared, tasks }
    }

    /// A handle that sets the mark from another thread (the canary's observer).
    pub fn marker(&self) -> Marker {
        Marker(Arc::clone(&self.shared))
    }

    /// Whether every client has had an answer to a request sent after the mark: no request
    /// sent before it is still in flight.
    pub fn settled_since_mark(&self) -> bool {
        let mark = self.shared.mark_ns.load(Ordering::SeqCst);
        mark > 0
            && self
                .shared
                .clients
                .iter()
                .all(|c| c.last_answered_sent_ns.load(Ordering::SeqCst) > mark)
    }

    /// Totals so far.
    pub fn totals(&self) -> TrafficTotals {
        let mut t = TrafficTotals::default();
        for c in &self.shared.clients {
            let sent = c.sent.load(Ordering::SeqCst);
            t.sent += sent;
            if c.tagged {
                t.sent_tagged += sent;
            }
            t.v1 += c.v1.load(Ordering::SeqCst);
            t.v2 += c.v2.load(Ordering::SeqCst);
            t.errors += c.errors.load(Ordering::SeqCst);
            t.failed += c.failed.load(Ordering::SeqCst);
            t.after_mark_v1 += c.after_mark_v1.load(Ordering::SeqCst);
            t.after_mark_v2 += c.after_mark_v2.load(Ordering::SeqCst);
        }
        t
    }
}

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

async fn drive(
    shared: Arc<Shared>,
    client: HttpClient,
    proxy: SocketAddr,
    index: usize,
    plan: ClientPlan,
) {
    let stats = &shared.clients[index];
    let uri = format!("http://{proxy}/pay");
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / plan.rate.max(1));
    // A slow answer delays the next request instead of bunching the missed ones up.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stop.load(Ordering::SeqCst) {
        ticks.tick().await;
        let mut req = Request::get(uri.as_str()).header(header::HOST, "payment-svc");
        if plan.tagged {
            req = req.header("x-canary", "true");
        }
        let Ok(req) = req.body(Empty::new()) else {
            return;
        };
        let sent_ns = (shared.epoch.elapsed().as_nanos() as u64).max(1);
        stats.sent.fetch_add(1, Ordering::SeqCst);
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let resp = client.request(req).await.ok()?;
            let status = resp.status();
            let version = resp.headers().get("x-upstream").cloned();
            resp.into_body().collect().await.ok()?;
            Some((status, version))
        })
        .await
        .ok()
        .flatten();
        let Some((status, version)) = answer else {
            stats.failed.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        if status.is_server_error() {
            stats.errors.fetch_add(1, Ordering::SeqCst);
        }
        let after_mark = {
            let mark = shared.mark_ns.load(Ordering::SeqCst);
            mark > 0 && sent_ns > mark
        };
        match version.as_ref().map(|v| v.as_bytes()) {
            Some(b"v1") => {
                stats.v1.fetch_add(1, Ordering::SeqCst);
                if after_mark {
                    stats.after_mark_v1.fetch_add(1, Ordering::SeqCst);
                }
            }
            Some(b"v2") => {
                stats.v2.fetch_add(1, Ordering::SeqCst);
                if after_mark {
                    stats.after_mark_v2.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ => {}
        }
        stats.last_answered_sent_ns.store(sent_ns, Ordering::SeqCst);
    }
}

/// Watches `weir_route_weight` of the canary on the admin API's `/metrics` and keeps every
/// distinct value seen, in order.
pub struct WeightWatch {
    seen: Arc<Mutex<Vec<u32>>>,
    task: JoinHandle<()>,
}

impl Drop for WeightWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WeightWatch {
    /// Polls `{admin}/metrics` every `every` for the weight of `version` on `rule`.
    pub fn start(admin: &str, rule: &str, version: &str, every: Duration) -> WeightWatch {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = http_client();
        let uri = format!("{admin}/metrics");
        let rule = format!("rule=\"{rule}\"");
        let version = format!("destination_version=\"{version}\"");
        let keep = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Ok(req) = Request::get(uri.as_str()).body(Empty::new()) else {
                    return;
                };
                let text = async {
                    let resp = client.request(req).await.ok()?;
                    let body = resp.into_body().collect().await.ok()?.to_bytes();
                    String::from_utf8(body.to_vec()).ok()
                };
                let Ok(Some(text)) = tokio::time::timeout(REQUEST_TIMEOUT, text).await else {
                    continue;
                };
                if let Some(w) = route_weight(&text, &rule, &version) {
                    let mut seen = keep.lock().unwrap_or_else(|p| p.into_inner());
                    if seen.last() != Some(&w) {
                        seen.push(w);
                    }
                }
            }
        });
        WeightWatch { seen, task }
    }

    /// The distinct weights seen so far, in order.
    pub fn seen(&self) -> Vec<u32> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The value of the `weir_route_weight` sample whose labels include both matchers.
fn route_weight(text: &str, rule: &str, version: &str) -> Option<u32> {
    text.lines()
        .filter(|l| l.starts_with("weir_route_weight{") && l.contains(rule) && l.contains(version))
        .find_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .map(|v| v.round() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_weight_is_read_from_the_exposition() {
        let text = "# TYPE weir_route_weight gauge\n\
            weir_route_weight{virtual_service=\"payment-svc\",rule=\"canary-split\",destination_service_name=\"payment-svc\",destination_version=\"v1\"} 90\n\
            weir_route_weight{virtual_service=\"payment-svc\",rule=\"canary-split\",destination_service_name=\"payment-svc\",destination_version=\"v2\"} 10\n\
            weir_route_weight{virtual_service=\"payment-svc\",rule=\"dark-launch\",destination_service_name=\"payment-svc\",destination_version=\"v2\"} 100\n";
        let rule = "rule=\"canary-split\"";
        assert_eq!(
            route_weight(text, rule, "destination_version=\"v2\""),
            Some(10)
        );
        assert_eq!(
            route_weight(text, rule, "destination_version=\"v1\""),
            Some(90)
        );
        assert_eq!(route_weight(text, rule, "destination_version=\"v3\""), None);
    }
}
