//! Tries, as Envoy's router makes them: pick an endpoint, send with the per-try and route
//! deadlines, retry on the policy's conditions after a jittered back-off, and flag `URX` when
//! the retries ran out on a retriable answer.

use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};
use tokio::time::Instant;
use weir_router::balance::Lease;
use weir_router::telemetry::ResponseFlags;
use weir_router::{RetryPolicy, random_value};

use super::super::body::UpstreamBody;
use super::super::clusters::ClusterRuntime;
use super::super::failure::Failure;
use super::super::upstream::{Outgoing, Send};
use super::body::Payload;

/// One request as the retry stage replays it. It stays in the caller's frame: the retry
/// stage borrows it, so that no try moves the request (or a future holding it) by value.
#[derive(Debug)]
pub(crate) struct Exchange<'a> {
    pub method: &'a http::Method,
    pub path: &'a http::uri::PathAndQuery,
    /// Cloned for a try that may be followed by another, taken by the last one.
    pub headers: HeaderMap,
    /// A streamed body is taken by the first try.
    pub payload: Payload,
    /// The consistent-hash key for the balancer.
    pub hash: Option<u64>,
    /// Whether the request may be sent more than once (not an upgrade).
    pub replayable: bool,
}

/// Sends `exchange` to `cluster` through `sender`, with `policy`'s retries (an `attempts: 0`
/// policy or `None`: one try) within the route deadline. Adds `URX` to `flags` when the
/// retries are exhausted on a retriable answer.
pub(crate) async fn send_with_retries<S: Send>(
    sender: &S,
    cluster: &ClusterRuntime,
    exchange: &mut Exchange<'_>,
    policy: Option<&RetryPolicy>,
    deadline: Option<Instant>,
    flags: &mut ResponseFlags,
) -> Result<(Response<S::Body>, Lease), Failure> {
    let policy = policy.filter(|p| p.attempts > 0);
    let replayable = exchange.replayable && !matches!(exchange.payload, Payload::Stream(_));
    let max_tries = 1 + if replayable {
        policy.map_or(0, |p| p.attempts)
    } else {
        0
    };
    let mut tries = 0;
    loop {
        tries += 1;
        let Some((endpoint, lease)) = cluster.pick(exchange.hash) else {
            return Err(Failure::NoHealthy);
        };
        let body = match &mut exchange.payload {
            Payload::Buffered(b) => UpstreamBody::Full(Some(b.clone())),
            Payload::Stream(s) => std::mem::replace(s, UpstreamBody::Empty),
            Payload::Empty => UpstreamBody::Empty,
        };
        let headers = if tries < max_tries {
            exchange.headers.clone()
        } else {
            std::mem::take(&mut exchange.headers)
        };
        let request = Outgoing {
            method: exchange.method,
            path: exchange.path,
            headers,
            body,
        };
        let sent = sender.send(endpoint, request);
        let result = match try_deadline(deadline, policy.and_then(|p| p.per_try_timeout)) {
            None => sent.await,
            Some((at, is_route)) => match tokio::time::timeout_at(at, sent).await {
                Ok(r) => r,
                Err(_) if is_route => Err(Failure::RouteTimeout),
                Err(_) => Err(Failure::TryTimeout),
            },
        };
        let retriable = policy.is_some_and(|p| match &result {
            Ok(resp) => retriable_status(p, resp.status()),
            Err(f) => retriable_failure(p, *f),
        });
        if !retriable || tries >= max_tries {
            if retriable && tries > 1 {
                *flags |= ResponseFlags::URX;
            }
            return result.map(|r| (r, lease));
        }
        drop(result);
        drop(lease);
        let pause = backoff(tries);
        if deadline.is_some_and(|d| Instant::now() + pause >= d) {
            return Err(Failure::RouteTimeout);
        }
        tokio::time::sleep(pause).await;
    }
}

/// When this try must end, and whether that is the route's deadline (`RouteTimeout`) rather
/// than the per-try timeout (`TryTimeout`, retriable).
fn try_deadline(route: Option<Instant>, per_try: Option<Duration>) -> Option<(Instant, bool)> {
    match (route, per_try) {
        (Some(d), Some(t)) => {
            let try_end = Instant::now() + t;
            Some((d.min(try_end), d <= try_end))
        }
        (Some(d), None) => Some((d, true)),
        (None, Some(t)) => Some((Instant::now() + t, false)),
        (None, None) => None,
    }
}

/// Whether a response status is retried (`5xx`, `gateway-error`, `retriable-4xx`,
/// `retriable-status-codes`).
pub(crate) fn retriable_status(policy: &RetryPolicy, status: StatusCode) -> bool {
    let on = &policy.retry_on;
    let s = status.as_u16();
    (on.server_error && status.is_server_error())
        || (on.gateway_error && matches!(s, 502..=504))
        || (on.retriable_4xx && s == 409)
        || on.status_codes.contains(&s)
}

/// Whether a try that got no response is retried, as Envoy reads `retryOn`.
pub(crate) fn retriable_failure(policy: &RetryPolicy, failure: Failure) -> bool {
    let on = &policy.retry_on;
    match failure {
        Failure::Connect => on.connect_failure || on.server_error || on.gateway_error,
        Failure::Reset => on.reset || on.server_error,
        Failure::Protocol | Failure::TryTimeout => on.server_error || on.gateway_error,
        _ => false,
    }
}

/// Envoy's retry back-off: fully jittered, 25 ms doubling per retry, at most 250 ms.
fn backoff(tries: u32) -> Duration {
    let ceiling = (25u64 << tries.saturating_sub(1).min(4)).min(250);
    Duration::from_millis(random_value() % ceiling + 1)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::future::Future;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::Method;
    use http::uri::PathAndQuery;
    use weir_router::testing::ServiceFixture;
    use weir_router::{LiveTable, RetryOn};

    use super::super::super::clusters::{ClusterTable, EndpointRuntime};
    use super::*;
    use crate::metrics::Metrics;

    /// What the fake upstream does on one try.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        Status(u16),
        Fail(Failure),
        /// Answers 200 after this long.
        Slow(Duration),
    }

    /// An upstream sender answering from a script, recording each try's endpoint and body.
    #[derive(Default)]
    struct Fake {
        script: Mutex<VecDeque<Answer>>,
        tries: Mutex<Vec<(String, Option<Bytes>)>>,
    }

    impl Fake {
        fn new(script: &[Answer]) -> Self {
            Fake {
                script: Mutex::new(script.iter().copied().collect()),
                tries: Mutex::default(),
            }
        }

        fn tries(&self) -> usize {
            self.tries.lock().unwrap().len()
        }
    }

    impl Send for Fake {
        type Body = ();

        fn send(
            &self,
            endpoint: &EndpointRuntime,
            request: Outgoing<'_>,
        ) -> impl Future<Output = Result<Response<()>, Failure>> + std::marker::Send {
            let body = match request.body {
                UpstreamBody::Full(b) => b,
                _ => None,
            };
            self.tries
                .lock()
                .unwrap()
                .push((endpoint.authority.to_string(), body));
            let answer = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Answer::Status(200));
            async move {
                match answer {
                    Answer::Status(s) => {
                        let mut r = Response::new(());
                        *r.status_mut() = StatusCode::from_u16(s).unwrap();
                        Ok(r)
                    }
                    Answer::Fail(f) => Err(f),
                    Answer::Slow(d) => {
                        tokio::time::sleep(d).await;
                        Ok(Response::new(()))
                    }
                }
            }
        }
    }

    fn clusters(endpoints: usize) -> (LiveTable, weir_router::Extension<ClusterTable>) {
        let ports = (0..endpoints).map(|i| 1001 + i as u16);
        // Compiled without the validator, which refuses a subset without endpoints (IST0173).
        let compiled = ServiceFixture::new("svc")
            .endpoints(ports, None)
            .load_balancer("{simple: ROUND_ROBIN}")
            .compile();
        let live = LiveTable::new(compiled.table.expect("compiles"));
        let metrics = Arc::new(Metrics::new("t"));
        let slot = live.extend(move |t, prev| ClusterTable::build(t, prev, &metrics));
        (live, slot)
    }

    fn policy(attempts: u32, per_try: Option<u64>, retry_on: RetryOn) -> RetryPolicy {
        RetryPolicy {
            attempts,
            per_try_timeout: per_try.map(Duration::from_millis),
            retry_on,
        }
    }

    struct Run {
        result: Result<u16, Failure>,
        flags: ResponseFlags,
        tries: usize,
    }

    async fn run(
        script: &[Answer],
        policy: Option<&RetryPolicy>,
        payload: Payload,
        route_timeout: Option<u64>,
    ) -> (Run, Fake) {
        let (live, slot) = clusters(2);
        let published = live.load();
        let cluster = published.extension(slot).unwrap().cluster(0);
        let fake = Fake::new(script);
        let path = PathAndQuery::from_static("/pay");
        let mut flags = ResponseFlags::NONE;
        let mut exchange = Exchange {
            method: &Method::POST,
            path: &path,
            headers: HeaderMap::new(),
            payload,
            hash: None,
            replayable: true,
        };
        let deadline = route_timeout.map(|ms| Instant::now() + Duration::from_millis(ms));
        let result = send_with_retries(&fake, cluster, &mut exchange, policy, deadline, &mut flags)
            .await
            .map(|(r, _lease)| r.status().as_u16());
        let tries = fake.tries();
        (
            Run {
                result,
                flags,
                tries,
            },
            fake,
        )
    }

    /// Istio's default policy: 2 retries on `connect-failure,refused-stream,unavailable,
    /// cancelled,retriable-status-codes` (503), so a 503 is retried and a 500 is not.
    #[tokio::test]
    async fn istio_default_policy_retries_503_and_connect_failures_only() {
        let default = weir_router::istio_default_retries();
        // (script, answer, tries, URX)
        type Row = (&'static [Answer], Result<u16, Failure>, usize, bool);
        let rows: [Row; 6] = [
            (
                &[Answer::Status(503), Answer::Status(200)],
                Ok(200),
                2,
                false,
            ),
            (&[Answer::Status(500)], Ok(500), 1, false),
            (
                &[Answer::Fail(Failure::Connect), Answer::Status(200)],
                Ok(200),
                2,
                false,
            ),
            (
                &[
                    Answer::Status(503),
                    Answer::Status(503),
                    Answer::Status(503),
                ],
                Ok(503),
                3,
                true,
            ),
            (
                &[Answer::Fail(Failure::Connect); 3],
                Err(Failure::Connect),
                3,
                true,
            ),
            (&[Answer::Status(404)], Ok(404), 1, false),
        ];
        for (script, want, tries, urx) in rows {
            let (r, _) = run(script, Some(&default), Payload::Empty, None).await;
            assert_eq!(r.result, want, "{script:?}");
            assert_eq!(r.tries, tries, "{script:?}");
            assert_eq!(r.flags.contains(ResponseFlags::URX), urx, "{script:?}");
        }
    }

    /// Each retry goes to the next endpoint (round robin) with the same buffered body.
    #[tokio::test]
    async fn retries_replay_the_buffered_body_on_another_endpoint() {
        let default = weir_router::istio_default_retries();
        let body = Bytes::from_static(b"amount=10");
        let (r, fake) = run(
            &[Answer::Status(503), Answer::Status(200)],
            Some(&default),
            Payload::Buffered(body.clone()),
            None,
        )
        .await;
        assert_eq!(r.result, Ok(200));
        let tries = fake.tries.lock().unwrap().clone();
        assert_eq!(tries.len(), 2);
        assert_ne!(tries[0].0, tries[1].0, "{tries:?}");
        assert!(tries.iter().all(|(_, b)| b.as_ref() == Some(&body)));
    }

    /// A streamed body can be sent once: no retry, whatever the policy.
    #[tokio::test]
    async fn a_streamed_body_is_not_retried() {
        let default = weir_router::istio_default_retries();
        let stream = UpstreamBody::Full(Some(Bytes::from_static(b"x")));
        let (r, _) = run(
            &[Answer::Status(503), Answer::Status(200)],
            Some(&default),
            Payload::Stream(stream),
            None,
        )
        .await;
        assert_eq!((r.result, r.tries), (Ok(503), 1));
        assert!(!r.flags.contains(ResponseFlags::URX));
    }

    /// `perTryTimeout` ends a slow try with `TryTimeout` and retries it (Envoy retries a try
    /// timeout on `5xx`/`gateway-error`); exhausted, the answer is 504 `UT` + `URX`.
    #[tokio::test]
    async fn per_try_timeout_is_retried_then_answers_504_ut() {
        let on = RetryOn {
            gateway_error: true,
            ..RetryOn::default()
        };
        let p = policy(1, Some(30), on);
        let slow = Answer::Slow(Duration::from_secs(30));
        let (r, _) = run(&[slow, Answer::Status(200)], Some(&p), Payload::Empty, None).await;
        assert_eq!((r.result, r.tries), (Ok(200), 2));
        let (r, _) = run(&[slow, slow], Some(&p), Payload::Empty, None).await;
        assert_eq!((r.result, r.tries), (Err(Failure::TryTimeout), 2));
        assert!(r.flags.contains(ResponseFlags::URX));
        let (status, flag, _) = Failure::TryTimeout.local();
        assert_eq!((status.as_u16(), flag), (504, ResponseFlags::UT));
    }

    /// The route timeout bounds all tries together and is never retried.
    #[tokio::test]
    async fn route_timeout_ends_the_retries() {
        let on = RetryOn {
            gateway_error: true,
            ..RetryOn::default()
        };
        let p = policy(5, Some(40), on);
        let slow = Answer::Slow(Duration::from_secs(30));
        let started = Instant::now();
        let (r, _) = run(&[slow; 6], Some(&p), Payload::Empty, Some(100)).await;
        assert_eq!(r.result, Err(Failure::RouteTimeout));
        assert!(r.tries < 6, "{} tries", r.tries);
        assert!(started.elapsed() < Duration::from_secs(5));
        // Without a per-try timeout the route timeout ends the only try.
        let (r, _) = run(&[slow], None, Payload::Empty, Some(30)).await;
        assert_eq!((r.result, r.tries), (Err(Failure::RouteTimeout), 1));
    }

    /// `retryOn` conditions as Envoy reads them, one row per condition.
    #[tokio::test]
    async fn retry_on_conditions() {
        let cases: [(RetryOn, Answer, bool); 9] = [
            (
                RetryOn {
                    server_error: true,
                    ..RetryOn::default()
                },
                Answer::Status(500),
                true,
            ),
            (
                RetryOn {
                    server_error: true,
                    ..RetryOn::default()
                },
                Answer::Fail(Failure::Reset),
                true,
            ),
            (
                RetryOn {
                    gateway_error: true,
                    ..RetryOn::default()
                },
                Answer::Status(500),
                false,
            ),
            (
                RetryOn {
                    gateway_error: true,
                    ..RetryOn::default()
                },
                Answer::Status(502),
                true,
            ),
            (
                RetryOn {
                    gateway_error: true,
                    ..RetryOn::default()
                },
                Answer::Fail(Failure::Reset),
                false,
            ),
            (
                RetryOn {
                    reset: true,
                    ..RetryOn::default()
                },
                Answer::Fail(Failure::Reset),
                true,
            ),
            (
                RetryOn {
                    connect_failure: true,
                    ..RetryOn::default()
                },
                Answer::Fail(Failure::Protocol),
                false,
            ),
            (
                RetryOn {
                    retriable_4xx: true,
                    ..RetryOn::default()
                },
                Answer::Status(409),
                true,
            ),
            (
                RetryOn {
                    status_codes: vec![429],
                    ..RetryOn::default()
                },
                Answer::Status(429),
                true,
            ),
        ];
        for (on, answer, retried) in cases {
            let p = policy(1, None, on.clone());
            let (r, _) = run(
                &[answer, Answer::Status(200)],
                Some(&p),
                Payload::Empty,
                None,
            )
            .await;
            assert_eq!(r.tries == 2, retried, "{on:?} {answer:?}");
        }
    }

    /// No endpoint: `UH` without a try; an empty policy: one try.
    #[tokio::test]
    async fn no_endpoint_and_no_policy() {
        let (r, _) = run(&[Answer::Status(503)], None, Payload::Empty, None).await;
        assert_eq!((r.result, r.tries), (Ok(503), 1));
        let zero = policy(
            0,
            None,
            RetryOn {
                server_error: true,
                ..RetryOn::default()
            },
        );
        let (r, _) = run(&[Answer::Status(503)], Some(&zero), Payload::Empty, None).await;
        assert_eq!((r.result, r.tries), (Ok(503), 1));

        let (live, slot) = clusters(0);
        let published = live.load();
        let cluster = published.extension(slot).unwrap().cluster(0);
        let path = PathAndQuery::from_static("/");
        let mut flags = ResponseFlags::NONE;
        let fake = Fake::new(&[]);
        let mut exchange = Exchange {
            method: &Method::GET,
            path: &path,
            headers: HeaderMap::new(),
            payload: Payload::Empty,
            hash: None,
            replayable: true,
        };
        let r = send_with_retries(&fake, cluster, &mut exchange, None, None, &mut flags).await;
        assert_eq!(r.err(), Some(Failure::NoHealthy));
        assert_eq!(fake.tries(), 0);
    }

    #[test]
    fn backoff_is_jittered_under_250ms() {
        for tries in 1..10 {
            assert!(backoff(tries) <= Duration::from_millis(250));
            assert!(backoff(tries) >= Duration::from_millis(1));
        }
    }
}
