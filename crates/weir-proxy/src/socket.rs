//! Reading a TCP socket into a buffer without the read that only says "nothing more".
//!
//! tokio keeps a socket's readiness until a read fails with `WouldBlock`, so a task that reads
//! a request (or a response) whole in one `recv` makes a second `recv` before it waits, whose
//! only answer is `EAGAIN`: on a keep-alive proxy, one system call a request on each side, the
//! downstream connection watched for its client leaving and the pooled upstream connection
//! checked before it is reused. A `recv` that returns fewer bytes than it had room for has
//! emptied the socket's receive queue (TCP hands over everything queued, up to the room), so
//! [`poll_read`] clears the readiness it was given with that read: the next wait registers
//! instead of reading, and data or an end arriving after the read raises a new readiness
//! event (tokio's epoll is edge-triggered), which the clearing does not touch (tokio clears
//! only the readiness of the event the read was made under).

use std::io;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Reads what `stream` has into `buf`'s spare room (64 bytes are made if it has none);
/// `Ok(0)` at the end of the stream. A read that leaves room over marks the socket drained.
pub(crate) fn poll_read(
    stream: &TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        if buf.capacity() == buf.len() {
            buf.reserve(64);
        }
        let room = buf.capacity() - buf.len();
        let mut read = 0;
        let tried = stream.try_io(Interest::READABLE, || {
            read = stream.try_read_buf(buf)?;
            if read > 0 && read < room {
                // Drained: `WouldBlock` clears the readiness of the event this read was made
                // under (and only that one).
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(read)
        });
        match tried {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if read > 0 {
                    return Poll::Ready(Ok(read));
                }
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair: (the side written to, the side read).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    /// One `poll_read`, within 5 s.
    async fn read(reader: &TcpStream, buf: &mut BytesMut) -> usize {
        tokio::time::timeout(
            Duration::from_secs(5),
            poll_fn(|cx| poll_read(reader, buf, cx)),
        )
        .await
        .expect("woken in time")
        .unwrap()
    }

    #[tokio::test]
    async fn a_drained_socket_waits_without_reading_and_wakes_for_what_comes_next() {
        let (mut writer, reader) = pair().await;
        let mut buf = BytesMut::with_capacity(1024);
        writer.write_all(b"hello").await.unwrap();
        let n = poll_fn(|cx| poll_read(&reader, &mut buf, cx))
            .await
            .unwrap();
        assert_eq!((n, &buf[..]), (5, &b"hello"[..]));
        // Drained: the readiness is gone, so a poll is pending (no read was needed to know).
        let pending = poll_fn(|cx| Poll::Ready(poll_read(&reader, &mut buf, cx))).await;
        assert!(pending.is_pending(), "{pending:?}");
        // Bytes written after the drain wake the reader: nothing is lost.
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.write_all(b" world").await.unwrap();
            writer
        });
        let n = read(&reader, &mut buf).await;
        assert_eq!((n, &buf[..]), (6, &b"hello world"[..]));
        // And its end: 0.
        drop(later.await.unwrap());
        let n = read(&reader, &mut buf).await;
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_full_read_keeps_the_readiness_and_reads_the_rest() {
        let (mut writer, reader) = pair().await;
        writer.write_all(&[7u8; 3000]).await.unwrap();
        let mut buf = BytesMut::with_capacity(1000);
        let mut total = 0;
        while total < 3000 {
            total += read(&reader, &mut buf).await;
            if buf.capacity() == buf.len() {
                buf.clear();
            }
        }
        assert_eq!(total, 3000);
    }
}
