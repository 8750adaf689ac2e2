//! Who may call the admin API, and with which methods.

use http::{HeaderValue, StatusCode, header};

use super::reply::{AdminResponse, error};

/// The answer to a request without the right bearer token.
pub(super) fn unauthorized() -> AdminResponse {
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "this admin API requires `Authorization: Bearer <token>` (the --admin-token of weir serve)",
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Compares the bearer token in constant time, so that response timing does not reveal how
/// much of a guess was right.
pub(super) fn authorized(value: Option<&HeaderValue>, token: &str) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (given, token) = (given.trim().as_bytes(), token.as_bytes());
    given.len() == token.len()
        && given
            .iter()
            .zip(token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The methods an endpoint takes (the `Allow` header of a 405), or `None` for no such endpoint.
pub(super) fn allowed_methods(path: &str) -> Option<&'static str> {
    Some(match path {
        "/healthz" | "/readyz" | "/metrics" | "/config" | "/routes" => "GET, HEAD",
        "/weights" => "PUT",
        "/rollback" => "POST, DELETE",
        "/state" => "DELETE",
        "/promote" | "/reload" => "POST",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let ok = HeaderValue::from_static("Bearer s3cret");
        assert!(authorized(Some(&ok), "s3cret"));
        assert!(authorized(
            Some(&HeaderValue::from_static("bearer s3cret")),
            "s3cret"
        ));
        for bad in [
            "Bearer s3cre",
            "Bearer s3crett",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert!(
                !authorized(Some(&HeaderValue::from_static(bad)), "s3cret"),
                "{bad}"
            );
        }
        assert!(!authorized(None, "s3cret"));
    }
}
