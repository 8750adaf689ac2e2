//! Table-driven tests of request matching: every matcher kind, case rules, multiple header
//! values, rule order and first match. Each row: a `match:` list, a request, and the rule that
//! must win (`hit` = the match rule routing to v2, `miss` = the catch-all routing to v1).

mod common;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use weir_router::RequestHead;

struct Row {
    name: &'static str,
    /// The YAML of the `match:` list of rule 0, one item per line starting with `- `.
    matches: &'static str,
    method: &'static str,
    url: &'static str,
    headers: &'static [(&'static str, &'static str)],
    hit: bool,
}

const fn row(
    name: &'static str,
    matches: &'static str,
    method: &'static str,
    url: &'static str,
    headers: &'static [(&'static str, &'static str)],
    hit: bool,
) -> Row {
    Row {
        name,
        matches,
        method,
        url,
        headers,
        hit,
    }
}

const ROWS: &[Row] = &[
    // uri
    row(
        "uri exact equal",
        "- uri: {exact: /pay}",
        "GET",
        "http://svc/pay",
        &[],
        true,
    ),
    row(
        "uri exact longer",
        "- uri: {exact: /pay}",
        "GET",
        "http://svc/pay/x",
        &[],
        false,
    ),
    row(
        "uri exact ignores query",
        "- uri: {exact: /pay}",
        "GET",
        "http://svc/pay?x=1",
        &[],
        true,
    ),
    row(
        "uri exact case-sensitive",
        "- uri: {exact: /pay}",
        "GET",
        "http://svc/PAY",
        &[],
        false,
    ),
    row(
        "uri exact ignoreUriCase",
        "- {uri: {exact: /pay}, ignoreUriCase: true}",
        "GET",
        "http://svc/PaY",
        &[],
        true,
    ),
    row(
        "uri prefix",
        "- uri: {prefix: /api}",
        "GET",
        "http://svc/api/v1",
        &[],
        true,
    ),
    row(
        "uri prefix not segment-aware (Envoy)",
        "- uri: {prefix: /api}",
        "GET",
        "http://svc/apiary",
        &[],
        true,
    ),
    row(
        "uri prefix miss",
        "- uri: {prefix: /api}",
        "GET",
        "http://svc/ap",
        &[],
        false,
    ),
    row(
        "uri prefix ignoreUriCase",
        "- {uri: {prefix: /API}, ignoreUriCase: true}",
        "GET",
        "http://svc/api/x",
        &[],
        true,
    ),
    row(
        "uri regex whole value",
        "- uri: {regex: '/users/[0-9]+'}",
        "GET",
        "http://svc/users/42",
        &[],
        true,
    ),
    row(
        "uri regex must match all",
        "- uri: {regex: '/users/[0-9]+'}",
        "GET",
        "http://svc/users/42/x",
        &[],
        false,
    ),
    row(
        "uri regex not a search",
        "- uri: {regex: '[0-9]+'}",
        "GET",
        "http://svc/a1",
        &[],
        false,
    ),
    row(
        "uri regex ignoreUriCase leaves regex case-sensitive",
        "- {uri: {regex: '/abc'}, ignoreUriCase: true}",
        "GET",
        "http://svc/ABC",
        &[],
        false,
    ),
    // method, scheme, authority
    row(
        "method exact",
        "- method: {exact: POST}",
        "POST",
        "http://svc/",
        &[],
        true,
    ),
    row(
        "method exact miss",
        "- method: {exact: POST}",
        "GET",
        "http://svc/",
        &[],
        false,
    ),
    row(
        "method regex",
        "- method: {regex: 'PUT|PATCH'}",
        "PATCH",
        "http://svc/",
        &[],
        true,
    ),
    row(
        "scheme exact http",
        "- scheme: {exact: http}",
        "GET",
        "http://svc/",
        &[],
        true,
    ),
    row(
        "scheme exact https miss",
        "- scheme: {exact: https}",
        "GET",
        "http://svc/",
        &[],
        false,
    ),
    row(
        "authority exact with port",
        "- authority: {exact: 'svc:8080'}",
        "GET",
        "http://svc:8080/",
        &[],
        true,
    ),
    row(
        "authority prefix",
        "- authority: {prefix: svc}",
        "GET",
        "http://svc.prod/",
        &[],
        true,
    ),
    row(
        "authority regex miss",
        "- authority: {regex: 'other.*'}",
        "GET",
        "http://svc/",
        &[],
        false,
    ),
    // headers
    row(
        "header exact",
        "- headers: {x-canary: {exact: 'true'}}",
        "GET",
        "http://svc/",
        &[("x-canary", "true")],
        true,
    ),
    row(
        "header exact value case-sensitive",
        "- headers: {x-canary: {exact: 'true'}}",
        "GET",
        "http://svc/",
        &[("x-canary", "TRUE")],
        false,
    ),
    row(
        "header name case-insensitive (config)",
        "- headers: {X-Canary: {exact: 'true'}}",
        "GET",
        "http://svc/",
        &[("x-canary", "true")],
        true,
    ),
    row(
        "header name case-insensitive (request)",
        "- headers: {x-canary: {exact: 'true'}}",
        "GET",
        "http://svc/",
        &[("X-CANARY", "true")],
        true,
    ),
    row(
        "header absent",
        "- headers: {x-canary: {exact: 'true'}}",
        "GET",
        "http://svc/",
        &[],
        false,
    ),
    row(
        "header prefix",
        "- headers: {user-agent: {prefix: curl}}",
        "GET",
        "http://svc/",
        &[("user-agent", "curl/8.0")],
        true,
    ),
    row(
        "header regex",
        "- headers: {x-user: {regex: 'u[0-9]{3}'}}",
        "GET",
        "http://svc/",
        &[("x-user", "u123")],
        true,
    ),
    row(
        "header regex whole value",
        "- headers: {x-user: {regex: 'u[0-9]{3}'}}",
        "GET",
        "http://svc/",
        &[("x-user", "u1234")],
        false,
    ),
    row(
        "header present {}",
        "- headers: {x-debug: {}}",
        "GET",
        "http://svc/",
        &[("x-debug", "")],
        true,
    ),
    row(
        "header present {} absent",
        "- headers: {x-debug: {}}",
        "GET",
        "http://svc/",
        &[],
        false,
    ),
    // `prefix: ''` is refused in headers (Istio refuses it): see tests/istio_semantics.rs.
    row(
        "withoutHeaders regex .* misses a request without the header (Envoy treat_missing_header_as_empty)",
        "- withoutHeaders: {x-user: {regex: '.*'}}",
        "GET",
        "http://svc/",
        &[],
        false,
    ),
    row(
        "withoutHeaders exact '' misses a request without the header (treat_missing_header_as_empty)",
        "- withoutHeaders: {x-user: {exact: ''}}",
        "GET",
        "http://svc/",
        &[],
        false,
    ),
    row(
        "withoutHeaders exact '' matches a request with a value",
        "- withoutHeaders: {x-user: {exact: ''}}",
        "GET",
        "http://svc/",
        &[("x-user", "ann")],
        true,
    ),
    // port: the port the caller addressed (Host's port, else the scheme's default)
    row(
        "port equal to the Host's port",
        "- port: 8080",
        "GET",
        "http://svc:8080/",
        &[],
        true,
    ),
    row(
        "port differs from the Host's port",
        "- port: 8080",
        "GET",
        "http://svc:9090/",
        &[],
        false,
    ),
    row(
        "port 80 is http's default",
        "- port: 80",
        "GET",
        "http://svc/",
        &[],
        true,
    ),
    row(
        "multiple values joined with comma",
        "- headers: {x-tag: {exact: 'a,b'}}",
        "GET",
        "http://svc/",
        &[("x-tag", "a"), ("x-tag", "b")],
        true,
    ),
    row(
        "multiple values: single value no match",
        "- headers: {x-tag: {exact: 'a'}}",
        "GET",
        "http://svc/",
        &[("x-tag", "a"), ("x-tag", "b")],
        false,
    ),
    row(
        "two headers AND",
        "- headers: {x-a: {exact: '1'}, x-b: {exact: '2'}}",
        "GET",
        "http://svc/",
        &[("x-a", "1"), ("x-b", "2")],
        true,
    ),
    row(
        "two headers AND one missing",
        "- headers: {x-a: {exact: '1'}, x-b: {exact: '2'}}",
        "GET",
        "http://svc/",
        &[("x-a", "1")],
        false,
    ),
    // withoutHeaders
    row(
        "withoutHeaders absent header matches",
        "- withoutHeaders: {x-canary: {exact: 'true'}}",
        "GET",
        "http://svc/",
        &[],
        true,
    ),
    row(
        "withoutHeaders other value matches",
        "- withoutHeaders: {x-canary: {exact: 'true'}}",
        "GET",
        "http://svc/",
        &[("x-canary", "no")],
        true,
    ),
    row(
        "withoutHeaders matching value misses",
        "- withoutHeaders: {x-canary: {exact: 'true'}}",
        "GET",
        "http://svc/",
        &[("x-canary", "true")],
        false,
    ),
    row(
        "withoutHeaders {} = header must be absent",
        "- withoutHeaders: {x-debug: {}}",
        "GET",
        "http://svc/",
        &[("x-debug", "1")],
        false,
    ),
    // query params
    row(
        "query exact",
        "- queryParams: {ver: {exact: '2'}}",
        "GET",
        "http://svc/?ver=2",
        &[],
        true,
    ),
    row(
        "query exact miss",
        "- queryParams: {ver: {exact: '2'}}",
        "GET",
        "http://svc/?ver=3",
        &[],
        false,
    ),
    row(
        "query among others",
        "- queryParams: {ver: {exact: '2'}}",
        "GET",
        "http://svc/?a=1&ver=2&b",
        &[],
        true,
    ),
    row(
        "query regex",
        "- queryParams: {ver: {regex: '[0-9]+'}}",
        "GET",
        "http://svc/?ver=42",
        &[],
        true,
    ),
    row(
        "query prefix",
        "- queryParams: {ver: {prefix: 'beta'}}",
        "GET",
        "http://svc/?ver=beta-3",
        &[],
        true,
    ),
    row(
        "query absent",
        "- queryParams: {ver: {exact: '2'}}",
        "GET",
        "http://svc/",
        &[],
        false,
    ),
    row(
        "query key without value = empty value",
        "- queryParams: {debug: {exact: ''}}",
        "GET",
        "http://svc/?debug",
        &[],
        true,
    ),
    row(
        "query present {}",
        "- queryParams: {debug: {}}",
        "GET",
        "http://svc/?debug=1",
        &[],
        true,
    ),
    // AND across fields, OR across items
    row(
        "uri AND header both hold",
        "- {uri: {prefix: /api}, headers: {x-canary: {exact: 'true'}}}",
        "GET",
        "http://svc/api",
        &[("x-canary", "true")],
        true,
    ),
    row(
        "uri AND header one fails",
        "- {uri: {prefix: /api}, headers: {x-canary: {exact: 'true'}}}",
        "GET",
        "http://svc/web",
        &[("x-canary", "true")],
        false,
    ),
    row(
        "items OR: second item holds",
        "- uri: {prefix: /api}\n    - headers: {x-canary: {exact: 'true'}}",
        "GET",
        "http://svc/web",
        &[("x-canary", "true")],
        true,
    ),
    row(
        "items OR: neither holds",
        "- uri: {prefix: /api}\n    - headers: {x-canary: {exact: 'true'}}",
        "GET",
        "http://svc/web",
        &[],
        false,
    ),
    row(
        "empty item matches everything",
        "- {}",
        "GET",
        "http://svc/anything",
        &[],
        true,
    ),
];

#[test]
fn matcher_table() {
    assert!(ROWS.len() >= 40, "the table keeps at least 40 rows");
    let mut failures = Vec::new();
    for row in ROWS {
        let http = format!(
            "  - name: m\n    match:\n    {}\n    route:\n    - destination: {{host: svc, subset: v2}}\n  - name: rest\n    route:\n    - destination: {{host: svc, subset: v1}}\n",
            row.matches
        );
        let compiled = common::compile(&common::vs("", &http));
        // An empty item makes rule 0 a catch-all to the canary: the guard refuses that config (and
        // the rule after it is unreachable), but its matching is still what this row checks.
        let table = match compiled.table {
            Some(t)
                if !compiled.findings.errors().any(|f| {
                    !matches!(
                        f.code,
                        weir_router::Code::UnreachableRule | weir_router::Code::CanaryMajority
                    )
                }) =>
            {
                t
            }
            _ => panic!(
                "row {:?} does not compile:\n{}",
                row.name, compiled.findings
            ),
        };
        let method: Method = row.method.parse().unwrap();
        let uri: Uri = row.url.parse().unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in row.headers {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        let head = RequestHead::new(&method, &uri, &headers);
        let d = table.decide(&head, 0).expect("a route");
        let hit = d.rule.index == 0;
        // `matches` is `check().is_ok()`, and the table's explanation agrees with decide.
        let rule0 = &table.virtual_services()[0].rules[0];
        let explained = rule0.matches.iter().any(|m| m.check(&head).is_ok());
        if explained != hit {
            failures.push(format!("{}: check disagrees with matches", row.name));
        }
        let explanation = table.explain(&head, 0);
        let explained_rule = explanation.decision.as_ref().map(|d| d.rule.index).ok();
        if explained_rule != Some(d.rule.index) {
            failures.push(format!("{}: explain disagrees with decide", row.name));
        }
        if hit != row.hit {
            failures.push(format!(
                "{}: expected {}, got rule {}",
                row.name,
                if row.hit { "hit" } else { "miss" },
                d.rule.index
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn first_matching_rule_wins_in_order() {
    let http = "  - name: first\n    match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: svc, subset: v3}}]\n  - name: second\n    match: [{uri: {prefix: /api/v2}}]\n    route: [{destination: {host: svc, subset: v2}}]\n  - name: rest\n    route: [{destination: {host: svc, subset: v1}}]\n";
    let table = common::table(&common::vs("", http));
    let req = http::Request::get("http://svc/api/v2/x").body(()).unwrap();
    let d = table.decide(&RequestHead::of(&req), 0).unwrap();
    assert_eq!(
        d.rule.name.as_deref(),
        Some("first"),
        "rule order, not specificity, decides"
    );
    let req = http::Request::get("http://svc/web").body(()).unwrap();
    let d = table.decide(&RequestHead::of(&req), 0).unwrap();
    assert_eq!(d.destination.subset.as_deref(), Some("v1"));
}

#[test]
fn host_lookup_by_short_name_namespace_fqdn_and_port() {
    let table = common::table(&common::vs("", &common::split(100, 0)));
    for host in [
        "svc",
        "svc:80",
        "SVC",
        "svc.prod",
        "svc.prod.svc",
        "svc.prod.svc.cluster.local",
        "svc.prod.svc.cluster.local:8080",
    ] {
        let req = http::Request::get("/")
            .header("host", host)
            .body(())
            .unwrap();
        assert!(
            table.decide(&RequestHead::of(&req), 0).is_ok(),
            "host {host} should route"
        );
    }
    for host in ["other", "svc.staging", ""] {
        let req = http::Request::get("/")
            .header("host", host)
            .body(())
            .unwrap();
        assert!(
            matches!(
                table.decide(&RequestHead::of(&req), 0),
                Err(weir_router::NoRoute::UnknownHost(_))
            ),
            "host {host:?} must not route"
        );
    }
}

#[test]
fn no_rule_matches_is_no_route() {
    let http =
        "  - match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: svc, subset: v1}}]\n";
    let table = common::table(&common::vs("", http));
    let req = http::Request::get("http://svc/web").body(()).unwrap();
    assert!(matches!(
        table.decide(&RequestHead::of(&req), 0),
        Err(weir_router::NoRoute::NoMatchingRule(_))
    ));
}

/// `RouteTable::explain` and `Decision::matched` on the lesson's config: the skipped rule names
/// the condition it failed, and the decision says which match item hit.
#[test]
fn explain_names_the_failed_condition_and_decide_the_matched_item() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/payment-svc.yaml"
    ))
    .unwrap();
    let table = common::table(&text);
    let uri: Uri = "http://payment-svc/pay".parse().unwrap();
    let method = Method::GET;
    let mut headers = HeaderMap::new();
    let head = RequestHead::new(&method, &uri, &headers);
    let e = table.explain(&head, 95);
    assert_eq!(e.host, "payment-svc");
    assert_eq!(
        e.virtual_service.map(|v| v.name.as_str()),
        Some("payment-svc")
    );
    assert_eq!(e.skipped.len(), 1);
    assert_eq!(e.skipped[0].rule.index, 0);
    assert_eq!(e.skipped[0].reason(), "header x-canary is absent");
    let d = e.decision.as_ref().expect("routed");
    assert_eq!((d.rule.index, d.matched), (1, None));
    assert_eq!(
        d.destination.subset.as_deref(),
        Some("v2"),
        "95 % 100 is in v2's [90, 100)"
    );

    headers.insert("x-canary", HeaderValue::from_static("false"));
    let head = RequestHead::new(&method, &uri, &headers);
    let e = table.explain(&head, 0);
    assert_eq!(
        e.skipped[0].reason(),
        "header x-canary \"false\" is not exact \"true\""
    );

    headers.insert("x-canary", HeaderValue::from_static("true"));
    let head = RequestHead::new(&method, &uri, &headers);
    let d = table.decide(&head, 0).expect("routed");
    assert_eq!((d.rule.index, d.matched), (0, Some(0)));
    assert!(table.explain(&head, 0).skipped.is_empty());

    let uri: Uri = "http://checkout/pay".parse().unwrap();
    let head = RequestHead::new(&method, &uri, &headers);
    let e = table.explain(&head, 0);
    let why = e.decision.expect_err("no route");
    let body = table.no_route_message(&why);
    assert!(
        body.contains("\"checkout\"") && body.contains("known hosts: payment-svc"),
        "{body}"
    );
}
