//! What a transparent listener needs from a connection the kernel redirected to it (the nat
//! rules of [`crate::capture`]): where the client meant to go (`SO_ORIGINAL_DST`), whether
//! it speaks HTTP (a short sniff of the first bytes, as Envoy's `http_inspector`), and the
//! plain TCP relay for everything else.
//!
//! A plain TCP loop has no header to count hops in: when the nat rules do not exempt weir's
//! uid, a relay's own connection comes straight back to the listener, and would be relayed
//! again without end. Every relay therefore binds its local port before it connects and
//! registers it until it closes; a captured connection coming *from* one of those ports is
//! weir's own ([`is_own_relay`]) and is refused, so a loop stops after one extra connection.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use rustix::net::RecvFlags;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// How long a transparent listener waits for a client's first bytes before it takes the
/// connection for a protocol where the server speaks first (MySQL, SMTP, SSH) and relays it
/// as plain TCP. Short, so that such a client sees its server's greeting without a hang.
pub(crate) const SNIFF_WINDOW: Duration = Duration::from_millis(100);

/// Whether `port` is one of a protocol where the server speaks first: relayed as TCP at once,
/// never sniffed (FTP, SSH, SMTP, POP3, IMAP, SMTPS/submission, IMAPS, POP3S, MySQL).
pub(crate) fn is_server_first(port: u16) -> bool {
    matches!(
        port,
        21 | 22 | 25 | 110 | 143 | 465 | 587 | 993 | 995 | 3306
    )
}

/// The destination the client connected to before the nat rules redirected it here, `None`
/// when the connection was not redirected (a client that connected to the listener itself).
pub(crate) fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let original = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    let original = original.ok()?.as_socket()?;
    (original != local).then_some(original)
}

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// An HTTP/1.x request line or the HTTP/2 connection preface.
    Http,
    /// Anything else, or nothing within the window (the server speaks first).
    Other,
}

/// The request-line starts (methods with their space) and the HTTP/2 preface.
const HTTP_STARTS: [&[u8]; 10] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
    b"PRI * HTTP/2.0",
];

/// Classifies what has arrived so far: `None` while it could still become either.
pub(crate) fn classify(bytes: &[u8]) -> Option<Sniffed> {
    let mut undecided = false;
    for start in HTTP_STARTS {
        if bytes.starts_with(start) {
            return Some(Sniffed::Http);
        }
        undecided |= start.starts_with(bytes);
    }
    (!undecided).then_some(Sniffed::Other)
}

/// Peeks at the first bytes of `stream` (they stay in the socket for whoever reads next)
/// until they say HTTP or not, for at most `window`.
pub(crate) async fn sniff(stream: &TcpStream, window: Duration) -> Sniffed {
    let mut buf = [0u8; 16];
    // A client usually sent its first bytes with (or right after) the handshake: one peek
    // without waiting decides without a timer or a trip through the reactor.
    let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
    if let Ok((n @ 1.., _)) = rustix::net::recv(stream, &mut buf[..], flags)
        && let Some(found) = classify(&buf[..n])
    {
        return found;
    }
    let deadline = Instant::now() + window;
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        let n = match peeked {
            Ok(Ok(n)) if n > 0 => n,
            // Closed, failed or silent: not HTTP.
            _ => return Sniffed::Other,
        };
        if let Some(found) = classify(&buf[..n]) {
            return found;
        }
        // A partial method: the rest is on its way. `peek` would answer at once with the
        // same bytes, so wait a little before looking again.
        if Instant::now() >= deadline {
            return Sniffed::Other;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The local ports of this process's TCP relays in progress. Ports belong to the network
/// namespace, and any worker's listener may accept a relay's captured connection, so the set
/// is the process's, not a listener's.
static OWN_RELAY_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Whether a captured connection from `peer` is one of this process's own relays, captured
/// again (a loop: weir's uid is not exempted from the nat rules).
pub(crate) fn is_own_relay(peer: SocketAddr) -> bool {
    let ports = OWN_RELAY_PORTS.lock().unwrap_or_else(|p| p.into_inner());
    ports.contains(&peer.port())
}

/// A relay's local port, registered in [`OWN_RELAY_PORTS`] until dropped.
#[derive(Debug)]
pub(crate) struct OwnPort(u16);

impl OwnPort {
    fn register(port: u16) -> Self {
        let mut ports = OWN_RELAY_PORTS.lock().unwrap_or_else(|p| p.into_inner());
        ports.insert(port);
        OwnPort(port)
    }
}

impl Drop for OwnPort {
    fn drop(&mut self) {
        let mut ports = OWN_RELAY_PORTS.lock().unwrap_or_else(|p| p.into_inner());
        ports.remove(&self.0);
    }
}

/// Connects to `to`, from `source` when given (the inbound side's `127.0.0.6`). The local
/// port is bound, and registered as weir's own, before the connection is attempted: a
/// captured copy of it can only be accepted after that.
pub(crate) async fn connect(
    to: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<(TcpStream, OwnPort)> {
    let (socket, any) = match to {
        SocketAddr::V4(_) => (TcpSocket::new_v4()?, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        SocketAddr::V6(_) => (TcpSocket::new_v6()?, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
    };
    let from = source
        .filter(|ip| ip.is_ipv4() == to.is_ipv4())
        .unwrap_or(any);
    socket.bind(SocketAddr::new(from, 0))?;
    let own = OwnPort::register(socket.local_addr()?.port());
    let stream = tokio::time::timeout(timeout, socket.connect(to))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
    stream.set_nodelay(true)?;
    Ok((stream, own))
}

/// Relays bytes both ways between `client` and a new connection to `to` until both sides
/// are done.
pub(crate) async fn relay(
    mut client: TcpStream,
    to: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) {
    match connect(to, source, timeout).await {
        Ok((mut upstream, _own)) => {
            match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((sent, received)) => {
                    tracing::debug!(%to, sent, received, "tcp passthrough closed");
                }
                Err(e) => tracing::debug!(%to, error = %e, "tcp passthrough broke off"),
            }
        }
        Err(e) => {
            tracing::debug!(%to, error = %e, "tcp passthrough: cannot connect");
            let _ = client.shutdown().await;
        }
    }
}

/// `source` if a socket can be bound to it here (Istio's `127.0.0.6` needs the loopback
/// interface up), else `None`.
pub(crate) fn bindable(source: IpAddr) -> Option<IpAddr> {
    std::net::TcpListener::bind(SocketAddr::new(source, 0))
        .ok()
        .map(|_| source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_tells_http_from_other_protocols_and_waits_on_a_partial_method() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Sniffed::Http));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Some(Sniffed::Http));
        assert_eq!(classify(b"DELETE /x"), Some(Sniffed::Http));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"PRI *"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02"), Some(Sniffed::Other));
        assert_eq!(classify(b"GETX"), Some(Sniffed::Other));
        assert_eq!(classify(b"SSH-2.0-"), Some(Sniffed::Other));
    }

    #[tokio::test]
    async fn a_silent_client_is_not_http_once_the_window_ends() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let started = Instant::now();
        assert_eq!(
            sniff(&server, Duration::from_millis(50)).await,
            Sniffed::Other
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // Not redirected: no original destination.
        assert_eq!(original_dst(&server), None);
        drop(client);
    }

    #[tokio::test]
    async fn a_relays_own_port_is_known_while_it_runs_and_forgotten_after() {
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(front.local_addr().unwrap())
            .await
            .unwrap();
        let (downstream, _) = front.accept().await.unwrap();
        let to = target.local_addr().unwrap();
        let relaying = tokio::spawn(relay(downstream, to, None, Duration::from_secs(5)));
        // What the listener sees of the relay's connection is what a captured copy of it
        // would show: its peer is weir's own.
        let (upstream, peer) = target.accept().await.unwrap();
        assert!(is_own_relay(peer), "{peer}");
        assert!(!is_own_relay(client.local_addr().unwrap()));
        drop(upstream);
        drop(client);
        relaying.await.unwrap();
        assert!(!is_own_relay(peer), "{peer} still registered");
    }
}
