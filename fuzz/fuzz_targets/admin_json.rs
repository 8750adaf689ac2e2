//! bash fuzz/run.sh [seconds] admin_json
//!
//! Arbitrary JSON bodies to the admin API's writes (`PUT /weights`, `POST|DELETE /rollback`,
//! `POST /promote`) of an in-process sidecar, the first byte choosing the endpoint. Nothing may
//! panic; every answer is one of the documented statuses (200, 400, 404, 409, 413); and whatever
//! was accepted, the table in force still routes (`GET /routes` answers 200).
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let fixture = common::fixture();
    let (method, path) = match pick % 4 {
        0 => ("PUT", "/weights"),
        1 => ("POST", "/rollback"),
        2 => ("DELETE", "/rollback"),
        _ => ("POST", "/promote"),
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let answer = common::exchange(fixture.admin, &request);
    for status in common::statuses(&answer) {
        assert!(
            matches!(status, 200 | 400 | 404 | 409 | 413),
            "{status} for {method} {path} {:?}\n{}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&answer)
        );
    }
    let routes = common::exchange(
        fixture.admin,
        b"GET /routes HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(common::statuses(&routes), vec![200], "{}", String::from_utf8_lossy(&routes));
});
