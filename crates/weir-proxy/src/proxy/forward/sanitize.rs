//! The request head before routing: one authority, and the path in its normal spelling
//! (Envoy's `normalize_path`, Istio's `pathNormalization`), which is what is matched and what
//! is forwarded. A head that fails here is the client's fault: 400 `DPE`, no destination.

use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, Request, header};
use weir_router::path::{Normalization, normalize};

/// Checks `req`'s authority and normalises its path in place; `Err` is the text of the 400.
pub(crate) fn head<B>(req: &mut Request<B>, mode: Normalization) -> Result<(), String> {
    authority(req.uri(), req.headers())?;
    let uri = req.uri();
    let normal = normalize(uri.path(), mode).map_err(|e| format!("bad request: {e}\n"))?;
    if let Some(path) = normal {
        let path_and_query = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(
            PathAndQuery::try_from(path_and_query)
                .map_err(|e| format!("bad request: the normalised path is invalid: {e}\n"))?,
        );
        *req.uri_mut() = Uri::from_parts(parts)
            .map_err(|e| format!("bad request: the normalised URI is invalid: {e}\n"))?;
    }
    Ok(())
}

/// One `Host` header at most, and it agrees with the URI's authority (HTTP/2 `:authority`,
/// an HTTP/1.1 absolute-form target): otherwise what routes and what the upstream reads could
/// differ.
fn authority(uri: &Uri, headers: &HeaderMap) -> Result<(), String> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("bad request: more than one Host header\n".to_string());
    }
    if let (Some(a), Some(h)) = (uri.authority(), host)
        && !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())
    {
        return Err("bad request: the Host header and the request's authority differ\n".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(uri: &str, hosts: &[&str], mode: Normalization) -> Result<String, String> {
        let mut req = Request::get(uri);
        for h in hosts {
            req = req.header(header::HOST, *h);
        }
        let mut req = req.body(()).unwrap();
        head(&mut req, mode).map(|()| req.uri().to_string())
    }

    #[test]
    fn paths_are_normalised_and_the_query_kept() {
        let base = Normalization::Base;
        assert_eq!(
            checked("/x/../admin/x?a=1", &["h"], base).unwrap(),
            "/admin/x?a=1"
        );
        assert_eq!(checked("/./admin/x", &["h"], base).unwrap(), "/admin/x");
        assert_eq!(checked("/%61dmin/x", &["h"], base).unwrap(), "/admin/x");
        assert_eq!(
            checked("/a//b", &["h"], Normalization::MergeSlashes).unwrap(),
            "/a/b"
        );
        assert_eq!(
            checked("/a/../b", &["h"], Normalization::None).unwrap(),
            "/a/../b"
        );
        assert_eq!(
            checked("http://h/x/%2e%2e/y", &["h"], base).unwrap(),
            "http://h/y"
        );
        assert!(checked("/a/%00", &["h"], base).unwrap_err().contains("NUL"));
    }

    #[test]
    fn two_hosts_or_a_differing_authority_are_refused() {
        let base = Normalization::Base;
        let err = checked("/", &["a", "b"], base).unwrap_err();
        assert!(err.contains("more than one Host"), "{err}");
        let err = checked("http://a/", &["b"], base).unwrap_err();
        assert!(err.contains("differ"), "{err}");
        assert!(checked("http://a:80/", &["A:80"], base).is_ok());
        assert!(checked("/", &["a"], base).is_ok());
    }
}
