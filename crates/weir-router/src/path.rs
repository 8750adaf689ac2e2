//! Request path normalisation, as Envoy's `normalize_path` (RFC 3986 section 6, through
//! Chromium's path canonicaliser) and Istio's `pathNormalization` modes: a path is matched and
//! forwarded in one spelling, so that `/x/../admin`, `/./admin` and `/%61dmin` cannot slip past
//! a `prefix: /admin` rule.
//!
//! ```
//! use weir_router::path::{Normalization, normalize};
//! assert_eq!(normalize("/x/../%61dmin/./y", Normalization::Base).unwrap().as_deref(), Some("/admin/y"));
//! assert_eq!(normalize("/pay", Normalization::Base).unwrap(), None); // already normal: no copy
//! assert_eq!(normalize("//a//b", Normalization::MergeSlashes).unwrap().as_deref(), Some("/a/b"));
//! assert!(normalize("/a/%00/b", Normalization::Base).is_err());
//! ```

use std::borrow::Cow;

/// How request paths are normalised before matching (Istio's `meshConfig.pathNormalization`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Normalization {
    /// Paths are matched and forwarded as received (Istio `NONE`).
    None,
    /// Dot segments resolved, `\` read as `/`, percent-encoded unreserved characters decoded
    /// (Istio `BASE`, Envoy `normalize_path: true`): Istio's default.
    #[default]
    Base,
    /// [`Base`](Normalization::Base), then runs of slashes merged into one (Istio
    /// `MERGE_SLASHES`).
    MergeSlashes,
}

impl std::str::FromStr for Normalization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "none" => Ok(Normalization::None),
            "base" => Ok(Normalization::Base),
            "merge-slashes" => Ok(Normalization::MergeSlashes),
            _ => Err(format!(
                "unknown path normalisation {s:?}: use none, base or merge-slashes"
            )),
        }
    }
}

/// Why a path cannot be normalised: the request is answered 400, as Envoy does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPath {
    /// `%` not followed by two hex digits.
    #[error("a `%` in the path is not followed by two hex digits")]
    BadEscape,
    /// `%00`: a NUL byte in the path.
    #[error("the path holds an encoded NUL byte (%00)")]
    Nul,
}

/// The normalised spelling of `path` (the path only: no query), or `None` when it is already
/// normal (the common case, with no allocation).
pub fn normalize(path: &str, mode: Normalization) -> Result<Option<String>, InvalidPath> {
    if mode == Normalization::None || is_normal(path, mode) {
        return Ok(None);
    }
    let decoded = decode_unreserved(path)?;
    let mut out = String::with_capacity(decoded.len() + 1);
    // Segments after the leading slash; `\` is a separator, as in Chromium.
    let body = decoded.trim_start_matches(['/', '\\']);
    let leading = decoded.len() - body.len();
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = body.split(['/', '\\']).peekable();
    // Leading slashes beyond the first are empty segments.
    segments.extend(std::iter::repeat_n("", leading.saturating_sub(1)));
    let mut trailing_slash = false;
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match dot_segment(seg) {
            Some(Dot::Current) => trailing_slash = last,
            Some(Dot::Parent) => {
                segments.pop();
                trailing_slash = last;
            }
            None => {
                segments.push(seg);
                trailing_slash = false;
            }
        }
    }
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    if mode == Normalization::MergeSlashes {
        // After the dot segments, as Envoy merges after normalize_path.
        let mut prev = '\0';
        out.retain(|c| {
            let keep = !(c == '/' && prev == '/');
            prev = c;
            keep
        });
    }
    Ok(if out == path { None } else { Some(out) })
}

enum Dot {
    Current,
    Parent,
}

/// `.` or `..` (after decoding), with any `;parameters` after them, as Envoy reads them.
fn dot_segment(seg: &str) -> Option<Dot> {
    let name = seg.split_once(';').map_or(seg, |(n, _)| n);
    match name {
        "." => Some(Dot::Current),
        ".." => Some(Dot::Parent),
        _ => None,
    }
}

/// Whether `path` has nothing to normalise: one pass over the bytes, no allocation.
fn is_normal(path: &str, mode: Normalization) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut prev = 0u8;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'%' | b'\\' => return false,
            b'.' if prev == b'/' => {
                // `/.` starting a segment: `.`, `..`, `.;x` or `..;x` is a dot segment.
                let rest = &b[i..];
                let end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
                let seg = &rest[..end];
                let name = seg.split(|&c| c == b';').next().unwrap_or(seg);
                if name == b"." || name == b".." {
                    return false;
                }
            }
            b'/' if prev == b'/' && mode == Normalization::MergeSlashes => return false,
            _ => {}
        }
        prev = c;
    }
    true
}

/// Decodes `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`); others stay
/// encoded as sent. `%00` and malformed escapes are errors.
fn decode_unreserved(path: &str) -> Result<Cow<'_, str>, InvalidPath> {
    if !path.contains('%') {
        return Ok(Cow::Borrowed(path));
    }
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            // Copy the run up to the next escape (a whole UTF-8 sequence at a time).
            let next = path[i..].find('%').map_or(b.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let hex = |c: u8| (c as char).to_digit(16);
        let (Some(h), Some(l)) = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(InvalidPath::BadEscape);
        };
        let byte = (h * 16 + l) as u8;
        if byte == 0 {
            return Err(InvalidPath::Nul);
        }
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&path[i..i + 3]);
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(p: &str) -> String {
        normalize(p, Normalization::Base)
            .unwrap()
            .unwrap_or_else(|| p.to_string())
    }

    /// Envoy's own cases (test/common/http/path_utility_test.cc, NormalizeValidPaths) and
    /// the spellings the issue found slipping past `prefix: /admin`.
    #[test]
    fn envoys_cases_and_the_admin_spellings() {
        let rows = [
            ("/a/b/../c", "/a/c"),
            ("/a/b/./c", "/a/b/c"),
            ("a/b/../c", "/a/c"),
            ("/a/b/../../../../c", "/c"),
            ("/a/..\\c", "/c"),
            ("/%c0%af", "/%c0%af"),
            ("/%5c%25", "/%5c%25"),
            ("/a/b/%2E%2E/c", "/a/c"),
            ("/a/b/%2E./c", "/a/c"),
            ("/a/b/%2E/c", "/a/b/c"),
            ("..", "/"),
            ("/../a/b", "/a/b"),
            ("/./a/b", "/a/b"),
            ("/xyz/..;foo=bar/abc", "/abc"),
            ("/..;foo=bar/abc", "/abc"),
            ("/xyz/..;foo=bar", "/"),
            ("/xyz/.;foo=bar/abc", "/xyz/abc"),
            ("/x/../admin/x", "/admin/x"),
            ("/./admin/x", "/admin/x"),
            ("/%61dmin/x", "/admin/x"),
            ("/%7Euser/%2d%5F", "/~user/-_"),
            ("/a/b/", "/a/b/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a//b", "/a//b"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/...", "/a/..."),
        ];
        for (path, want) in rows {
            assert_eq!(base(path), want, "{path}");
        }
        for normal in ["/xyz", "/x/y/z", "/", "/pay", "/a/.b/..c/c.."] {
            assert_eq!(normalize(normal, Normalization::Base), Ok(None), "{normal}");
        }
    }

    #[test]
    fn invalid_escapes_are_refused_as_envoy_does() {
        for path in [
            "/xyz/.%00../abc",
            "/xyz/%00.%00./abc",
            "/xyz/AAAAA%%0000/abc",
            "/a%2",
            "/%zz",
        ] {
            assert!(normalize(path, Normalization::Base).is_err(), "{path}");
        }
    }

    #[test]
    fn merge_slashes_and_none() {
        let merge = |p: &str| {
            normalize(p, Normalization::MergeSlashes)
                .unwrap()
                .unwrap_or_else(|| p.to_string())
        };
        assert_eq!(merge("//a///b//"), "/a/b/");
        // Dot segments first, then slashes merged, as Envoy does.
        assert_eq!(merge("/a//../b"), "/a/b");
        assert_eq!(merge("///"), "/");
        assert_eq!(normalize("/a/../b", Normalization::None), Ok(None));
        assert_eq!("MERGE_SLASHES".parse(), Ok(Normalization::MergeSlashes));
        assert!("decode".parse::<Normalization>().is_err());
    }
}
