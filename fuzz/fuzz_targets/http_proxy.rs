//! bash fuzz/run.sh [seconds] http_proxy
//!
//! Arbitrary bytes as an HTTP/1.1 (or h2c) connection to an in-process weir proxy: the head,
//! the body (chunked, lengths, trailers), several requests on one connection. Nothing may
//! panic, and the proxy never answers 500 (its own bug) or blames a healthy upstream: a 502,
//! 503 or 504 here would be a client fault counted against the destination.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fixture = common::fixture();
    let answer = common::exchange(fixture.proxy, data);
    for status in common::statuses(&answer) {
        assert!(
            !(500..=504).contains(&status),
            "{status} for {:?}\n{}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&answer)
        );
    }
});
