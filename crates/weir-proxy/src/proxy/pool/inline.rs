//! weir's own HTTP/1.1 client for requests without a body (GET, HEAD, DELETE...: the common
//! case). The task that serves the client writes the request head on a pooled connection and
//! reads the response itself: no connection task, no channel carrying the request to it and
//! the response back, no write buffer per connection, and an idle connection is a socket and
//! nothing else. hyper's client keeps every request with a body, where sending the body and
//! reading an early response must go on at once.
//!
//! A response is read as hyper's client reads it (the reference for what is accepted and what
//! is refused): httparse for the head, at most 100 fields and 8 KiB + 100 x 4 KiB of head;
//! informational (1xx) heads skipped; no body after HEAD, 204, 304 or 101; `transfer-encoding`
//! ending in `chunked` is chunked (trailers kept), any other transfer coding or neither header
//! reads to the close; `content-length` values must all agree; `transfer-encoding` in an
//! HTTP/1.0 response is refused. The connection is kept when the response says so (HTTP/1.1
//! without `connection: close`, HTTP/1.0 with `connection: keep-alive`) and ended exactly at
//! its framing.

use std::io;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{IdleConns, PoolOptions, SendError};
use crate::proxy::headers::lists_token;

/// Response heads longer than this are refused (hyper's client default).
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Header fields in a response head, and trailer fields, at most (hyper's default).
const MAX_HEADERS: usize = 100;
/// The first read of a response: a head and a small body fit.
const FIRST_READ: usize = 4096;
/// Body reads ask the socket for at most this much at a time.
const MAX_READ: usize = 64 * 1024;
/// A chunk-size line (with its extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;
/// A trailer section longer than this is refused.
const MAX_TRAILERS: usize = 16 * 1024;

/// A connection to an endpoint: the socket and what has been read from it but not yet used.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

/// A request head ready to be written: `METHOD path HTTP/1.1`, the header fields, the empty
/// line. Made once per try, before the try's future exists, so that sending it again on a
/// new connection needs nothing else.
#[derive(Debug)]
pub(crate) struct RequestHead {
    bytes: Vec<u8>,
    method: Method,
}

impl RequestHead {
    /// Encodes a request without a body. `transfer-encoding` is left out (there is no body to
    /// frame), any `content-length` is kept, as hyper's client does.
    pub(crate) fn encode(method: &Method, path: &PathAndQuery, headers: &HeaderMap) -> Self {
        let mut bytes = Vec::with_capacity(32 + path.as_str().len() + headers.len() * 32);
        bytes.extend_from_slice(method.as_str().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(path.as_str().as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            if name == header::TRANSFER_ENCODING {
                continue;
            }
            bytes.extend_from_slice(name.as_str().as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        RequestHead {
            bytes,
            method: method.clone(),
        }
    }

    /// RFC 9110 section 9.2.2: a request that may be sent again without a second effect.
    fn idempotent(&self) -> bool {
        matches!(
            self.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        )
    }
}

/// Why no response head came back on one connection.
#[derive(Debug)]
enum HeadError {
    /// The connection ended or failed; `nothing_read`: before any byte of the response.
    Closed { nothing_read: bool },
    /// The upstream did not speak HTTP/1.1 as it should.
    Invalid,
}

/// Sends `head` on an idle connection to the endpoint at `authority`, or on a new one. A
/// kept connection that turns out closed before any byte of the answer came back (the
/// upstream closed it while it was idle) is replaced by the next kept one or a new one for an
/// idempotent request, which RFC 9110 allows a client to send again; a new connection's
/// failure, and everything else, is the caller's to retry or report.
pub(crate) async fn send(
    idle: &Arc<IdleConns>,
    authority: &str,
    head: RequestHead,
    options: PoolOptions,
) -> Result<Response<InlineBody>, SendError> {
    loop {
        let (mut conn, reused) = match idle.pop_inline(options.idle_timeout) {
            Some(conn) => (conn, true),
            // Boxed: connecting is rare on keep-alive connections, and its future would
            // otherwise make every request's state larger.
            None => (
                Box::pin(connect(authority, options.connect_timeout)).await?,
                false,
            ),
        };
        let written = conn.io.write_all(&head.bytes).await;
        let read = match written {
            Ok(()) => std::future::poll_fn(|cx| conn.poll_head(cx, &head.method)).await,
            Err(_) => Err(HeadError::Closed { nothing_read: true }),
        };
        match read {
            Ok((parts, framing, keep_alive)) => {
                let body = InlineBody {
                    conn: Some(conn),
                    framing,
                    keep_alive,
                    idle: Arc::clone(idle),
                    options,
                };
                return Ok(Response::from_parts(parts, body));
            }
            Err(HeadError::Closed { nothing_read: true }) if reused && head.idempotent() => {}
            Err(HeadError::Closed { .. }) => return Err(SendError::Reset),
            Err(HeadError::Invalid) => return Err(SendError::Protocol),
        }
    }
}

async fn connect(authority: &str, timeout: Duration) -> Result<Conn, SendError> {
    Ok(Conn {
        io: super::connect_tcp(authority, timeout).await?,
        buf: BytesMut::new(),
    })
}

/// How a response body is delimited, and how far it has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `content-length`: this many bytes are still to come.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked(Chunk),
    /// Neither: the body ends when the upstream closes the connection.
    Close,
    /// Read to its end.
    Done,
}

/// Where a chunked body's reading stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: this many bytes are still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section up to its empty line.
    Trailers,
}

impl Conn {
    /// Whether an idle connection can take a request: its upstream has neither closed it nor
    /// sent anything unasked. Costs no system call unless the socket was reported readable
    /// since its last read (tokio keeps its readiness).
    pub(crate) fn is_usable(&self) -> bool {
        matches!(self.io.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Gives back the memory of an idle connection's empty buffer.
    pub(crate) fn shrink(&mut self) {
        self.buf = BytesMut::new();
    }

    /// Reads from the socket into the buffer, asking for at least `want` bytes of room.
    /// `Ok(0)`: the upstream closed the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
        }
        crate::socket::poll_read(&self.io, &mut self.buf, cx)
    }

    /// Reads the response head, skipping informational ones.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
    ) -> Poll<Result<(http::response::Parts, Framing, bool), HeadError>> {
        let mut read_any = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = parse_head(&mut self.buf, method)? {
                    return Poll::Ready(Ok(head));
                }
                if self.buf.len() >= MAX_HEAD {
                    return Poll::Ready(Err(HeadError::Invalid));
                }
            }
            let want = if self.buf.is_empty() {
                FIRST_READ
            } else {
                self.buf.len().min(MAX_HEAD - self.buf.len())
            };
            match ready!(self.poll_fill(cx, want)) {
                Ok(0) | Err(_) => {
                    return Poll::Ready(Err(HeadError::Closed {
                        nothing_read: !read_any,
                    }));
                }
                Ok(_) => read_any = true,
            }
        }
    }
}

/// One response head from the start of `buf` (taken out of it), informational heads
/// dropped; `None` while incomplete.
fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<(http::response::Parts, Framing, bool)>, HeadError> {
    loop {
        // Where each field's name and value are in the head: (name start, name end, value
        // start, value end).
        let mut fields = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let (len, code, version, reason, count) =
            {
                let mut headers =
                    [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
                let mut res = httparse::Response::new(&mut []);
                let len = match httparse::ParserConfig::default()
                    .parse_response_with_uninit_headers(&mut res, buf, &mut headers)
                {
                    Ok(httparse::Status::Complete(len)) => len,
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(_) => return Err(HeadError::Invalid),
                };
                let base = buf.as_ptr() as usize;
                let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
                for (slot, h) in fields.iter_mut().zip(res.headers.iter()) {
                    let (n, v) = (at(h.name.as_bytes()), at(h.value));
                    *slot = (n, n + h.name.len() as u32, v, v + h.value.len() as u32);
                }
                let reason = res.reason.unwrap_or("");
                let code = res.code.unwrap_or(0);
                let canonical = StatusCode::from_u16(code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    == Some(reason);
                let reason = (!canonical).then(|| Bytes::copy_from_slice(reason.as_bytes()));
                (len, code, res.version, reason, res.headers.len())
            };
        let head = buf.split_to(len).freeze();
        let status = StatusCode::from_u16(code).map_err(|_| HeadError::Invalid)?;
        if matches!(code, 100 | 102..=199) {
            if buf.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let version = if version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let mut headers = HeaderMap::with_capacity(count);
        // `Connection` tokens, read as the fields go into the map (a lookup afterwards would
        // hash the name again on every response).
        let (mut close, mut keep) = (false, false);
        for &(n0, n1, v0, v1) in &fields[..count] {
            let name = HeaderName::from_bytes(&head[n0 as usize..n1 as usize])
                .map_err(|_| HeadError::Invalid)?;
            let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize))
                .map_err(|_| HeadError::Invalid)?;
            if name == header::CONNECTION {
                close |= lists_token(&value, "close");
                keep |= lists_token(&value, "keep-alive");
            }
            headers.append(name, value);
        }
        let framing = framing(status, version, method, &headers)?;
        // `close` in any `Connection` value ends the connection; otherwise HTTP/1.1 keeps it,
        // HTTP/1.0 only with `keep-alive`.
        let keep_alive = !close
            && (version == Version::HTTP_11 || keep)
            && status != StatusCode::SWITCHING_PROTOCOLS
            && method != Method::CONNECT;
        let mut parts = Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        if let Some(reason) = reason
            && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason)
        {
            parts.extensions.insert(reason);
        }
        return Ok(Some((parts, framing, keep_alive)));
    }
}

/// How the body after this head is delimited (RFC 9112 section 6.3, as hyper's client reads it).
fn framing(
    status: StatusCode,
    version: Version,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Framing, HeadError> {
    if matches!(status.as_u16(), 101 | 204 | 304)
        || method == Method::HEAD
        || (method == Method::CONNECT && status.is_success())
    {
        return Ok(Framing::Done);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(HeadError::Invalid);
        }
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back();
        let chunked = last
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| HeadError::Invalid)?;
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::Invalid);
            }
            let n: u64 = item.parse().map_err(|_| HeadError::Invalid)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Invalid);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Done,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the upstream closed the connection before the end of the response body")]
    Incomplete,
    #[error("the upstream's chunked response body is malformed")]
    Chunked,
    #[error("reading the upstream's response body: {0}")]
    Io(#[from] io::Error),
}

/// A response body read on the task that polls it. The connection goes back to its
/// endpoint's idle stack when the body has been read to its end and the response allowed it;
/// a body dropped before its end closes the connection.
#[derive(Debug)]
pub(crate) struct InlineBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    idle: Arc<IdleConns>,
    options: PoolOptions,
}

impl InlineBody {
    /// The connection back on the idle stack, when reusable: the response allowed it and the
    /// upstream sent nothing after it.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(mut conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            conn.shrink();
            self.idle.push_inline(conn, self.options);
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }

    /// The next frame: data as it arrives, trailers of a chunked body, `None` at the end.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let want = match self.framing {
                Framing::Done => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                    if !conn.buf.is_empty() {
                        let n = left.min(conn.buf.len() as u64);
                        let data = conn.buf.split_to(n as usize).freeze();
                        let left = left - n;
                        self.framing = match self.framing {
                            Framing::Length(_) => Framing::Length(left),
                            _ if left == 0 => Framing::Chunked(Chunk::DataEnd),
                            _ => Framing::Chunked(Chunk::Data(left)),
                        };
                        if self.framing == Framing::Length(0) {
                            // The last bytes: the connection is free before they are sent on.
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    left.clamp(FIRST_READ as u64, MAX_READ as u64) as usize
                }
                Framing::Close => {
                    if !conn.buf.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                    }
                    MAX_READ / 4
                }
                Framing::Chunked(chunk) => match step_chunked(&mut conn.buf, chunk) {
                    Err(()) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(BodyError::Chunked)));
                    }
                    Ok(Step::Next(next)) => {
                        self.framing = Framing::Chunked(next);
                        continue;
                    }
                    Ok(Step::End(trailers)) => {
                        self.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Step::More) => FIRST_READ,
                },
            };
            match ready!(conn.poll_fill(cx, want)) {
                Ok(0) if self.framing == Framing::Close => {
                    self.framing = Framing::Done;
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(BodyError::Incomplete)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(BodyError::Io(e))));
                }
            }
        }
    }
}

impl Drop for InlineBody {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304, `content-length: 0`) is never polled.
        if self.framing == Framing::Done {
            self.finish();
        }
    }
}

/// What one step of a chunked body's framing found in the buffer.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Moved to this state.
    Next(Chunk),
    /// The body ended, with these trailers if any.
    End(Option<HeaderMap>),
    /// More bytes are needed.
    More,
}

/// Reads one chunk-size line, the CRLF after a chunk or the trailer section from `buf`.
/// `Err`: the framing is malformed.
fn step_chunked(buf: &mut BytesMut, chunk: Chunk) -> Result<Step, ()> {
    match chunk {
        Chunk::Data(_) => Ok(Step::More),
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return if buf.first().is_none_or(|&b| b == b'\r') {
                    Ok(Step::More)
                } else {
                    Err(())
                };
            }
            if &buf[..2] != b"\r\n" {
                return Err(());
            }
            buf.advance(2);
            Ok(Step::Next(Chunk::Size))
        }
        Chunk::Size => {
            let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                return if buf.len() > MAX_CHUNK_LINE {
                    Err(())
                } else {
                    Ok(Step::More)
                };
            };
            let size = chunk_size(&buf[..lf])?;
            buf.advance(lf + 1);
            Ok(Step::Next(if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            }))
        }
        Chunk::Trailers => {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let (len, trailers) = match httparse::parse_headers(buf, &mut fields) {
                Ok(httparse::Status::Complete((len, fields))) => {
                    let mut trailers = HeaderMap::with_capacity(fields.len());
                    for f in fields {
                        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| ())?;
                        let value = HeaderValue::from_bytes(f.value).map_err(|_| ())?;
                        trailers.append(name, value);
                    }
                    (len, trailers)
                }
                Ok(httparse::Status::Partial) if buf.len() <= MAX_TRAILERS => {
                    return Ok(Step::More);
                }
                _ => return Err(()),
            };
            buf.advance(len);
            Ok(Step::End((!trailers.is_empty()).then_some(trailers)))
        }
    }
}

/// The size of a chunk-size line without its LF: hex digits, optional whitespace and
/// extensions (`;name=value`, ignored), then CR.
fn chunk_size(line: &[u8]) -> Result<u64, ()> {
    let line = line.strip_suffix(b"\r").ok_or(())?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(());
    }
    let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).map_err(|_| ())?, 16)
        .map_err(|_| ())?;
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    if !(rest.is_empty() || rest[0] == b';') || rest.contains(&b'\r') {
        return Err(());
    }
    Ok(size)
}

#[cfg(test)]
mod tests;
