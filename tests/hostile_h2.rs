//! Hostile h2c clients against the real `weir serve` binary, written frame by frame on a raw
//! socket, with a raw-socket upstream that records every byte it receives. Each attack: nothing
//! malformed reaches the upstream, the proxy stays up and answers a good request after, and its
//! memory stays bounded. (A partial preface held open is closed at the head timeout:
//! `tests/hostile.rs`, `partial_and_idle_h2c_connections_are_closed_at_the_head_timeout`.)

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// === h2 frames, written by hand ===

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

// Error codes (RFC 9113 section 7).
const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = values
        .iter()
        .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
        .collect();
    frame(SETTINGS, 0, 0, &payload)
}

fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// An HPACK integer with an `n`-bit prefix after the high bits `first` (RFC 7541 5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literals without indexing, names and values as given (no Huffman, no
/// validation: the point is to send what a conforming encoder would not).
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        for s in [name, value] {
            hpack_int(&mut out, 0x00, 7, s.len());
            out.extend(s.as_bytes());
        }
    }
    out
}

/// The headers of a good `GET /pay` to the lesson's service.
fn get(path: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "payment-svc"),
        (":path", path),
    ]
}

fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &hpack(fields))
}

/// The preface and an empty SETTINGS frame: what every client sends first.
fn open() -> Vec<u8> {
    [PREFACE, &settings(&[])].concat()
}

/// One frame received.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// What the proxy sent back on a connection, and whether it closed it.
#[derive(Debug, Default)]
struct Seen {
    raw: Vec<u8>,
    frames: Vec<Frame>,
    closed: bool,
}

impl Seen {
    /// Parses the frames after the server's bytes; false when the bytes are not h2 frames.
    fn parse(&mut self) {
        self.frames.clear();
        let mut rest = &self.raw[..];
        while rest.len() >= 9 {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            if rest.len() < 9 + len {
                break;
            }
            self.frames.push(Frame {
                kind: rest[3],
                flags: rest[4],
                stream: u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff,
                payload: rest[9..9 + len].to_vec(),
            });
            rest = &rest[9 + len..];
        }
    }

    /// The error code of the GOAWAY the server sent, if any.
    fn goaway(&self) -> Option<u32> {
        self.frames
            .iter()
            .find(|f| f.kind == GOAWAY && f.payload.len() >= 8)
            .map(|f| u32::from_be_bytes(f.payload[4..8].try_into().unwrap()))
    }

    /// The error code of a RST_STREAM on `stream`, if any.
    fn reset(&self, stream: u32) -> Option<u32> {
        self.frames
            .iter()
            .find(|f| f.kind == RST_STREAM && f.stream == stream && f.payload.len() == 4)
            .map(|f| u32::from_be_bytes(f.payload[..4].try_into().unwrap()))
    }

    /// The `:status` of the response on `stream`, if one came.
    fn status(&self, stream: u32) -> Option<u16> {
        let block = &self
            .frames
            .iter()
            .find(|f| f.kind == HEADERS && f.stream == stream)?
            .payload;
        decode_status(block)
    }

    fn ended(&self, stream: u32) -> bool {
        self.frames
            .iter()
            .any(|f| f.stream == stream && f.flags & END_STREAM != 0)
            || self.reset(stream).is_some()
    }
}

/// The `:status` at the start of a response header block: an indexed field of HPACK's static
/// table (8..=14), or a literal with its name indexed 8..=14 and a three-digit value, plain or
/// Huffman coded (the digits' codes: RFC 7541 appendix B).
fn decode_status(block: &[u8]) -> Option<u16> {
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    let first = *block.first()?;
    if first & 0x80 != 0 {
        return STATIC
            .get(usize::from(first & 0x7f).checked_sub(8)?)
            .copied();
    }
    let name = if first & 0xc0 == 0x40 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if !(8..=14).contains(&name) {
        return None;
    }
    let len = usize::from(block.get(1)? & 0x7f);
    let value = block.get(2..2 + len)?;
    if block[1] & 0x80 == 0 {
        return std::str::from_utf8(value).ok()?.parse().ok();
    }
    let mut bits = value
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| u16::from(b >> i & 1)));
    let mut take = |n: usize| (0..n).try_fold(0u16, |acc, _| Some(acc << 1 | bits.next()?));
    let mut status = 0u16;
    for _ in 0..3 {
        // '0'..'2' are 00000..00010; '3'..'9' are 011001..011111.
        let five = take(5)?;
        let digit = if five <= 2 {
            five
        } else {
            (five << 1 | take(1)?).checked_sub(0b011001)? + 3
        };
        status = status * 10 + digit;
    }
    Some(status)
}

/// Writes `bytes` (in a task of its own: the proxy may stop reading) while reading what the
/// proxy sends, until `done(seen)` holds, the proxy closes the connection, or `wait` passes.
async fn exchange(
    addr: SocketAddr,
    bytes: Vec<u8>,
    wait: Duration,
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rx, mut tx) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = tx.write_all(&bytes).await;
        // Kept open: a half-close would end the connection on its own.
        std::future::pending::<()>().await;
        drop(tx);
    });
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, rx.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                seen.closed = true;
                break;
            }
            Ok(Ok(n)) => {
                seen.raw.extend_from_slice(&buf[..n]);
                seen.parse();
                if done(&seen) {
                    break;
                }
            }
        }
    }
    writer.abort();
    seen.parse();
    seen
}

/// A good h2c request on a fresh connection, through hyper's client: the proxy still serves.
async fn good_h2_request(addr: SocketAddr) -> (StatusCode, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c prior knowledge");
    tokio::spawn(conn);
    let req = Request::get("http://payment-svc/pay")
        .version(http::Version::HTTP_2)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("a good request answered within 10 s")
        .expect("a good request answered");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// The proxy answers a good request after `attack` (200 `ok` from the raw upstream).
async fn assert_still_serving(addr: SocketAddr, attack: &str) {
    let (status, body) = good_h2_request(addr).await;
    assert_eq!(status, StatusCode::OK, "after {attack}");
    assert_eq!(&body[..], b"ok", "after {attack}");
}

/// No response on the lesson's destinations was a 5xx: the hostile client's faults are its own.
async fn assert_no_server_errors(weir: &Weir) {
    let text = weir.metrics().await;
    let server_errors: Vec<_> = metric_samples(&text, "istio_requests_total")
        .into_iter()
        .filter(|(l, _)| l.get("response_code").is_some_and(|c| c.starts_with('5')))
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
}

/// The first frame must be SETTINGS; a preface with the wrong magic is not h2 at all. Requests
/// whose pseudo-headers are missing, repeated, unknown or out of place, whose header names are
/// upper-case, or that carry connection-specific headers (`connection`, `transfer-encoding`,
/// `keep-alive`, `proxy-connection`, `upgrade`, `te` other than `trailers`) are malformed
/// (RFC 9113 8.2.2, 8.3): refused with a stream or connection error or a 400, never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_prefaces_and_malformed_header_blocks_never_reach_the_upstream() {
    let raw = RawUpstream::start().await;
    let weir = Weir::start(&raw.lesson_config());
    let wait = Duration::from_secs(5);

    let bad_magic = [
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".as_slice(),
        &settings(&[]),
        &headers(1, &get("/pay"), true),
    ]
    .concat();
    let seen = exchange(weir.proxy, bad_magic, wait, |_| false).await;
    assert!(seen.closed, "bad magic: left open");
    assert!(
        seen.status(1).is_none(),
        "bad magic answered as h2: {seen:?}"
    );

    // RFC 9113 3.4 wants SETTINGS first; the h2 crate takes the (well-formed) request anyway.
    // Either is safe: refused, or served as the GET it is.
    let headers_first = [PREFACE, &headers(1, &get("/pay"), true)].concat();
    let seen = exchange(weir.proxy, headers_first, wait, |s| {
        s.ended(1) || s.goaway().is_some()
    })
    .await;
    assert!(
        seen.goaway() == Some(PROTOCOL_ERROR) || seen.status(1) == Some(200),
        "HEADERS before SETTINGS: {seen:?}"
    );
    let served_first = usize::from(seen.status(1) == Some(200));

    let with = |extra: &[(&'static str, &'static str)]| {
        let mut h = get("/pay");
        h.extend_from_slice(extra);
        h
    };
    let without = |name: &str| {
        get("/pay")
            .into_iter()
            .filter(|(n, _)| *n != name)
            .collect::<Vec<_>>()
    };
    let mut pseudo_after_regular = vec![("x-a", "b")];
    pseudo_after_regular.extend(get("/pay"));
    let malformed: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no :method", without(":method")),
        ("no :path", without(":path")),
        ("no :scheme", without(":scheme")),
        (
            "empty :path",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "payment-svc"),
                (":path", ""),
            ],
        ),
        ("unknown pseudo-header", with(&[(":protocol-x", "y")])),
        ("two :path", with(&[(":path", "/other")])),
        ("pseudo-header after a regular one", pseudo_after_regular),
        ("upper-case name", with(&[("X-Upper", "1")])),
        ("connection", with(&[("connection", "keep-alive")])),
        (
            "transfer-encoding",
            with(&[("transfer-encoding", "chunked")]),
        ),
        ("keep-alive", with(&[("keep-alive", "timeout=5")])),
        (
            "proxy-connection",
            with(&[("proxy-connection", "keep-alive")]),
        ),
        ("upgrade", with(&[("upgrade", "websocket")])),
        ("te: gzip", with(&[("te", "gzip")])),
        ("CR LF in a value", with(&[("x-a", "b\r\nx-smuggled: 1")])),
        ("NUL in a value", with(&[("x-a", "b\0c")])),
        ("space in a name", with(&[("x a", "b")])),
        (
            "host differs from :authority",
            with(&[("host", "smuggled")]),
        ),
    ];
    for (what, fields) in &malformed {
        let bytes = [open(), headers(1, fields, true)].concat();
        let seen = exchange(weir.proxy, bytes, wait, |s| {
            s.ended(1) || s.goaway().is_some()
        })
        .await;
        let refused = seen.reset(1).is_some()
            || seen.goaway().is_some()
            || seen.status(1).is_some_and(|s| (400..500).contains(&s));
        assert!(refused, "{what}: not refused: {seen:?}");
    }
    assert_still_serving(weir.proxy, "malformed header blocks").await;
    let paths = raw.paths();
    assert_eq!(
        paths,
        vec!["/pay".to_string(); 1 + served_first],
        "only the good request reached the upstream:\n{}",
        String::from_utf8_lossy(&raw.received())
    );
    let received = raw.received();
    for needle in [&b"smuggled"[..], b"\0"] {
        assert!(
            !received.windows(needle.len()).any(|w| w == needle),
            "{} reached the upstream",
            String::from_utf8_lossy(needle)
        );
    }
    assert_no_server_errors(&weir).await;
}

/// SETTINGS and PING floods from a client that never reads the ACKs, and flow-control windows
/// pushed past 2^31-1: the floods cost bounded memory (h2 keeps one pending ACK, then stops
/// reading), the window overflows are FLOW_CONTROL_ERRORs, a zero increment a PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frame_floods_and_window_overflows_stay_bounded() {
    let raw = RawUpstream::start().await;
    let weir = Weir::start(&raw.lesson_config());
    let before = proc_kib(weir.pid(), "VmRSS");

    let mut floods = Vec::new();
    for (what, one) in [
        ("SETTINGS flood", settings(&[(0x1, 4096), (0x3, 100)])),
        ("PING flood", frame(PING, 0, 0, b"12345678")),
    ] {
        let mut bytes = open();
        for _ in 0..200_000 {
            bytes.extend_from_slice(&one);
        }
        // A client that writes and never reads: the proxy's answers back up.
        let mut s = TcpStream::connect(weir.proxy).await.unwrap();
        let written = tokio::time::timeout(Duration::from_secs(5), s.write_all(&bytes)).await;
        floods.push((what, s, written.is_ok()));
    }
    let during = proc_kib(weir.pid(), "VmRSS");
    assert!(
        during < before + 32 * 1024,
        "RSS grew from {before} KiB to {during} KiB under the floods"
    );
    assert_still_serving(weir.proxy, "SETTINGS and PING floods held open").await;
    drop(floods);

    let overflows: [(&str, Vec<u8>, u32); 4] = [
        (
            "connection window past 2^31-1",
            [open(), window_update(0, 0x7fff_ffff)].concat(),
            FLOW_CONTROL_ERROR,
        ),
        (
            "initial window size past 2^31-1",
            [
                PREFACE,
                &settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0x8000_0000)]),
            ]
            .concat(),
            // RFC 9113 6.5.2 says FLOW_CONTROL_ERROR; the h2 crate refuses the SETTINGS frame
            // itself as a PROTOCOL_ERROR. Either way the connection is closed.
            PROTOCOL_ERROR,
        ),
        (
            "zero connection window increment",
            [open(), window_update(0, 0)].concat(),
            PROTOCOL_ERROR,
        ),
        (
            "stream window past 2^31-1",
            [
                open(),
                headers(1, &get("/big"), true),
                window_update(1, 0x7fff_ffff),
                window_update(1, 0x7fff_ffff),
            ]
            .concat(),
            FLOW_CONTROL_ERROR,
        ),
    ];
    for (what, bytes, code) in overflows {
        let seen = exchange(weir.proxy, bytes, Duration::from_secs(5), |s| {
            s.goaway().is_some() || s.reset(1).is_some()
        })
        .await;
        assert!(
            seen.goaway() == Some(code) || seen.reset(1) == Some(code),
            "{what}: {:?} {:?}",
            seen.goaway(),
            seen.reset(1)
        );
    }
    assert_still_serving(weir.proxy, "window overflows").await;
    assert!(
        raw.paths().iter().all(|p| p == "/pay" || p == "/big"),
        "{:?}",
        raw.paths()
    );
    assert_no_server_errors(&weir).await;
}

/// Rapid reset (CVE-2023-44487): streams opened and cancelled at once, 10,000 on one
/// connection. The connection is closed with ENHANCE_YOUR_CALM long before the 10,000th, so
/// only a bounded number of requests ever reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off_before_it_reaches_the_upstream_in_bulk() {
    let raw = RawUpstream::start().await;
    let weir = Weir::start(&raw.lesson_config());
    let mut bytes = open();
    for i in 0..10_000u32 {
        let stream = 2 * i + 1;
        bytes.extend(headers(stream, &get("/pay"), true));
        bytes.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    let seen = exchange(weir.proxy, bytes, Duration::from_secs(20), |s| {
        s.goaway().is_some()
    })
    .await;
    assert_eq!(
        seen.goaway(),
        Some(ENHANCE_YOUR_CALM),
        "{:?}",
        seen.frames.last()
    );
    let forwarded = raw.paths().len();
    assert_still_serving(weir.proxy, "rapid reset").await;
    eprintln!("rapid reset: {forwarded} of 10,000 reset streams reached the upstream");
    assert!(
        forwarded <= 100,
        "{forwarded} of 10,000 reset streams reached the upstream"
    );
    assert_no_server_errors(&weir).await;
}

/// A CONTINUATION flood (CVE-2024-27316 style: a HEADERS frame without END_HEADERS, then
/// CONTINUATION frames forever) is cut off after a few frames; a header list over the limit
/// (70 KiB against the 60 KiB default) is refused. Neither reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_floods_and_oversized_header_lists_are_refused() {
    let raw = RawUpstream::start().await;
    let weir = Weir::start(&raw.lesson_config());
    let before = proc_kib(weir.pid(), "VmRSS");

    for (what, each) in [
        ("CONTINUATION flood", hpack(&[("x-a", "b")])),
        ("empty CONTINUATION flood", Vec::new()),
    ] {
        let mut bytes = [open(), frame(HEADERS, 0, 1, &hpack(&get("/pay")))].concat();
        for _ in 0..100_000 {
            bytes.extend(frame(CONTINUATION, 0, 1, &each));
        }
        let seen = exchange(weir.proxy, bytes, Duration::from_secs(10), |s| {
            s.goaway().is_some()
        })
        .await;
        assert_eq!(seen.goaway(), Some(ENHANCE_YOUR_CALM), "{what}: {seen:?}");
        assert!(seen.status(1).is_none(), "{what}: answered");
    }

    // 70 KiB of one header, in 16 KiB frames (the default max frame size).
    let big = "v".repeat(70 * 1024);
    let mut fields: Vec<(&str, &str)> = get("/pay");
    fields.push(("x-big", &big));
    let block = hpack(&fields);
    let pieces: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    let mut bytes = open();
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let (kind, flags) = match (i, last) {
            (0, _) => (HEADERS, END_STREAM | if last { END_HEADERS } else { 0 }),
            (_, true) => (CONTINUATION, END_HEADERS),
            _ => (CONTINUATION, 0),
        };
        bytes.extend(frame(kind, flags, 1, piece));
    }
    let seen = exchange(weir.proxy, bytes, Duration::from_secs(5), |s| {
        s.ended(1) || s.goaway().is_some()
    })
    .await;
    assert!(
        seen.status(1) == Some(431)
            || seen.reset(1).is_some()
            || seen.goaway().is_some()
            || seen.closed,
        "a 70 KiB header list: {:?}",
        seen.status(1)
    );
    assert_ne!(seen.status(1), Some(200), "a 70 KiB header list was served");

    let after = proc_kib(weir.pid(), "VmRSS");
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_still_serving(weir.proxy, "CONTINUATION floods").await;
    assert_eq!(raw.paths(), vec!["/pay".to_string()]);
    assert_no_server_errors(&weir).await;
}

/// A `content-length` that the DATA frames contradict is malformed (RFC 9113 8.1.1): a body
/// longer than declared never reaches the upstream past the declared length (a request hidden
/// after it is never parsed), a shorter one never leaves the upstream connection waiting for
/// the rest where the next request would be read as body. Both are the client's fault: no 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_mismatches_never_desynchronise_the_upstream() {
    let raw = RawUpstream::start().await;
    let weir = Weir::start(&raw.lesson_config());
    let post = |length: &'static str| {
        vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "payment-svc"),
            (":path", "/pay"),
            ("content-length", length),
        ]
    };
    let smuggled = b"GET /smuggled HTTP/1.1\r\nhost: payment-svc\r\n\r\n";
    let longer = [b"hello".as_slice(), smuggled].concat();
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "DATA longer than content-length",
            [
                open(),
                headers(1, &post("5"), false),
                frame(DATA, END_STREAM, 1, &longer),
            ]
            .concat(),
        ),
        (
            "DATA shorter than content-length",
            [
                open(),
                headers(1, &post("10"), false),
                frame(DATA, END_STREAM, 1, b"hello"),
            ]
            .concat(),
        ),
        (
            "DATA after content-length 0",
            [
                open(),
                headers(1, &post("0"), false),
                frame(DATA, END_STREAM, 1, &longer),
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in cases {
        let seen = exchange(weir.proxy, bytes, Duration::from_secs(5), |s| {
            s.ended(1) || s.goaway().is_some()
        })
        .await;
        assert_ne!(
            seen.status(1),
            Some(200),
            "{what}: served as if well-formed"
        );
        assert!(
            seen.status(1).is_none_or(|s| s < 500),
            "{what}: a 5xx for the client's fault"
        );
        // The upstream connections still frame requests where weir does: good requests after
        // each case are answered by the upstream, none swallowed as a body.
        for _ in 0..3 {
            assert_still_serving(weir.proxy, what).await;
        }
    }
    let paths = raw.paths();
    assert!(
        !paths.iter().any(|p| p.contains("smuggled")),
        "{paths:?}\n{}",
        String::from_utf8_lossy(&raw.received())
    );
    assert_no_server_errors(&weir).await;
}

/// A client that opens streams for 1 MiB answers, lifts every flow-control window to the
/// maximum and then never reads: what the proxy buffers for it is bounded per stream and by
/// the stream limit, and other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_bounded_memory() {
    let raw = RawUpstream::start().await;
    let weir = Weir::start(&raw.lesson_config());
    let before = proc_kib(weir.pid(), "VmRSS");
    let streams = 500u32;
    let mut bytes = [
        PREFACE,
        &settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0x7fff_ffff)]),
        &window_update(0, 0x7fff_ffff - 65_535),
    ]
    .concat();
    for i in 0..streams {
        bytes.extend(headers(2 * i + 1, &get("/big"), true));
    }
    let mut stalled = TcpStream::connect(weir.proxy).await.unwrap();
    stalled.write_all(&bytes).await.unwrap();
    // The upstream answers what the proxy forwards; give the answers time to pile up.
    eventually(
        Duration::from_secs(20),
        "the stream limit's worth of /big requests reach the upstream",
        || async { raw.paths().len() >= 100 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = proc_kib(weir.pid(), "VmRSS");
    assert_still_serving(weir.proxy, "a stalled reader").await;
    let forwarded = raw.paths().len() - 1;
    assert!(
        forwarded < streams as usize,
        "all {forwarded} streams were accepted at once: no concurrent stream limit"
    );
    let grown_mib = (during.saturating_sub(before)) / 1024;
    eprintln!("a client that never reads: {forwarded} streams forwarded, RSS +{grown_mib} MiB");
    assert!(
        grown_mib <= 48,
        "{grown_mib} MiB buffered for a client that never reads ({forwarded} streams)"
    );
    drop(stalled);
    assert_no_server_errors(&weir).await;
}
