//! bash fuzz/run.sh [seconds] path_normalize
//!
//! Envoy-style path normalisation on arbitrary paths: never panics, and what it returns is
//! normal: it starts with `/`, has no dot segment, is a fixed point (normalising it again
//! changes nothing) and keeps no unreserved character encoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_router::path::{Normalization, normalize};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    for mode in [Normalization::Base, Normalization::MergeSlashes] {
        let Ok(normal) = normalize(path, mode) else { continue };
        let normal = normal.unwrap_or_else(|| path.to_string());
        if path.starts_with('/') || normal != path {
            assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
        }
        for seg in normal.split('/').skip(1) {
            let name = seg.split(';').next().unwrap_or(seg);
            assert!(name != "." && name != "..", "{path:?} -> {normal:?}");
        }
        assert_eq!(normalize(&normal, mode), Ok(None), "{path:?} -> {normal:?} is not a fixed point");
        for (i, _) in normal.match_indices('%') {
            let byte = u8::from_str_radix(&normal[i + 1..i + 3], 16).unwrap();
            let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
            assert!(!unreserved, "{path:?} -> {normal:?} keeps an encoded unreserved character");
        }
        if mode == Normalization::MergeSlashes {
            assert!(!normal.contains("//"), "{path:?} -> {normal:?}");
        }
    }
});
