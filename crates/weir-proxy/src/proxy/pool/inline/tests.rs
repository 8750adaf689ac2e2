use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::super::tests::{Act, upstream};
use super::*;

const OPTIONS: PoolOptions = PoolOptions {
    connect_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(30),
    max_idle: 4,
};

fn head(method: Method) -> RequestHead {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("upstream"));
    RequestHead::encode(&method, &PathAndQuery::from_static("/x?y=1"), &headers)
}

async fn get(idle: &Arc<IdleConns>, authority: &str) -> Result<Response<InlineBody>, SendError> {
    send(idle, authority, head(Method::GET), OPTIONS).await
}

/// The body's data and trailers, or its error.
async fn read(resp: Response<InlineBody>) -> Result<(Bytes, Option<HeaderMap>), BodyError> {
    let mut body = resp.into_body();
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = std::future::poll_fn(|cx| body.poll_frame(cx)).await {
        let frame = frame?;
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok((data.freeze(), trailers))
}

fn count(a: &AtomicUsize) -> usize {
    a.load(Ordering::SeqCst)
}

#[test]
fn the_request_head_is_origin_form_http11_without_transfer_encoding() {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("svc"));
    headers.append("x-a", HeaderValue::from_static("1"));
    headers.append("x-a", HeaderValue::from_static("2"));
    headers.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    let head = RequestHead::encode(
        &Method::DELETE,
        &PathAndQuery::from_static("/a/b?c=d"),
        &headers,
    );
    assert_eq!(
        String::from_utf8(head.bytes).unwrap(),
        "DELETE /a/b?c=d HTTP/1.1\r\nhost: svc\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn chunk_size_lines_are_read_as_hyper_reads_them() {
    for (line, size) in [
        (&b"1a\r"[..], 26),
        (b"0\r", 0),
        (b"A;name=value\r", 10),
        (b"ff \t;x\r", 255),
        (b"ffffffffffffffff\r", u64::MAX),
    ] {
        assert_eq!(
            chunk_size(line),
            Ok(size),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
    for line in [
        &b"\r"[..],
        b"g\r",
        b"1a",
        b"1a x\r",
        b"-1\r",
        b"10000000000000000\r",
        b"1;a\rb\r",
    ] {
        assert_eq!(
            chunk_size(line),
            Err(()),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// The head's framing and reuse, as hyper's client decides them.
#[test]
fn response_heads_are_framed_as_hyper_frames_them() {
    fn parse(method: Method, text: &str) -> Result<Option<(Framing, bool)>, ()> {
        let mut buf = BytesMut::from(text);
        match parse_head(&mut buf, &method) {
            Ok(Some((_, framing, keep))) => Ok(Some((framing, keep))),
            Ok(None) => Ok(None),
            Err(_) => Err(()),
        }
    }
    use Framing::*;
    let get = |t| parse(Method::GET, t);
    assert_eq!(
        get("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
        Ok(Some((Length(5), true)))
    );
    assert_eq!(
        get("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\n"),
        Ok(Some((Length(5), true)))
    );
    assert_eq!(
        get("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
        Ok(Some((Done, true)))
    );
    assert_eq!(
        get("HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n"),
        Err(())
    );
    assert_eq!(
        get("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n"),
        Err(())
    );
    assert_eq!(
        get("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n"),
        Ok(Some((Chunked(Chunk::Size), true)))
    );
    assert_eq!(
        get("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n"),
        Ok(Some((Close, true)))
    );
    assert_eq!(
        get("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
        Err(())
    );
    assert_eq!(get("HTTP/1.1 200 OK\r\n\r\n"), Ok(Some((Close, true))));
    assert_eq!(
        get("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n"),
        Ok(Some((Length(1), false)))
    );
    assert_eq!(
        get("HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\ncontent-length: 1\r\n\r\n"),
        Ok(Some((Length(1), false)))
    );
    assert_eq!(
        get("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"),
        Ok(Some((Length(1), false)))
    );
    assert_eq!(
        get("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n"),
        Ok(Some((Length(1), true)))
    );
    assert_eq!(
        get("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"),
        Ok(Some((Done, true)))
    );
    assert_eq!(
        get("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"),
        Ok(Some((Done, true)))
    );
    assert_eq!(
        get("HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        Ok(Some((Done, false)))
    );
    assert_eq!(
        parse(Method::HEAD, "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"),
        Ok(Some((Done, true)))
    );
    // Informational heads are skipped, in the same buffer or not.
    assert_eq!(
        get(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        ),
        Ok(Some((Length(2), true)))
    );
    assert_eq!(get("HTTP/1.1 100 Continue\r\n\r\n"), Ok(None));
    // Incomplete, then invalid.
    assert_eq!(get("HTTP/1.1 200 OK\r\ncontent-le"), Ok(None));
    assert_eq!(get("HTTP/1.1 2000 OK\r\n\r\n"), Err(()));
    assert_eq!(get("HTTP/1.1 200 OK\r\nbad header\r\n\r\n"), Err(()));
    assert_eq!(get("HTTP/1.1 200 OK\r\nfolded: a\r\n b\r\n\r\n"), Err(()));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert_eq!(get(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")), Err(()));
}

#[test]
fn an_incomplete_head_stays_in_the_buffer_and_a_complete_one_leaves_the_body() {
    let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-le");
    assert!(parse_head(&mut buf, &Method::GET).unwrap().is_none());
    buf.extend_from_slice(b"ngth: 2\r\nx-b: 1\r\nx-b: 2\r\n\r\nokHTTP");
    let (parts, _, _) = parse_head(&mut buf, &Method::GET).unwrap().unwrap();
    assert_eq!(parts.status, 200);
    assert_eq!(parts.version, Version::HTTP_11);
    let xb: Vec<_> = parts.headers.get_all("x-b").iter().collect();
    assert_eq!(xb, ["1", "2"]);
    assert_eq!(&buf[..], b"okHTTP");
    assert!(parts.extensions.get::<hyper::ext::ReasonPhrase>().is_none());
}

#[test]
fn a_reason_phrase_of_its_own_is_kept() {
    let mut buf = BytesMut::from("HTTP/1.1 200 Fine Thanks\r\ncontent-length: 0\r\n\r\n");
    let (parts, _, _) = parse_head(&mut buf, &Method::GET).unwrap().unwrap();
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>().unwrap();
    assert_eq!(reason.as_bytes(), b"Fine Thanks");
}

/// One connection serves responses framed every way that allows reuse (length, chunked with
/// extensions and trailers, 204, HEAD's), each read to its exact end.
#[tokio::test]
async fn one_connection_serves_every_kind_of_framing() {
    let (authority, accepted) = upstream(|n| match n {
        0 => Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
        1 => Act::Answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: abc\r\nx-n: 2\r\n\r\n",
        ),
        2 => Act::Answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
        3 => Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n"),
        _ => Act::Trickle(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
    })
    .await;
    let idle = Arc::new(IdleConns::default());
    let (data, trailers) = read(get(&idle, &authority).await.unwrap()).await.unwrap();
    assert_eq!((&data[..], trailers), (&b"hello"[..], None));
    let (data, trailers) = read(get(&idle, &authority).await.unwrap()).await.unwrap();
    assert_eq!(&data[..], b"hello world");
    let trailers = trailers.expect("trailers");
    assert_eq!(
        (trailers["x-sum"].as_bytes(), trailers["x-n"].as_bytes()),
        (&b"abc"[..], &b"2"[..])
    );
    let resp = get(&idle, &authority).await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.body().is_end_stream());
    drop(resp);
    let resp = send(&idle, &authority, head(Method::HEAD), OPTIONS)
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-length"], "7");
    assert_eq!(resp.body().size_hint().exact(), Some(0));
    assert_eq!(read(resp).await.unwrap().0, "");
    let (data, _) = read(get(&idle, &authority).await.unwrap()).await.unwrap();
    assert_eq!(data, "abc");
    assert_eq!(count(&accepted), 1);
}

/// A body that ends with the connection is read to the close; the connection is not kept.
/// A response that says `connection: close` is not kept either.
#[tokio::test]
async fn close_delimited_and_connection_close_responses_are_not_reused() {
    let (authority, accepted) = upstream(|n| match n {
        0 => Act::AnswerAndClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end"),
        1 => Act::Answer(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"),
        _ => Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast"),
    })
    .await;
    let idle = Arc::new(IdleConns::default());
    assert_eq!(
        read(get(&idle, &authority).await.unwrap()).await.unwrap().0,
        "until the end"
    );
    assert_eq!(
        read(get(&idle, &authority).await.unwrap()).await.unwrap().0,
        "ok"
    );
    assert_eq!(
        read(get(&idle, &authority).await.unwrap()).await.unwrap().0,
        "last"
    );
    assert_eq!(count(&accepted), 3);
}

/// A body cut short fails (never reads as complete), and its connection is not reused.
#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    let (authority, accepted) = upstream(|n| match n {
        0 => Act::AnswerAndClose(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"),
        1 => Act::AnswerAndClose(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"),
        2 => Act::Answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
        _ => Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    })
    .await;
    let idle = Arc::new(IdleConns::default());
    assert!(matches!(
        read(get(&idle, &authority).await.unwrap()).await,
        Err(BodyError::Incomplete)
    ));
    assert!(matches!(
        read(get(&idle, &authority).await.unwrap()).await,
        Err(BodyError::Incomplete)
    ));
    assert!(matches!(
        read(get(&idle, &authority).await.unwrap()).await,
        Err(BodyError::Chunked)
    ));
    assert_eq!(
        read(get(&idle, &authority).await.unwrap()).await.unwrap().0,
        "ok"
    );
    assert_eq!(count(&accepted), 4);
}

/// No head: the connection closed before any answer (`Reset`), or the answer is not HTTP
/// (`Protocol`), or nothing listens (`Connect`).
#[tokio::test]
async fn failures_before_the_head_are_told_apart() {
    let (authority, _) = upstream(|n| match n {
        0 => Act::Close,
        1 => Act::AnswerAndClose(b"HTTP/1.1 200 OK\r\ncontent-le"),
        _ => Act::Answer(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"),
    })
    .await;
    let idle = Arc::new(IdleConns::default());
    assert!(matches!(
        get(&idle, &authority).await,
        Err(SendError::Reset)
    ));
    assert!(matches!(
        get(&idle, &authority).await,
        Err(SendError::Reset)
    ));
    assert!(matches!(
        get(&idle, &authority).await,
        Err(SendError::Protocol)
    ));
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nobody = closed.local_addr().unwrap().to_string();
    drop(closed);
    assert!(matches!(get(&idle, &nobody).await, Err(SendError::Connect)));
}

/// A kept connection that the upstream closes after reading the next request (the race of
/// an upstream's idle timeout): an idempotent request goes again on a new connection, a
/// POST does not (it may have had its effect).
#[tokio::test]
async fn a_stale_connection_is_retried_only_for_idempotent_requests() {
    let (authority, accepted) = upstream(|n| match n {
        0 | 3 => Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        1 | 4 => Act::Close,
        _ => Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nagain"),
    })
    .await;
    let idle = Arc::new(IdleConns::default());
    assert_eq!(
        read(get(&idle, &authority).await.unwrap()).await.unwrap().0,
        "ok"
    );
    assert_eq!(
        read(get(&idle, &authority).await.unwrap()).await.unwrap().0,
        "again"
    );
    assert_eq!(count(&accepted), 2);
    assert_eq!(
        read(get(&idle, &authority).await.unwrap()).await.unwrap().0,
        "ok"
    );
    let post = send(&idle, &authority, head(Method::POST), OPTIONS).await;
    assert!(matches!(post, Err(SendError::Reset)), "{post:?}");
    assert_eq!(count(&accepted), 2);
}

/// An idle connection its upstream closed is not used again: the next request goes on a new
/// connection and gets its answer.
#[tokio::test]
async fn an_idle_connection_closed_by_its_upstream_is_skipped() {
    let (authority, accepted) = upstream(|n| match n {
        0 => Act::AnswerAndClose(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        _ => Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nnew"),
    })
    .await;
    let idle = Arc::new(IdleConns::default());
    assert_eq!(
        read(get(&idle, &authority).await.unwrap()).await.unwrap().0,
        "ok"
    );
    // The close reaches the connection's readiness once the runtime has polled its events.
    for _ in 0..100 {
        let usable = idle.lock(0).inline.first().map(|c| c.conn.is_usable());
        if usable == Some(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        read(get(&idle, &authority).await.unwrap()).await.unwrap().0,
        "new"
    );
    assert_eq!(count(&accepted), 2);
}

/// A head larger than hyper's limit is refused rather than buffered without end.
#[tokio::test]
async fn an_endless_head_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nx-filler: ").await;
        while s.write_all(&[b'a'; 4096]).await.is_ok() {}
    });
    let idle = Arc::new(IdleConns::default());
    assert!(matches!(
        get(&idle, &authority).await,
        Err(SendError::Protocol)
    ));
}
