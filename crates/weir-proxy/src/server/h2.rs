//! The h2c server's limits, set explicitly: hyper's defaults are not a stable contract, and two
//! of them are unsafe against a hostile client (400 KiB buffered per stream for a client that
//! never reads, 200 streams per connection).
//!
//! ```text
//! per connection: <= max streams (REFUSED_STREAM beyond)
//!                 x  <= MAX_SEND_BUF bytes of response buffered per stream
//!                 +  <= CONNECTION_WINDOW bytes of request bodies received, unread
//! rapid reset (CVE-2023-44487): > MAX_PENDING_ACCEPT_RESET_STREAMS streams reset before they
//!                 were served -> GOAWAY ENHANCE_YOUR_CALM
//! malformed streams refused by the proxy: > MAX_LOCAL_ERROR_RESET_STREAMS -> GOAWAY
//! CONTINUATION flood (CVE-2024-27316): a header block over the header list size, or in more
//!                 frames than it needs, -> GOAWAY (the h2 crate's own check)
//! ```

use hyper_util::server::conn::auto::Http2Builder;

use super::limits::ConnectionLimits;

/// Bytes of response body buffered per stream ahead of the client's reading (hyper: 400 KiB).
pub(crate) const MAX_SEND_BUF: usize = 64 * 1024;

/// Streams a client may reset before the proxy has taken them up, at once (h2's default).
pub(crate) const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Streams the proxy may reset for the client's errors over a connection's life (hyper's
/// default); one more is a GOAWAY.
pub(crate) const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// The receive windows (hyper's defaults): at most this much of a stream's, and of all of a
/// connection's, request bodies is held unread.
pub(crate) const STREAM_WINDOW: u32 = 1024 * 1024;
/// See [`STREAM_WINDOW`].
pub(crate) const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Applies the limits to the h2 half of a listener's builder; `max_header_list` is the
/// listener's longest request head, in bytes.
pub(crate) fn configure<E>(
    http2: &mut Http2Builder<'_, E>,
    limits: &ConnectionLimits,
    max_header_list: Option<usize>,
) {
    http2
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout)
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_send_buf_size(MAX_SEND_BUF)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if let Some(max) = max_header_list {
        http2.max_header_list_size(u32::try_from(max).unwrap_or(u32::MAX));
    }
}
