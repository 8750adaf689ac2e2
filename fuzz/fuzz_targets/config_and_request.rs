//! bash fuzz/run.sh [seconds]   (stable toolchain; or `cargo +nightly fuzz run config_and_request`)
//!
//! Parse arbitrary config text; when it compiles, route arbitrary requests through it. Neither
//! may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_router::{ConfigSource, GuardOptions, RequestHead};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The first line is the request: `<path> <host> <header-name> <header-value> <value>`.
    let (request, config) = text.split_once('\n').unwrap_or(("", text));
    let compiled = weir_router::validate(&[ConfigSource::new("fuzz.yaml", config)], None, GuardOptions::default());
    let Some(table) = compiled.table else { return };
    let mut parts = request.split(' ');
    let path = parts.next().unwrap_or("/");
    let host = parts.next().unwrap_or("payment-svc");
    let (name, value) = (parts.next().unwrap_or("x-canary"), parts.next().unwrap_or("true"));
    let random: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let Ok(uri) = format!("http://{host}{path}").parse::<http::Uri>() else { return };
    let mut headers = http::HeaderMap::new();
    if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(value)) {
        headers.insert(n, v);
    }
    let method = http::Method::GET;
    let _ = table.decide(&RequestHead::new(&method, &uri, &headers), random);
});
