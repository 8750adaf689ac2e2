//! weir's own HTTP/1.1 server side, for the requests that are nearly all of a proxy's traffic:
//! an HTTP/1.1 head with no body. hyper keeps everything else, for the rest of the connection.
//!
//! ```text
//! accept -> read into one small buffer (1 KiB, doubling up to 8 KiB for a longer head,
//!           reused from its start for every head)
//!   -> an HTTP/1.1 head, complete within 8 KiB, without a body (no transfer-encoding, no
//!      content-length but 0), not CONNECT, no upgrade, expect or te
//!        -> answered here (NewService::call_bodyless), then the next head
//!   -> anything else: a body, HTTP/1.0, the h2c preface, a longer head, a parse error
//!        -> handed to hyper with every byte read so far (`Watched`'s first bytes); hyper
//!           serves the rest
//! ```
//!
//! Why: hyper's server gives every connection a read buffer that grows to 16 KiB and is read
//! at an advancing offset (every byte of it touched over time), an 8 KiB write buffer and a
//! dispatch state machine; at 1,000 connections those buffers were 24.6 of the proxy's 36 MB
//! (heaptrack at peak). Here a connection holds the 1 KiB it reads heads into and the bytes of
//! the response head it writes, and a response of one small frame leaves in one `write`.
//!
//! What it keeps of hyper's server, so that a client cannot tell them apart: the head is
//! parsed by httparse as hyper parses it (100 fields at most; what hyper would refuse is handed
//! to hyper, which answers 400 or 431 and counts it), header values and the target share the
//! read buffer (no copy), the response head is written as hyper writes it (lower-case names,
//! the reason phrase of [`hyper::ext::ReasonPhrase`], `content-length` from the body's exact
//! size, else `transfer-encoding: chunked`, none for HEAD, 204 and 304, a `date` when the
//! response has none, `connection: close` when the client asked for it or the listener is
//! shutting down), a body longer than its `content-length` is cut there, trailers are not sent
//! (the client did not ask for them: a `te` request goes to hyper), and a client that closes
//! its side while its request is in flight cancels it (hyper's `half_close(false)`).

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice, Write as _};
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::limits::Activity;
use super::{BoxError, NewService, NoBody};

/// What a head is first read into (nginx's `client_header_buffer_size`); a longer head grows
/// it, doubling. The buffer is reused from its start once its heads are gone.
const READ_BUF: usize = 1024;
/// A head not complete within this many bytes is hyper's (which takes up to the listener's
/// `max_request_head`).
const HEAD_LIMIT: usize = 8192;
/// The fields the proxy adds to a request on its way (see `headers::set_forwarded`).
const FORWARDING_FIELDS: usize = 4;
/// hyper's limit on the fields of a head.
const MAX_HEADERS: usize = 100;
/// Body frames up to this size are copied behind what is waiting to be written, unless they
/// end the body; larger ones (and the last) are written from where they are (`writev`).
const COPY_MAX: usize = 8192;
/// A write buffer grown past this is given back after its response.
const KEEP_WRITE_BUF: usize = 16 * 1024;

/// How a connection left weir's reader.
pub(super) enum End<S> {
    /// It is done (closed by either side, or by a shutdown); what it died of, if anything.
    Closed(Result<(), BoxError>),
    /// hyper serves the rest of it with the service, beginning with these bytes (read, not
    /// yet served).
    HandOver(Bytes, S),
}

/// Serves `stream` until it closes or has a request that hyper must read.
pub(super) async fn serve<N: NewService>(
    new: &N,
    service: N::Service,
    stream: &TcpStream,
    activity: &Arc<Activity>,
    stop: &mut watch::Receiver<bool>,
) -> End<N::Service> {
    let mut conn = Conn {
        stream,
        activity,
        buf: BytesMut::new(),
        out: Vec::new(),
    };
    loop {
        let head = match conn.next_head(stop).await {
            Next::Head(head) => head,
            Next::Hyper => return End::HandOver(conn.buf.freeze(), service),
            Next::Closed(result) => return End::Closed(result),
        };
        let Parsed { req, keep_alive } = head;
        let head_request = req.method() == Method::HEAD;
        let in_flight = activity.begin();
        // Made where it is polled: the future is large, and moving it costs.
        let answer = pin!(new.call_bodyless(&service, req));
        let Some(Ok(resp)) = conn.or_gone(answer).await else {
            return End::Closed(Err(gone()));
        };
        let keep_alive = keep_alive && !*stop.borrow();
        match conn.respond(resp, head_request, keep_alive).await {
            Ok(true) => {}
            Ok(false) => return End::Closed(Ok(())),
            Err(e) => return End::Closed(Err(e)),
        }
        drop(in_flight);
    }
}

/// The error of a client that closed its connection while its request was in flight.
fn gone() -> BoxError {
    Box::new(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the client closed its connection before the response was sent",
    ))
}

/// One connection's state between heads.
struct Conn<'s> {
    stream: &'s TcpStream,
    activity: &'s Arc<Activity>,
    /// Bytes read and not yet served.
    buf: BytesMut,
    /// The response being written.
    out: Vec<u8>,
}

/// What comes next on a connection.
#[expect(
    clippy::large_enum_variant,
    reason = "one per request, moved once on the stack; boxing would cost an allocation"
)]
enum Next {
    Head(Parsed),
    /// A head (or bytes) hyper must read; the bytes are in `buf`.
    Hyper,
    Closed(Result<(), BoxError>),
}

/// A head read here.
struct Parsed {
    /// Its values and target share the head's bytes.
    req: Request<NoBody>,
    /// The client did not ask for `connection: close`.
    keep_alive: bool,
}

/// How a response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

impl Conn<'_> {
    /// The next head: parsed from what was read, or read first (a shutdown closes a
    /// connection waiting for one).
    async fn next_head(&mut self, stop: &mut watch::Receiver<bool>) -> Next {
        loop {
            if !self.buf.is_empty() {
                match parse(&mut self.buf) {
                    Parse::Request(head) => return Next::Head(head),
                    Parse::Partial if self.buf.len() < HEAD_LIMIT => {}
                    Parse::Partial | Parse::Other => return Next::Hyper,
                }
            }
            // Empty: back to the buffer's start (it is unique once the last head is gone).
            self.buf.reserve(READ_BUF.max(self.buf.len()));
            let read = tokio::select! {
                biased;
                _ = stop.wait_for(|stopping| *stopping) => return Next::Closed(Ok(())),
                read = poll_fn(|cx| self.poll_read(cx)) => read,
            };
            match read {
                Ok(0) => return Next::Closed(Ok(())),
                Ok(_) => {}
                Err(e) => return Next::Closed(Err(e.into())),
            }
        }
    }

    /// Reads what the socket has into `buf`; 0 at its end.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let before = self.buf.len();
        let n = ready!(crate::socket::poll_read(self.stream, &mut self.buf, cx))?;
        if n > 0 {
            self.activity.read(&self.buf[before..]);
        }
        Poll::Ready(Ok(n))
    }

    /// Resolves when the client closed its side (or its socket failed) while a request is in
    /// flight; bytes it sends meanwhile (a pipelined head) are kept, up to [`HEAD_LIMIT`].
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.buf.len() >= HEAD_LIMIT {
                // Enough kept: the rest waits in the socket, as hyper leaves it.
                return Poll::Pending;
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(READ_BUF);
            }
            match ready!(self.poll_read(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
    }

    /// Runs `fut` unless the client leaves first (`None`).
    async fn or_gone<F: Future>(&mut self, mut fut: Pin<&mut F>) -> Option<F::Output> {
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            self.poll_gone(cx).map(|()| None)
        })
        .await
    }

    /// Writes `resp`; `Ok(true)` when the connection stays open for the next head.
    async fn respond<B>(
        &mut self,
        resp: Response<B>,
        head_request: bool,
        keep_alive: bool,
    ) -> Result<bool, BoxError>
    where
        B: Body<Data = Bytes, Error: Into<BoxError>>,
    {
        let (parts, body) = resp.into_parts();
        let length = if body.is_end_stream() {
            None
        } else {
            Some(body.size_hint().exact())
        };
        self.out.clear();
        let (framing, keep_alive) =
            encode_head(&mut self.out, &parts, length, head_request, keep_alive);
        if length.is_some() {
            // The body is dropped (its request counted) before the last write waits.
            self.write_body(body, framing).await?;
        } else {
            drop(body);
        }
        self.flush(&[]).await?;
        if self.out.capacity() > KEEP_WRITE_BUF {
            self.out = Vec::new();
        }
        Ok(keep_alive)
    }

    /// Writes the frames of `body` behind the head in `out` (flushing when it waits).
    async fn write_body<B>(&mut self, body: B, framing: Framing) -> Result<(), BoxError>
    where
        B: Body<Data = Bytes, Error: Into<BoxError>>,
    {
        let mut body = pin!(body);
        let mut left = match framing {
            Framing::Length(n) => n,
            Framing::Chunked => u64::MAX,
        };
        if left > 0 {
            loop {
                // The body's error type need not be `Send`: converted at once.
                let mut poll_frame = |cx: &mut Context<'_>| {
                    body.as_mut()
                        .poll_frame(cx)
                        .map(|f| f.map(|f| f.map_err(Into::<BoxError>::into)))
                };
                let frame = match poll_fn(|cx| Poll::Ready(poll_frame(cx))).await {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        // Nothing more yet: what is ready goes out while the body waits.
                        self.flush(&[]).await?;
                        let next = poll_fn(&mut poll_frame);
                        match self.or_gone(pin!(next)).await {
                            Some(frame) => frame,
                            None => return Err(gone()),
                        }
                    }
                };
                match frame {
                    None => {
                        if framing == Framing::Chunked {
                            self.out.extend_from_slice(b"0\r\n\r\n");
                        } else if left > 0 {
                            return Err("the response body ended before its content-length".into());
                        }
                        break;
                    }
                    Some(Err(e)) => return Err(e),
                    Some(Ok(frame)) => {
                        // Trailers are not sent: the client did not ask for them.
                        let Ok(mut data) = frame.into_data() else {
                            continue;
                        };
                        if data.is_empty() {
                            continue;
                        }
                        if framing == Framing::Chunked {
                            let _ = write!(self.out, "{:x}\r\n", data.len());
                        } else {
                            // Longer than announced: cut at the announced length, as hyper does.
                            data.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                            left -= data.len() as u64;
                        }
                        let ends = left == 0 || body.is_end_stream();
                        if data.len() > COPY_MAX || (ends && framing != Framing::Chunked) {
                            // Written from where it is: a large frame, or the last of a sized
                            // body (behind the head in one `writev`, not copied).
                            self.flush(&data).await?;
                        } else {
                            self.out.extend_from_slice(&data);
                        }
                        if framing == Framing::Chunked {
                            self.out.extend_from_slice(b"\r\n");
                        }
                        if ends {
                            if framing == Framing::Chunked {
                                self.out.extend_from_slice(b"0\r\n\r\n");
                            } else if left > 0 {
                                return Err(
                                    "the response body ended before its content-length".into()
                                );
                            }
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `out` then `data`, all of them.
    async fn flush(&mut self, data: &[u8]) -> io::Result<()> {
        let mut head = 0;
        let mut tail = 0;
        while head < self.out.len() || tail < data.len() {
            let n = poll_fn(|cx| {
                loop {
                    ready!(self.stream.poll_write_ready(cx))?;
                    let slices = [IoSlice::new(&self.out[head..]), IoSlice::new(&data[tail..])];
                    let written = if tail == data.len() {
                        self.stream.try_write(&self.out[head..])
                    } else {
                        self.stream.try_write_vectored(&slices)
                    };
                    match written {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        other => return Poll::Ready(other),
                    }
                }
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_head = n.min(self.out.len() - head);
            head += from_head;
            tail += n - from_head;
        }
        self.out.clear();
        Ok(())
    }
}

/// What parsing the buffer gave.
#[expect(
    clippy::large_enum_variant,
    reason = "one per request, moved once on the stack; boxing would cost an allocation"
)]
enum Parse {
    Request(Parsed),
    Partial,
    /// Not ours: a body, an upgrade, another version, or a head hyper refuses.
    Other,
}

/// Where a field of the head is, so that it can be taken from the head's bytes after they
/// are split off the buffer.
#[derive(Clone, Copy, Default)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// Parses a head at the start of `buf`; a complete one of ours is split off it.
fn parse(buf: &mut BytesMut) -> Parse {
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
    let mut spans = [Span::default(); MAX_HEADERS];
    let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut head = httparse::Request::new(&mut []);
    let len = match head.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::Other,
    };
    // Longer than hyper's smallest limit: hyper's, which knows the listener's.
    if len > HEAD_LIMIT || head.version != Some(1) {
        return Parse::Other;
    }
    let (Some(method), Some(path)) = (head.method, head.path) else {
        return Parse::Other;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parse::Other;
    };
    if method == Method::CONNECT {
        return Parse::Other;
    }
    let path = at(path.as_bytes());
    let mut keep_alive = true;
    let mut length_seen = false;
    let count = head.headers.len();
    for (field, span) in head.headers.iter().zip(spans.iter_mut()) {
        let name = field.name.as_bytes();
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        if is(b"transfer-encoding") || is(b"upgrade") || is(b"expect") || is(b"te") {
            return Parse::Other;
        }
        if is(b"content-length") {
            if length_seen || field.value.trim_ascii() != b"0" {
                return Parse::Other;
            }
            length_seen = true;
        } else if is(b"connection") {
            for token in field.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parse::Other;
                }
            }
        }
        *span = Span {
            name: at(name),
            value: at(field.value),
        };
    }
    let bytes = buf.split_to(len).freeze();
    let slice = |(at, len): (u32, u32)| bytes.slice(at as usize..(at + len) as usize);
    let Ok(uri) = Uri::from_maybe_shared(slice(path)) else {
        return unsplit(buf, bytes);
    };
    // Room for what the proxy adds (`x-forwarded-for`, `-proto`, `x-request-id`): a map that
    // grows rehashes every field.
    let mut headers = HeaderMap::with_capacity(count + FORWARDING_FIELDS);
    for span in &spans[..count] {
        let (at, len) = span.name;
        let name = HeaderName::from_bytes(&bytes[at as usize..(at + len) as usize]);
        let value = HeaderValue::from_maybe_shared(slice(span.value));
        let (Ok(name), Ok(value)) = (name, value) else {
            return unsplit(buf, bytes);
        };
        headers.append(name, value);
    }
    let mut req = Request::new(NoBody::new());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Parse::Request(Parsed { req, keep_alive })
}

/// Puts a head that turned out not to be ours back in front of the buffer.
fn unsplit(buf: &mut BytesMut, head: Bytes) -> Parse {
    let mut back = BytesMut::with_capacity(head.len() + buf.len());
    back.extend_from_slice(&head);
    back.extend_from_slice(buf);
    *buf = back;
    Parse::Other
}

/// Writes the head of a response as hyper's server writes it for an HTTP/1.1 request;
/// `length`: `None` for a body that has ended, else its exact size if it has one. Returns the
/// body's framing and whether the connection stays open after it.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    length: Option<Option<u64>>,
    head_request: bool,
    mut keep_alive: bool,
) -> (Framing, bool) {
    let empty = HeaderMap::new();
    let (status, headers, length) = if parts.status.is_informational() {
        // A final response is expected here; hyper answers 500 and closes.
        keep_alive = false;
        (StatusCode::INTERNAL_SERVER_ERROR, &empty, None)
    } else {
        (parts.status, &parts.headers, length)
    };
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() && parts.version != Version::HTTP_10 {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(if parts.version == Version::HTTP_10 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        match reason {
            Some(reason) => out.extend_from_slice(reason.as_bytes()),
            None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }
    let no_content = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let has_body = !head_request && !no_content;
    let mut framing = None;
    let mut dated = false;
    let mut closes = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            let announced = match length {
                Some(Some(n)) => Some(n),
                Some(None) => content_length(value),
                // An ended body: only a HEAD's answer keeps the length of what a GET gets.
                None if head_request => Some(0),
                None => None,
            };
            match announced {
                Some(n) if framing.is_none() && !no_content => framing = Some(Framing::Length(n)),
                _ => continue,
            }
        } else if name == header::TRANSFER_ENCODING {
            // The body's framing is this writer's: chunked when it has no length.
            continue;
        } else if name == header::CONNECTION {
            closes |= value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name == header::DATE {
            dated = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = match framing {
        Some(framing) => framing,
        None => match length {
            Some(None) if has_body => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            Some(Some(n)) if n > 0 => {
                if !no_content {
                    let mut digits = itoa::Buffer::new();
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(digits.format(n).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                Framing::Length(n)
            }
            _ => {
                if has_body {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
        },
    };
    if !keep_alive && !closes {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let framing = if has_body {
        framing
    } else {
        Framing::Length(0)
    };
    (framing, keep_alive && !closes)
}

/// A `content-length` value: digits only.
fn content_length(value: &HeaderValue) -> Option<u64> {
    let digits = value.as_bytes().trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The `date` header's value, formatted once a second per thread (as hyper caches it).
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    pub(super) fn extend(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        CACHED.with_borrow_mut(|(at, text)| {
            if *at != second {
                *at = second;
                *text = httpdate::fmt_http_date(now);
            }
            out.extend_from_slice(text.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests;
