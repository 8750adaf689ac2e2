//! Test upstreams: in-process HTTP/1.1 + h2c servers on 127.0.0.1:0 with a scriptable
//! [`Behavior`].

use super::*;

// === upstreams ===

/// What a test upstream does with a request. Change it at run time through
/// [`Upstream::behavior`].
#[derive(Clone, Debug)]
pub struct Behavior {
    /// Status of normal answers.
    pub status: u16,
    /// Delay before answering.
    pub delay: Duration,
    /// Answer the first N requests with 503, then normally.
    pub fail_first: u64,
    /// Every request whose sequence number (from 1) is divisible by this fails with 500:
    /// `Some(5)` = 20% 5xx.
    pub fail_every: Option<u64>,
    /// Never answer (the connection stays open).
    pub hang: bool,
    /// Answer with the request body instead of the upstream's name.
    pub echo: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            status: 200,
            delay: Duration::ZERO,
            fail_first: 0,
            fail_every: None,
            hang: false,
            echo: false,
        }
    }
}

/// One request an upstream saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

struct UpstreamState {
    name: String,
    behavior: Mutex<Behavior>,
    count: AtomicU64,
    /// Answers by status code.
    answered: Mutex<BTreeMap<u16, u64>>,
    seen: Mutex<Vec<Seen>>,
}

/// An HTTP/1.1 + h2c server on 127.0.0.1:0 that answers with its name in the body and in the
/// `x-upstream` header, counts what it serves, and follows a scriptable [`Behavior`].
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts an upstream on the current tokio runtime.
    pub async fn start(name: &str) -> Upstream {
        Upstream::start_with(name, Behavior::default()).await
    }

    /// Starts an upstream with a behavior.
    pub async fn start_with(name: &str, behavior: Behavior) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState {
            name: name.to_string(),
            behavior: Mutex::new(behavior),
            count: AtomicU64::new(0),
            answered: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| serve_upstream(st.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received so far.
    pub fn count(&self) -> u64 {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Answers given so far, by status code.
    pub fn answered(&self) -> BTreeMap<u16, u64> {
        self.state.answered.lock().unwrap().clone()
    }

    /// The requests received so far (the last 10,000).
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Changes the behavior from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *self.state.behavior.lock().unwrap() = behavior;
    }
}

async fn serve_upstream(
    st: Arc<UpstreamState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = st.count.fetch_add(1, Ordering::SeqCst) + 1;
    let behavior = st.behavior.lock().unwrap().clone();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    {
        let mut seen = st.seen.lock().unwrap();
        if seen.len() >= 10_000 {
            seen.remove(0);
        }
        seen.push(Seen {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body_len: body.len(),
        });
    }
    if behavior.hang {
        std::future::pending::<()>().await;
    }
    if !behavior.delay.is_zero() {
        tokio::time::sleep(behavior.delay).await;
    }
    let status = if n <= behavior.fail_first {
        503
    } else if behavior
        .fail_every
        .is_some_and(|k| k > 0 && n.is_multiple_of(k))
    {
        500
    } else {
        behavior.status
    };
    *st.answered.lock().unwrap().entry(status).or_insert(0) += 1;
    let payload = if behavior.echo {
        body
    } else {
        Bytes::from(st.name.clone())
    };
    let resp = Response::builder()
        .status(status)
        .header("x-upstream", st.name.as_str())
        .body(Full::new(payload))
        .unwrap();
    Ok(resp)
}
