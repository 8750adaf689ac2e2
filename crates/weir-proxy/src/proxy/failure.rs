//! Why the proxy answers a request itself, and the one table from a failure to the answer:
//! status, Envoy's response flag and body text (Envoy's own texts, so that clients and
//! dashboards that parse them keep working).

use http::{HeaderMap, HeaderValue, StatusCode, Version, header};

use super::body::ResponseBody;
use super::headers::X_WEIR_FLAGS;
use crate::telemetry::Recorder;
use weir_router::telemetry::ResponseFlags;

/// Why a request gets a response made by the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The request head is refused before routing: two `Host` headers, `Host` and
    /// `:authority` differ, or a path that cannot be normalised (400 `DPE`).
    BadRequest,
    /// No VirtualService or rule routes the request.
    NoRoute,
    /// The rule's fault injection aborted the request with this status.
    FaultAbort(StatusCode),
    /// The request body did not arrive before the route timeout.
    BodyTimeout,
    /// The client's request body broke off: the client went away mid-upload (or sent more
    /// than it announced). The client's fault: `DC`, never a failure of the destination.
    BodyBroken,
    /// The client's request body does not decode (a bad chunk size or line, an oversized chunk
    /// extension, an h2 stream error). The client's fault: 400 `DPE`.
    BodyMalformed,
    /// The subset has no endpoint.
    NoHealthy,
    /// Connecting failed.
    Connect,
    /// The connection closed or was reset before the response head.
    Reset,
    /// The upstream spoke invalid HTTP.
    Protocol,
    /// The per-try timeout expired.
    TryTimeout,
    /// The route timeout expired.
    RouteTimeout,
    /// The proxy's own state is missing (a bug): the cluster table of the route table.
    Internal,
    /// A transparently received request came back through weir too often (`x-weir-hops`):
    /// weir's own connections are captured again.
    Loop,
}

// === impl Failure ===

impl Failure {
    /// The answer: status, response flag, body.
    pub fn local(self) -> (StatusCode, ResponseFlags, &'static str) {
        const RESET: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination\n";
        match self {
            Failure::BadRequest => (StatusCode::BAD_REQUEST, ResponseFlags::DPE, "bad request\n"),
            Failure::NoRoute => (
                StatusCode::NOT_FOUND,
                ResponseFlags::NR,
                "no route: no VirtualService or rule matches the request\n",
            ),
            Failure::FaultAbort(status) => (status, ResponseFlags::FI, "fault filter abort\n"),
            Failure::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                ResponseFlags::UT,
                "request body not received\n",
            ),
            Failure::BodyBroken => (
                StatusCode::BAD_REQUEST,
                ResponseFlags::DC,
                "request body not received\n",
            ),
            Failure::BodyMalformed => (
                StatusCode::BAD_REQUEST,
                ResponseFlags::DPE,
                "bad request: the request body is malformed\n",
            ),
            Failure::NoHealthy => (
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::UH,
                "no healthy upstream\n",
            ),
            Failure::Connect => (
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::UF,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure\n",
            ),
            Failure::Reset => (StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::UC, RESET),
            Failure::Protocol => (
                StatusCode::BAD_GATEWAY,
                ResponseFlags::UC,
                "upstream protocol error\n",
            ),
            Failure::TryTimeout | Failure::RouteTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                ResponseFlags::UT,
                "upstream request timeout\n",
            ),
            Failure::Loop => (
                StatusCode::LOOP_DETECTED,
                ResponseFlags::NONE,
                "weir: request loop: this request passed weir's transparent listener too often (x-weir-hops); \
                 weir's own upstream connections are being captured again. Run weir as the uid weir init exempts \
                 (--proxy-uid, default 1337)\n",
            ),
            Failure::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ResponseFlags::NONE,
                "weir: no cluster table for the route table in force (a bug; please report it)\n",
            ),
        }
    }

    /// The response to the client, counted by `rec`; `flags` are those the request gathered
    /// before failing (`DI`, `URX`).
    pub fn respond(
        self,
        rec: Recorder,
        version: Version,
        flags: ResponseFlags,
    ) -> http::Response<ResponseBody> {
        self.respond_saying(None, rec, version, flags)
    }

    /// [`respond`](Failure::respond) with `text` as the body instead of the failure's own
    /// (e.g. the `NR` answer naming the host and the hosts that are known).
    pub fn respond_saying(
        self,
        text: Option<String>,
        mut rec: Recorder,
        version: Version,
        flags: ResponseFlags,
    ) -> http::Response<ResponseBody> {
        let (status, flag, own) = self.local();
        let flags = flags | flag;
        rec.outcome(status, flags);
        let grpc = rec.grpc;
        let body = match text {
            Some(text) => ResponseBody::local_owned(text, rec),
            None => ResponseBody::local(own, rec),
        };
        let mut resp = http::Response::new(body);
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if grpc {
            // gRPC clients read the status from here when there is no trailer (UNAVAILABLE).
            headers.insert("grpc-status", HeaderValue::from_static("14"));
        }
        mark(headers, flags);
        resp
    }

    /// What a hyper-util client error means.
    pub fn classify(e: hyper_util::client::legacy::Error) -> Failure {
        if e.is_connect() {
            return Failure::Connect;
        }
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            if let Some(h) = s.downcast_ref::<hyper::Error>() {
                return Failure::of_connection_error(h);
            }
            source = s.source();
        }
        Failure::Reset
    }

    /// What hyper's error on an upstream connection means: the request body's fault (the
    /// downstream's), invalid HTTP from the upstream, or a reset.
    pub fn of_connection_error(e: &hyper::Error) -> Failure {
        if let Some(client) = Failure::of_request_body(e) {
            client
        } else if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
            Failure::Protocol
        } else {
            Failure::Reset
        }
    }

    /// Whether an upstream client's error is the request body's (the downstream's) fault:
    /// hyper reports a body that failed while being sent as a user error whose cause is the
    /// body's own error. `None`: the upstream's fault.
    pub fn of_request_body(e: &hyper::Error) -> Option<Failure> {
        if !e.is_user() {
            return None;
        }
        std::error::Error::source(e).map(Failure::of_body_error)
    }

    /// What an error of the downstream request body means: the client went away
    /// (`BodyBroken`, `DC`) or sent something that does not decode (`BodyMalformed`, `DPE`).
    pub fn of_body_error(e: &(dyn std::error::Error + 'static)) -> Failure {
        use std::io::ErrorKind;
        let mut cause = Some(e);
        while let Some(c) = cause {
            if c.is::<super::body::Stalled>() {
                return Failure::BodyTimeout;
            }
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::TimedOut => Failure::BodyBroken,
                    _ => Failure::BodyMalformed,
                };
            }
            if let Some(h2) = c.downcast_ref::<h2::Error>() {
                let gone = h2.is_io()
                    || h2.is_go_away()
                    || matches!(
                        h2.reason(),
                        Some(h2::Reason::CANCEL | h2::Reason::NO_ERROR | h2::Reason::STREAM_CLOSED)
                    );
                return if gone {
                    Failure::BodyBroken
                } else {
                    Failure::BodyMalformed
                };
            }
            if let Some(h) = c.downcast_ref::<hyper::Error>()
                && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
            {
                return Failure::BodyBroken;
            }
            if c.is::<http_body_util::LengthLimitError>() {
                // More than the `content-length` it announced: cut off, as a broken body.
                return Failure::BodyBroken;
            }
            cause = c.source();
        }
        Failure::BodyMalformed
    }
}

/// Marks a response with the request's flags (`x-weir-flags`).
pub(crate) fn mark(headers: &mut HeaderMap, flags: ResponseFlags) {
    if let Ok(v) = HeaderValue::from_str(&flags.to_string()) {
        headers.insert(X_WEIR_FLAGS.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Envoy's answers, one row per failure.
    #[test]
    fn every_failure_maps_to_envoys_status_and_flag() {
        let rows = [
            (Failure::BadRequest, 400, "DPE"),
            (Failure::NoRoute, 404, "NR"),
            (Failure::FaultAbort(StatusCode::IM_A_TEAPOT), 418, "FI"),
            (Failure::BodyTimeout, 408, "UT"),
            (Failure::BodyBroken, 400, "DC"),
            (Failure::BodyMalformed, 400, "DPE"),
            (Failure::NoHealthy, 503, "UH"),
            (Failure::Connect, 503, "UF"),
            (Failure::Reset, 503, "UC"),
            (Failure::Protocol, 502, "UC"),
            (Failure::TryTimeout, 504, "UT"),
            (Failure::RouteTimeout, 504, "UT"),
            (Failure::Internal, 500, "-"),
        ];
        for (failure, status, flag) in rows {
            let (s, f, text) = failure.local();
            assert_eq!(
                (s.as_u16(), f.to_string().as_str()),
                (status, flag),
                "{failure:?}"
            );
            assert!(text.ends_with('\n'), "{failure:?}");
        }
        assert!(Failure::Connect.local().2.contains("connection failure"));
        assert!(Failure::Reset.local().2.contains("connection termination"));
    }

    /// A request body's error is the client's: gone (`DC`) or malformed (`DPE`), never the
    /// destination's 503 `UC`.
    #[test]
    fn request_body_errors_are_the_clients_fault() {
        use std::io::{Error, ErrorKind};
        let rows: [(Box<dyn std::error::Error + Send + Sync>, Failure); 8] = [
            (
                Error::new(ErrorKind::InvalidInput, "invalid chunk size line").into(),
                Failure::BodyMalformed,
            ),
            (
                Error::new(ErrorKind::InvalidData, "chunk extensions over limit").into(),
                Failure::BodyMalformed,
            ),
            (
                Error::new(ErrorKind::UnexpectedEof, "incomplete body").into(),
                Failure::BodyBroken,
            ),
            (
                Error::new(ErrorKind::ConnectionReset, "reset").into(),
                Failure::BodyBroken,
            ),
            (
                h2::Error::from(h2::Reason::CANCEL).into(),
                Failure::BodyBroken,
            ),
            (
                h2::Error::from(h2::Reason::PROTOCOL_ERROR).into(),
                Failure::BodyMalformed,
            ),
            (limit_error(), Failure::BodyBroken),
            (
                Box::new(super::super::body::Stalled(std::time::Duration::from_secs(
                    1,
                ))),
                Failure::BodyTimeout,
            ),
        ];
        for (err, want) in rows {
            assert_eq!(Failure::of_body_error(&*err), want, "{err}");
            let (status, flags, _) = want.local();
            assert!(status.is_client_error(), "{err}");
            assert!(
                !flags.contains(ResponseFlags::UC) && !flags.contains(ResponseFlags::UF),
                "{err}"
            );
        }
    }

    /// `Limited`'s own error (its type cannot be built outside http-body-util).
    fn limit_error() -> Box<dyn std::error::Error + Send + Sync> {
        use http_body_util::{BodyExt, Full, Limited};
        let body = Limited::new(Full::new(bytes::Bytes::from_static(b"12345")), 2);
        let polled = futures_now(body.collect());
        polled.expect_err("over the limit")
    }

    fn futures_now<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
