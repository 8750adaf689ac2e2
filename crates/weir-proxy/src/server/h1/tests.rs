//! weir's own HTTP/1.1 reader, through a real listener and raw sockets: which requests it
//! answers, which it hands to hyper (with every byte), and the response heads it writes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::server::{Prepared, ServerOptions};

type TestBody = BoxBody<Bytes, BoxError>;

/// A listener whose bodyless requests are answered by path (`own ...`) and whose other
/// requests by a hyper service (`hyper ...`); counts the bodyless answers dropped unfinished.
struct Test {
    dropped: Arc<AtomicUsize>,
}

/// hyper's side: says so, with what it read.
struct HyperSide;

impl hyper::service::Service<Request<Incoming>> for HyperSide {
    type Response = Response<TestBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<TestBody>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(async move {
            let head = format!("hyper {} {} {:?}", req.method(), req.uri(), req.version());
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let text = format!("{head} body={}", body.map_or(0, |b| b.len()));
            Ok(Response::new(full(text)))
        })
    }
}

fn full(text: String) -> TestBody {
    Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed()
}

/// Counts a bodyless answer dropped before it finished.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl NewService for Test {
    type Body = TestBody;
    type Service = HyperSide;

    const OWN_H1: bool = true;

    fn new_service(&self, _peer: SocketAddr) -> HyperSide {
        HyperSide
    }

    fn prepare(
        &self,
        stream: TcpStream,
        _peer: SocketAddr,
    ) -> impl Future<Output = Prepared<HyperSide>> + Send {
        std::future::ready(Prepared::Http(stream, HyperSide))
    }

    fn call_bodyless(
        &self,
        _service: &HyperSide,
        req: Request<NoBody>,
    ) -> impl Future<Output = Result<Response<TestBody>, Infallible>> + Send + 'static {
        let dropped = Arc::clone(&self.dropped);
        async move {
            let guard = DropCount(dropped);
            let x = req
                .headers()
                .get_all("x")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join("|");
            let text = format!("own {} {} x={x}", req.method(), req.uri());
            let resp = match req.uri().path() {
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Response::new(full(text))
                }
                "/delay" => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Response::new(full(text))
                }
                "/chunked" => Response::new(
                    Trickle {
                        frames: ["own ", "in ", "pieces"].into(),
                        ready: false,
                    }
                    .boxed(),
                ),
                "/no-content" => Response::builder()
                    .status(204)
                    .body(full(String::new()))
                    .unwrap(),
                "/close" => Response::builder()
                    .header("connection", "close")
                    .body(full(text))
                    .unwrap(),
                "/reason" => {
                    let mut resp = Response::builder()
                        .status(299)
                        .header("date", "Tue, 01 Jan 2030 00:00:00 GMT")
                        .body(full(text))
                        .unwrap();
                    resp.extensions_mut()
                        .insert(hyper::ext::ReasonPhrase::from_static(b"Fine Thanks"));
                    resp
                }
                _ => Response::new(full(text)),
            };
            std::mem::forget(guard);
            Ok(resp)
        }
    }
}

/// A body of data frames without a known size, pending (and waking itself) before each.
struct Trickle {
    frames: std::collections::VecDeque<&'static str>,
    ready: bool,
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if !self.ready {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = false;
        Poll::Ready(
            self.frames
                .pop_front()
                .map(|s| Ok(http_body::Frame::data(Bytes::from(s)))),
        )
    }
}

/// A served `Test` listener; the sender stops it.
async fn start() -> (
    SocketAddr,
    Arc<AtomicUsize>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let test = Test {
        dropped: Arc::clone(&dropped),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = ServerOptions {
        half_close: false,
        ..ServerOptions::new("test", Duration::from_secs(5))
    };
    let served = tokio::spawn(crate::server::serve(
        Arc::new(test),
        listener,
        async {
            let _ = stop_rx.await;
        },
        options,
    ));
    (addr, dropped, stop_tx, served)
}

/// One response read off `stream`: its head (as text) and its body, de-chunked;
/// `head_request`: no body follows.
async fn response(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    head_request: bool,
) -> (String, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut fill = async |pending: &mut Vec<u8>| {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before the response ended: {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&chunk[..n]);
    };
    let head_end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        fill(pending).await;
    };
    let head = String::from_utf8(pending.drain(..head_end).collect()).unwrap();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if head_request || head.starts_with("HTTP/1.1 204") || head.starts_with("HTTP/1.1 304") {
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(at) = pending.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                fill(pending).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&pending[..line_end]).unwrap(), 16)
                    .unwrap();
            while pending.len() < line_end + 2 + size + 2 {
                fill(pending).await;
            }
            body.extend_from_slice(&pending[line_end + 2..line_end + 2 + size]);
            pending.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        let length: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("a content-length")
            .trim()
            .parse()
            .unwrap();
        while pending.len() < length {
            fill(pending).await;
        }
        body = pending.drain(..length).collect();
    }
    (head, String::from_utf8(body).unwrap())
}

async fn exchange(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    request: &str,
) -> (String, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    response(stream, pending, request.starts_with("HEAD ")).await
}

/// Reads until the server closes the connection; what came meanwhile.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap();
    rest
}

#[tokio::test]
async fn bodyless_requests_are_answered_here_and_a_body_hands_the_connection_to_hyper() {
    let (addr, _, _stop, _served) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();

    let (head, body) = exchange(
        &mut s,
        &mut pending,
        "GET /a?b=c HTTP/1.1\r\nhost: h\r\nX: 1\r\nx: two\r\n\r\n",
    )
    .await;
    assert_eq!(body, "own GET /a?b=c x=1|two");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}\r\n", body.len())),
        "{head}"
    );
    assert!(head.contains("\r\ndate: "), "a date is added: {head}");
    assert!(!head.contains("connection:"), "{head}");

    // A HEAD's answer announces the GET's length and sends no body.
    let (head, body) = exchange(&mut s, &mut pending, "HEAD /h HTTP/1.1\r\nhost: h\r\n\r\n").await;
    assert!(head.contains("content-length: 14\r\n"), "{head}");
    assert_eq!(body, "");

    // A body without a length is chunked; `content-length: 0` is no body.
    let (head, body) = exchange(
        &mut s,
        &mut pending,
        "DELETE /chunked HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert_eq!(body, "own in pieces");

    // 204: neither a length nor a body.
    let (head, _) = exchange(&mut s, &mut pending, "GET /no-content HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"), "{head}");
    assert!(!head.contains("content-length"), "{head}");

    // The service's reason phrase and date are kept.
    let (head, _) = exchange(&mut s, &mut pending, "GET /reason HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 299 Fine Thanks\r\n"), "{head}");
    assert_eq!(head.matches("date: ").count(), 1, "{head}");
    assert!(
        head.contains("date: Tue, 01 Jan 2030 00:00:00 GMT\r\n"),
        "{head}"
    );

    // A request with a body is hyper's, and so is the rest of the connection.
    let (_, body) = exchange(
        &mut s,
        &mut pending,
        "POST /p HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(body, "hyper POST /p HTTP/1.1 body=3");
    let (_, body) = exchange(&mut s, &mut pending, "GET /after HTTP/1.1\r\n\r\n").await;
    assert_eq!(body, "hyper GET /after HTTP/1.1 body=0");
    assert!(pending.is_empty());
}

#[tokio::test]
async fn pipelined_and_trickled_heads_are_answered_in_order() {
    let (addr, _, _stop, _served) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    for n in 1..=3 {
        let (_, body) = response(&mut s, &mut pending, false).await;
        assert_eq!(body, format!("own GET /{n} x="));
    }
    // A head that arrives a byte at a time.
    for b in b"GET /slowly HTTP/1.1\r\nx: y\r\n\r\n" {
        s.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (_, body) = response(&mut s, &mut pending, false).await;
    assert_eq!(body, "own GET /slowly x=y");
    // Longer than the first buffer, in pieces: it grows, and the head is still ours.
    let long = "w".repeat(3000);
    s.write_all(format!("GET /grown HTTP/1.1\r\nx: {}", &long[..1500]).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_, body) = exchange(&mut s, &mut pending, &format!("{}\r\n\r\n", &long[1500..])).await;
    assert_eq!(body, format!("own GET /grown x={long}"));
}

#[tokio::test]
async fn what_hyper_must_read_reaches_hyper_with_every_byte() {
    let (addr, _, _stop, _served) = start().await;
    let long = "v".repeat(9000);
    let cases = [
        (
            "GET /ten HTTP/1.0\r\n\r\n",
            "hyper GET /ten HTTP/1.0 body=0",
        ),
        (
            "POST /te HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "hyper POST /te HTTP/1.1 body=3",
        ),
        (
            "GET /l HTTP/1.1\r\ncontent-length: 2\r\n\r\nab",
            "hyper GET /l HTTP/1.1 body=2",
        ),
        (
            "GET /two HTTP/1.1\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
            "hyper GET /two HTTP/1.1 body=0",
        ),
        (
            "GET /u HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            "hyper GET /u HTTP/1.1 body=0",
        ),
        (
            "GET /e HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            "hyper GET /e HTTP/1.1 body=0",
        ),
        (
            "GET /t HTTP/1.1\r\nte: trailers\r\n\r\n",
            "hyper GET /t HTTP/1.1 body=0",
        ),
    ];
    for (request, expected) in cases {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut pending = Vec::new();
        let (_, body) = exchange(&mut s, &mut pending, request).await;
        assert_eq!(body, expected, "{request:?}");
    }
    // A head over 8 KiB, in two writes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(format!("GET /long HTTP/1.1\r\nx: {}", &long[..5000]).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_, body) = exchange(&mut s, &mut pending, &format!("{}\r\n\r\n", &long[5000..])).await;
    assert_eq!(body, "hyper GET /long HTTP/1.1 body=0");
    // What hyper refuses, hyper answers.
    for bad in [
        "GET / HTTP/1.1\r\nno colon\r\n\r\n",
        "GET / HTTP/1.1\r\nx: a\x01b\r\n\r\n",
        "GET /\x7f HTTP/1.1\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bad.as_bytes()).await.unwrap();
        let answer = String::from_utf8_lossy(&until_closed(&mut s).await).into_owned();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{bad:?}: {answer}"
        );
    }
}

#[tokio::test]
async fn connection_close_either_way_closes_after_the_response() {
    let (addr, _, _stop, _served) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    let (head, _) = exchange(
        &mut s,
        &mut pending,
        "GET /c HTTP/1.1\r\nconnection: keep-alive, Close\r\n\r\n",
    )
    .await;
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(until_closed(&mut s).await.is_empty());

    let mut s = TcpStream::connect(addr).await.unwrap();
    let (head, _) = exchange(&mut s, &mut pending, "GET /close HTTP/1.1\r\n\r\n").await;
    assert_eq!(head.matches("connection: close").count(), 1, "{head}");
    assert!(until_closed(&mut s).await.is_empty());
}

#[tokio::test]
async fn a_client_that_leaves_cancels_its_request() {
    let (addr, dropped, _stop, _served) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(dropped.load(Ordering::SeqCst), 0, "still in flight");
    s.shutdown().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while dropped.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_shutdown_closes_idle_connections_and_finishes_the_request_in_flight() {
    let (addr, _, stop, served) = start().await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    let (_, body) = exchange(&mut idle, &mut pending, "GET /first HTTP/1.1\r\n\r\n").await;
    assert_eq!(body, "own GET /first x=");
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /delay HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    assert!(
        until_closed(&mut idle).await.is_empty(),
        "the idle one is closed at once"
    );
    let (head, body) = response(&mut busy, &mut pending, false).await;
    assert_eq!(body, "own GET /delay x=");
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(until_closed(&mut busy).await.is_empty());
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("drained")
        .unwrap()
        .unwrap();
}

/// The head written for `resp` to a GET (or a HEAD), and the framing and keep-alive chosen.
fn head_of(
    resp: Response<()>,
    length: Option<Option<u64>>,
    head_request: bool,
    keep_alive: bool,
) -> (String, Framing, bool) {
    let (parts, ()) = resp.into_parts();
    let mut out = Vec::new();
    let (framing, keep) = encode_head(&mut out, &parts, length, head_request, keep_alive);
    (String::from_utf8(out).unwrap(), framing, keep)
}

#[test]
fn response_heads_are_framed_as_hypers() {
    let with = |status: u16, headers: &[(&str, &str)]| {
        let mut b = Response::builder().status(status);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    };
    let dated = [("date", "x")];
    // An exact size is the length, whatever the header said; no size: chunked.
    let (head, framing, keep) = head_of(with(200, &dated), Some(Some(5)), false, true);
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!((framing, keep), (Framing::Length(5), true));
    let (head, framing, _) = head_of(
        with(200, &[("date", "x"), ("content-length", "5")]),
        Some(Some(5)),
        false,
        true,
    );
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!(framing, Framing::Length(5));
    let (head, framing, _) = head_of(
        with(200, &[("date", "x"), ("transfer-encoding", "gzip")]),
        Some(None),
        false,
        true,
    );
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ndate: x\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(framing, Framing::Chunked);
    // An unsized body with a length header keeps that length.
    let (_, framing, _) = head_of(
        with(200, &[("date", "x"), ("content-length", "7")]),
        Some(None),
        false,
        true,
    );
    assert_eq!(framing, Framing::Length(7));
    // An ended body: `content-length: 0`, but not for HEAD (the GET's length stays), 204, 304.
    let (head, framing, _) = head_of(
        with(200, &[("date", "x"), ("content-length", "9")]),
        None,
        false,
        true,
    );
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(framing, Framing::Length(0));
    let (head, framing, _) = head_of(
        with(200, &[("date", "x"), ("content-length", "9")]),
        None,
        true,
        true,
    );
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 9\r\n\r\n"
    );
    assert_eq!(framing, Framing::Length(0));
    let (head, framing, _) = head_of(with(200, &dated), Some(Some(9)), true, true);
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 9\r\n\r\n"
    );
    assert_eq!(framing, Framing::Length(0), "no body after a HEAD");
    let (head, _, _) = head_of(
        with(304, &[("date", "x"), ("content-length", "9")]),
        None,
        false,
        true,
    );
    assert_eq!(head, "HTTP/1.1 304 Not Modified\r\ndate: x\r\n\r\n");
    let (head, framing, _) = head_of(with(204, &dated), Some(None), false, true);
    assert_eq!(head, "HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n");
    assert_eq!(framing, Framing::Length(0));
    // Closing: asked by the client (or a shutdown), or by the response.
    let (head, _, keep) = head_of(with(503, &dated), None, false, false);
    assert_eq!(
        head,
        "HTTP/1.1 503 Service Unavailable\r\ndate: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    assert!(!keep);
    let (head, _, keep) = head_of(
        with(200, &[("date", "x"), ("connection", "Close")]),
        None,
        false,
        true,
    );
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ndate: x\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n"
    );
    assert!(!keep);
    // A status without a canonical reason; an interim status is not a final answer.
    let (head, _, _) = head_of(with(599, &dated), None, false, true);
    assert!(head.starts_with("HTTP/1.1 599 <none>\r\n"), "{head}");
    let (head, _, keep) = head_of(with(103, &dated), None, false, true);
    assert!(
        head.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{head}"
    );
    assert!(head.contains("connection: close\r\n") && !keep, "{head}");
    // Without a date, today's.
    let (head, _, _) = head_of(with(200, &[]), None, false, true);
    let date = head
        .lines()
        .find_map(|l| l.strip_prefix("date: "))
        .expect("a date");
    let parsed = httpdate::parse_http_date(date).expect("an HTTP date");
    let age = std::time::SystemTime::now().duration_since(parsed).unwrap();
    assert!(age < Duration::from_secs(5), "{date}");
}

#[test]
fn a_head_of_ours_shares_the_buffer_and_leaves_the_next_bytes() {
    let mut buf = BytesMut::from(&b"GET /p HTTP/1.1\r\nHost: a\r\nX-Y:  z \r\n\r\nGET /next"[..]);
    let Parse::Request(parsed) = parse(&mut buf) else {
        panic!("ours");
    };
    assert_eq!(&buf[..], b"GET /next");
    assert!(parsed.keep_alive);
    assert_eq!(parsed.req.uri(), "/p");
    assert_eq!(parsed.req.headers()["host"], "a");
    assert_eq!(parsed.req.headers()["x-y"], "z");
    assert!(matches!(parse(&mut buf), Parse::Partial));
    // Not ours: put back whole.
    let bad = b"GET / HTTP/1.1\r\nx: \xff\r\nbad name: v\r\n\r\n";
    let mut buf = BytesMut::from(&bad[..]);
    assert!(matches!(parse(&mut buf), Parse::Other));
    assert_eq!(&buf[..], bad);
    // Refused after the split (a target `Uri` refuses): put back too.
    let bad = b"GET /a\x7fb HTTP/1.1\r\n\r\nGET /";
    let mut buf = BytesMut::from(&bad[..]);
    assert!(matches!(parse(&mut buf), Parse::Other));
    assert_eq!(&buf[..], bad);
    let mut buf = BytesMut::from(&b"CONNECT a:1 HTTP/1.1\r\n\r\n"[..]);
    assert!(matches!(parse(&mut buf), Parse::Other));
    let mut buf = BytesMut::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
    assert!(matches!(parse(&mut buf), Parse::Other));
}
