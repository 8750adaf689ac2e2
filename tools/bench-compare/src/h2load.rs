//! h2load (nghttp2-client) over HTTP/1.1: a fixed number of requests over a fixed number of
//! keep-alive connections, for the callgrind counts, where a load measured in requests rather
//! than time makes runs comparable between proxies of any speed.

use crate::oha::HOST;

/// h2load's arguments: `requests` requests over `connections` HTTP/1.1 connections, one
/// request in flight on each (no pipelining), one client thread. The Host goes in as
/// `:authority`: a `host` header would be sent beside h2load's own, and nginx answers a
/// request with two Hosts 400.
pub fn args(url: &str, requests: u64, connections: u32) -> Vec<String> {
    vec![
        "--h1".into(),
        "-n".into(),
        requests.to_string(),
        "-c".into(),
        connections.to_string(),
        "-t".into(),
        "1".into(),
        "-H".into(),
        format!(":authority: {HOST}"),
        url.into(),
    ]
}

/// `(succeeded, 2xx)` from h2load's `requests:` and `status codes:` lines.
pub fn parse(text: &str) -> Result<(u64, u64), String> {
    let count_before = |line_key: &str, word: &str| -> Option<u64> {
        let line = text.lines().find_map(|l| l.trim().strip_prefix(line_key))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words.iter().position(|w| w.trim_end_matches(',') == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    let succeeded = count_before("requests:", "succeeded").ok_or_else(|| {
        format!(
            "h2load output lacks `requests: ... succeeded`: `{}`",
            text.trim()
        )
    })?;
    let ok = count_before("status codes:", "2xx").ok_or_else(|| {
        format!(
            "h2load output lacks `status codes: ... 2xx`: `{}`",
            text.trim()
        )
    })?;
    Ok((succeeded, ok))
}
