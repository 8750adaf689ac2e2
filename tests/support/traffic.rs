//! Steady traffic through a sidecar, weight watching and the canary CLI (canary.rs,
//! prometheus.rs).

use super::*;

// === steady traffic, weight watching and the canary CLI (canary.rs, prometheus.rs) ===

/// One request of [`SteadyTraffic`]: which client sent it, when, and who answered.
#[derive(Clone, Debug)]
pub struct Answer {
    pub client: usize,
    pub sent: Instant,
    /// The `x-upstream` header (`v1`, `v2`); empty without an answer.
    pub upstream: String,
    /// 0 without an answer.
    pub status: u16,
}

/// Steady traffic through weir proxies: each client sends `GET /pay` with `Host: payment-svc`
/// in sequence, pausing between requests; clients go round the proxies. Every request is
/// recorded. Stops when dropped.
pub struct SteadyTraffic {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SteadyTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SteadyTraffic {
    /// `plain` clients without headers and `tagged` clients sending `x-canary: true`, each
    /// pausing `pause` between requests.
    pub fn start(proxies: &[String], plain: usize, tagged: usize, pause: Duration) -> Self {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..plain + tagged)
            .map(|client| {
                let url = format!("{}/pay", proxies[client % proxies.len()]);
                let headers: &'static [(&'static str, &'static str)] = if client >= plain {
                    &[("x-canary", "true")]
                } else {
                    &[]
                };
                let (answers, stop) = (answers.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let sent = Instant::now();
                        let result = tokio::time::timeout(
                            Duration::from_secs(10),
                            try_http_request(
                                "GET",
                                &url,
                                Some("payment-svc"),
                                headers,
                                Bytes::new(),
                            ),
                        )
                        .await;
                        let (status, upstream) = match result {
                            Ok(Ok((status, h, _))) => (
                                status.as_u16(),
                                h.get("x-upstream")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string(),
                            ),
                            _ => (0, String::new()),
                        };
                        answers.lock().unwrap().push(Answer {
                            client,
                            sent,
                            upstream,
                            status,
                        });
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        SteadyTraffic {
            answers,
            stop,
            tasks,
        }
    }

    /// Every request so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    /// Whether every client has had an answer to a request sent after `t`: nothing sent
    /// before `t` is still in flight.
    pub fn settled_since(&self, t: Instant) -> bool {
        let answers = self.answers.lock().unwrap();
        (0..self.tasks.len()).all(|c| answers.iter().any(|a| a.client == c && a.sent > t))
    }
}

/// Polls a sidecar's `/metrics` every 50 ms and keeps each distinct value of
/// `weir_route_weight` for one version on one rule, in order.
pub struct WeightWatch {
    seen: Arc<Mutex<Vec<u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WeightWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WeightWatch {
    /// Watches `admin_url` (with a bearer `token` if given).
    pub fn start(admin_url: &str, token: Option<&str>, rule: &str, version: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let url = format!("{admin_url}/metrics");
        let auth = token.map(|t| format!("Bearer {t}"));
        let (rule, version, keep) = (rule.to_string(), version.to_string(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let headers: Vec<(&str, &str)> = auth
                    .as_deref()
                    .map(|a| ("authorization", a))
                    .into_iter()
                    .collect();
                if let Ok((StatusCode::OK, _, body)) =
                    try_http_request("GET", &url, None, &headers, Bytes::new()).await
                {
                    let text = String::from_utf8_lossy(&body);
                    let weight = metric_samples(&text, "weir_route_weight")
                        .into_iter()
                        .find(|(l, _)| {
                            l.get("rule") == Some(&rule)
                                && l.get("destination_version") == Some(&version)
                        })
                        .map(|(_, v)| v.round() as u32);
                    if let Some(w) = weight {
                        let mut seen = keep.lock().unwrap();
                        if seen.last() != Some(&w) {
                            seen.push(w);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        WeightWatch { seen, task }
    }

    /// The distinct weights seen so far, in order.
    pub fn seen(&self) -> Vec<u32> {
        self.seen.lock().unwrap().clone()
    }
}

/// Whether `wanted` appears in `seen` in order, other values allowed between.
pub fn in_order(wanted: &[u32], seen: &[u32]) -> bool {
    let mut seen = seen.iter();
    wanted.iter().all(|w| seen.any(|s| s == w))
}
