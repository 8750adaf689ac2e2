//! An access log line per request, in Envoy's default format or as JSON (`weir serve
//! --access-log stdout|FILE [--access-log-format json]`), off by default. Envoy's default
//! format (envoyproxy docs, "Access logging", default format string):
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
//! %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//! %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//! "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
//! ```
//!
//! A line is written when the response body has been sent (or abandoned), so `DURATION` and
//! `BYTES_SENT` cover the whole response, as Envoy's do. What weir cannot know is `-`:
//! `BYTES_RECEIVED` is the request's `content-length`, `UPSTREAM_HOST` is known on the
//! inbound side and for passthrough only, and `X-REQUEST-ID` is the client's.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Version, header};
use http_body::{Body, Frame, SizeHint};

/// How lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessLogFormat {
    /// Envoy's default text format.
    #[default]
    Text,
    /// One JSON object a line, Envoy's command operators as keys (lowercase).
    Json,
}

/// Where and how access log lines go. Shared by every connection; a line is one `write`.
pub struct AccessLog {
    sink: Mutex<Box<dyn std::io::Write + Send>>,
    format: AccessLogFormat,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Lines to standard output (`--access-log stdout`, what `kubectl logs` shows).
    pub fn stdout(format: AccessLogFormat) -> Self {
        AccessLog::to(Box::new(std::io::stdout()), format)
    }

    /// Lines appended to `path`.
    pub fn file(path: &Path, format: AccessLogFormat) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AccessLog::to(Box::new(file), format))
    }

    /// Lines written to `sink`.
    pub fn to(sink: Box<dyn std::io::Write + Send>, format: AccessLogFormat) -> Self {
        AccessLog {
            sink: Mutex::new(sink),
            format,
        }
    }

    fn write(&self, entry: &Entry) {
        let line = match self.format {
            AccessLogFormat::Text => entry.text(),
            AccessLogFormat::Json => entry.json(),
        };
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = sink.write_all(line.as_bytes()).and_then(|()| sink.flush()) {
            tracing::debug!(error = %e, "access log write failed");
        }
    }
}

/// What a line says about one request.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    start: SystemTime,
    method: String,
    path: String,
    protocol: &'static str,
    code: u16,
    flags: String,
    bytes_received: u64,
    bytes_sent: u64,
    duration_ms: u128,
    x_forwarded_for: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    authority: Option<String>,
    upstream_host: Option<String>,
}

/// A request whose line is written when its response ends.
#[derive(Debug)]
pub(crate) struct Pending {
    log: Arc<AccessLog>,
    entry: Entry,
    started: Instant,
}

impl Pending {
    /// Reads what the line needs from the request head; `upstream_host` when known.
    pub(crate) fn start<B>(
        log: &Arc<AccessLog>,
        req: &Request<B>,
        upstream_host: Option<String>,
    ) -> Self {
        let headers = req.headers();
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| text("host"));
        let path = text("x-envoy-original-path").unwrap_or_else(|| {
            req.uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_string(), |p| p.to_string())
        });
        Pending {
            log: Arc::clone(log),
            entry: Entry {
                start: SystemTime::now(),
                method: req.method().to_string(),
                path,
                protocol: protocol(req.version()),
                code: 0,
                flags: "-".to_string(),
                bytes_received: content_length(headers),
                bytes_sent: 0,
                duration_ms: 0,
                x_forwarded_for: text("x-forwarded-for"),
                user_agent: text("user-agent"),
                request_id: text("x-request-id"),
                authority,
                upstream_host,
            },
            started: Instant::now(),
        }
    }

    /// The response, its body writing the line when it ends.
    pub(crate) fn respond<B>(mut self, resp: Response<B>) -> Response<Logged<B>> {
        self.entry.code = resp.status().as_u16();
        if let Some(flags) = resp
            .headers()
            .get("x-weir-flags")
            .and_then(|v| v.to_str().ok())
        {
            self.entry.flags = flags.to_string();
        }
        resp.map(|inner| Logged {
            inner,
            pending: Some(self),
        })
    }

    fn finish(mut self) {
        self.entry.duration_ms = self.started.elapsed().as_millis();
        self.log.write(&self.entry);
    }
}

/// A response body that counts the bytes sent and writes the access log line at its end.
#[derive(Debug)]
pub struct Logged<B> {
    inner: B,
    pending: Option<Pending>,
}

impl<B> Logged<B> {
    /// `resp` with its line written at its end when `pending`, as it is otherwise.
    pub(crate) fn wrap(pending: Option<Pending>, resp: Response<B>) -> Response<Logged<B>> {
        match pending {
            Some(p) => p.respond(resp),
            None => resp.map(|inner| Logged {
                inner,
                pending: None,
            }),
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Logged<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(p)) = (frame.data_ref(), this.pending.as_mut()) {
                    p.entry.bytes_sent += data.len() as u64;
                }
            }
            Poll::Ready(_) => {
                if let Some(p) = this.pending.take() {
                    p.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            p.finish();
        }
    }
}

impl Entry {
    /// Envoy's default format.
    fn text(&self) -> String {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
        format!(
            "[{}] \"{} {} {}\" {} {} {} {} {} - \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"\n",
            start_time(self.start),
            self.method,
            self.path,
            self.protocol,
            self.code,
            self.flags,
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            dash(&self.x_forwarded_for),
            dash(&self.user_agent),
            dash(&self.request_id),
            dash(&self.authority),
            dash(&self.upstream_host),
        )
    }

    /// One JSON object, keyed as Envoy's JSON access logs usually are.
    fn json(&self) -> String {
        let value = serde_json::json!({
            "start_time": start_time(self.start),
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "response_code": self.code,
            "response_flags": self.flags,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "duration": self.duration_ms,
            "upstream_service_time": null,
            "x_forwarded_for": self.x_forwarded_for,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "authority": self.authority,
            "upstream_host": self.upstream_host,
        });
        let mut line = value.to_string();
        line.push('\n');
        line
    }
}

/// `%PROTOCOL%`.
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn content_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0)
}

/// `%START_TIME%`: `2016-04-15T20:17:00.310Z`, UTC with milliseconds.
fn start_time(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    let mut out = String::with_capacity(24);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    );
    out
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Envoy's documented example line of the default format:
    /// `[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100
    /// "10.0.35.28" "nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations"
    /// "tcp://10.0.2.1:80"`. weir writes the same fields in the same places; it has no
    /// upstream service time (`-`).
    fn example() -> Entry {
        Entry {
            start: UNIX_EPOCH + Duration::from_millis(1_460_751_420_310),
            method: "POST".into(),
            path: "/api/v1/locations".into(),
            protocol: "HTTP/2",
            code: 204,
            flags: "-".into(),
            bytes_received: 154,
            bytes_sent: 0,
            duration_ms: 226,
            x_forwarded_for: Some("10.0.35.28".into()),
            user_agent: Some("nsq2http".into()),
            request_id: Some("cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2".into()),
            authority: Some("locations".into()),
            upstream_host: Some("10.0.2.1:80".into()),
        }
    }

    #[test]
    fn a_text_line_has_envoys_default_format() {
        assert_eq!(
            example().text(),
            "[2016-04-15T20:17:00.310Z] \"POST /api/v1/locations HTTP/2\" 204 - 154 0 226 - \
             \"10.0.35.28\" \"nsq2http\" \"cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2\" \"locations\" \
             \"10.0.2.1:80\"\n"
        );
        let mut unknown = example();
        unknown.x_forwarded_for = None;
        unknown.upstream_host = None;
        unknown.flags = "NR".into();
        let line = unknown.text();
        assert!(line.contains(" 204 NR 154 0 226 - \"-\" "), "{line}");
        assert!(line.ends_with(" \"locations\" \"-\"\n"), "{line}");
    }

    #[test]
    fn a_json_line_is_one_object_with_envoys_fields() {
        let line = example().json();
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["start_time"], "2016-04-15T20:17:00.310Z");
        assert_eq!(v["response_code"], 204);
        assert_eq!(v["authority"], "locations");
        assert_eq!(v["upstream_service_time"], serde_json::Value::Null);
    }

    #[test]
    fn start_times_are_utc_calendar_dates() {
        for (millis, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(start_time(UNIX_EPOCH + Duration::from_millis(millis)), text);
        }
    }
}
