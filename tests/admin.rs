//! The admin API of `weir serve` and its CLI clients (`weir set-weights`, `weir rollback`),
//! against the real binary and upstreams started here.

mod support;

use std::process::Output;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(20);

async fn lesson() -> (Upstream, Upstream, Weir) {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start(&lesson_config(&v1, &v2, 90, 10));
    (v1, v2, weir)
}

async fn routes(weir: &Weir) -> Value {
    let (status, body) = weir.admin_json("GET", "/routes", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "GET /routes: {body}");
    body
}

/// The weights of the lesson's `canary-split` rule in force: (v1, v2).
async fn split(weir: &Weir) -> (u64, u64) {
    let routes = routes(weir).await;
    let rule = &routes["virtual_services"][0]["rules"][1];
    assert_eq!(rule["name"], "canary-split");
    let weight = |subset: &str| {
        rule["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["subset"] == subset)
            .map(|d| d["weight"].as_u64().unwrap())
            .unwrap_or(0)
    };
    (weight("v1"), weight("v2"))
}

/// The upstream that answered `n` requests through the proxy, in order.
async fn send_many(weir: &Weir, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, headers, _) = weir.send("payment-svc", "/pay", &[]).await;
        assert_eq!(status, StatusCode::OK);
        out.push(headers["x-upstream"].to_str().unwrap().to_string());
    }
    out
}

fn codes(body: &Value) -> Vec<String> {
    body["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings in {body}"))
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

/// Runs a `weir` subcommand to completion (off the async runtime).
async fn weir_cli(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || weir_command().args(&args).output().expect("run weir"))
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_describe_the_table_in_force() {
    let (v1, v2, weir) = lesson().await;
    let (status, _, body) = http_request(
        "GET",
        &format!("{}/healthz", weir.admin_url()),
        None,
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok\n"[..]));
    let (status, _, _) = http_request(
        "GET",
        &format!("{}/readyz", weir.admin_url()),
        None,
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let routes = routes(&weir).await;
    assert_eq!(routes["generation"], 1);
    let vs = &routes["virtual_services"][0];
    assert_eq!(vs["name"], "payment-svc");
    assert_eq!(vs["namespace"], "production");
    assert_eq!(vs["hosts"], json!(["payment-svc"]));
    assert_eq!(vs["stable_subset"], "v1");
    assert_eq!(vs["latched"], false);
    let split = &vs["rules"][1];
    assert_eq!(split["index"], 1);
    assert_eq!(split["destinations"][0]["subset"], "v1");
    assert_eq!(split["destinations"][0]["weight"], 90);
    assert_eq!(split["destinations"][0]["share_percent"], 90.0);
    assert_eq!(split["destinations"][1]["weight"], 10);
    assert_eq!(
        split["destinations"][0]["endpoints"],
        json!([format!("127.0.0.1:{}", v1.port())])
    );
    assert_eq!(
        split["destinations"][1]["endpoints"],
        json!([format!("127.0.0.1:{}", v2.port())])
    );

    let (status, config) = weir.admin_json("GET", "/config", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["generation"], 1);
    let source = &config["sources"][0];
    assert!(
        source["file"].as_str().unwrap().ends_with("config.yaml"),
        "{config}"
    );
    assert_eq!(source["yaml"].as_str().unwrap(), read(&weir.config_path));

    let (status, headers, _) = http_request(
        "GET",
        &format!("{}/metrics", weir.admin_url()),
        None,
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let metrics = weir.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "weir_config_generation", &[]),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_sends_the_very_next_request_to_v1_and_holds_through_a_reload_until_released() {
    let (_v1, v2, weir) = lesson().await;
    // Traffic reaches the canary before the rollback.
    eventually(WAIT, "a request reaches v2", || async {
        send_many(&weir, 10).await.iter().any(|u| u == "v2")
    })
    .await;

    let (status, body) = weir
        .admin_json(
            "POST",
            "/rollback",
            json!({"virtual_service": "payment-svc"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["virtual_services"], json!(["production/payment-svc"]));
    assert!(body["took_us"].as_u64().is_some(), "{body}");
    let rolled_back = body["generation"].as_u64().unwrap();
    assert!(rolled_back >= 2);

    // The very next requests: none reaches the canary.
    let before = v2.count();
    let answered = send_many(&weir, 200).await;
    assert!(
        answered.iter().all(|u| u == "v1"),
        "a request reached v2 after the rollback"
    );
    assert_eq!(v2.count(), before);
    assert_eq!(split(&weir).await, (100, 0));
    assert_eq!(routes(&weir).await["virtual_services"][0]["latched"], true);
    let metrics = weir.metrics().await;
    assert_eq!(metric_sum(&metrics, "weir_rollbacks_total", &[]), 1.0);

    // A reload of a file that still says 90/10 does not undo the latch.
    let text = format!("{}\n# touched\n", read(&weir.config_path));
    weir.write_config(&text);
    eventually(WAIT, "the touched file is reloaded", || async {
        routes(&weir).await["generation"].as_u64().unwrap() > rolled_back
    })
    .await;
    assert_eq!(split(&weir).await, (100, 0));
    assert!(send_many(&weir, 100).await.iter().all(|u| u == "v1"));

    // Nor can a weight change while latched.
    let (status, body) = weir
        .admin_json(
            "PUT",
            "/weights",
            json!({"virtual_service": "payment-svc", "weights": {"v1": 90, "v2": 10}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(codes(&body), ["WEIR014"]);

    // DELETE releases the latch; the canary stays at 0% until its weight is raised.
    let (status, body) = weir
        .admin_json(
            "DELETE",
            "/rollback",
            json!({"virtual_service": "payment-svc"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(routes(&weir).await["virtual_services"][0]["latched"], false);
    assert_eq!(split(&weir).await, (100, 0));
    let (status, body) = weir
        .admin_json(
            "PUT",
            "/weights",
            json!({"virtual_service": "payment-svc", "weights": {"v1": 90, "v2": 10}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(WAIT, "a request reaches v2 again", || async {
        send_many(&weir, 10).await.iter().any(|u| u == "v2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_go_through_the_guard() {
    let (_v1, _v2, weir) = lesson().await;

    // The 99/1 typo: refused with the findings, nothing changes.
    let (status, body) = weir
        .admin_json(
            "PUT",
            "/weights",
            json!({"virtual_service": "payment-svc", "rule": "canary-split", "weights": {"v1": 1, "v2": 99}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "refused by the weight guard");
    let found = codes(&body);
    assert!(
        found.contains(&"WEIR004".to_string()),
        "no direction guard finding: {body}"
    );
    assert!(
        found.contains(&"WEIR005".to_string()),
        "no step guard finding: {body}"
    );
    assert_eq!(routes(&weir).await["generation"], 1);
    assert_eq!(split(&weir).await, (90, 10));

    // Weights that do not sum to 100 are refused even with force.
    let (status, body) = weir
        .admin_json(
            "PUT",
            "/weights",
            json!({"virtual_service": "payment-svc", "weights": {"v2": 20}, "force": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(codes(&body), ["WEIR001"]);

    // A step within max-step, with the rule by index: applied.
    let (status, body) = weir
        .admin_json(
            "PUT",
            "/weights",
            json!({"virtual_service": "payment-svc", "rule": 1, "weights": {"v1": 50, "v2": 50}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["generation"], 2);
    assert!(body["findings"].as_array().is_some());
    assert_eq!(split(&weir).await, (50, 50));
    let metrics = weir.metrics().await;
    assert_eq!(metric_sum(&metrics, "weir_config_generation", &[]), 2.0);

    // Only an explicit force skips the direction guard; a declared promotion also does.
    let majority = json!({"virtual_service": "payment-svc", "weights": {"v1": 40, "v2": 60}});
    let (status, _) = weir.admin_json("PUT", "/weights", majority.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let mut promotion = majority.clone();
    promotion["promotion"] = json!(true);
    let (status, body) = weir.admin_json("PUT", "/weights", promotion).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(split(&weir).await, (40, 60));

    // Promotion: v2 becomes the stable subset with everything.
    let (status, body) = weir
        .admin_json(
            "POST",
            "/promote",
            json!({"virtual_service": "payment-svc", "subset": "v2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["generation"].as_u64().unwrap() > 3);
    let vs = &routes(&weir).await["virtual_services"][0];
    assert_eq!(vs["stable_subset"], "v2");
    assert_eq!(split(&weir).await, (0, 100));
    let (_, headers, _) = weir.send("payment-svc", "/pay", &[]).await;
    assert_eq!(headers["x-upstream"], "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_misaddressed_requests_are_rejected() {
    let (_v1, _v2, weir) = lesson().await;
    let put = |body: &'static str| {
        let url = format!("{}/weights", weir.admin_url());
        async move {
            http_request(
                "PUT",
                &url,
                None,
                &[("content-type", "application/json")],
                Bytes::from(body),
            )
            .await
        }
    };
    for body in [
        "{not json",
        r#"{"virtual_service": "payment-svc"}"#,
        r#"{"virtual_service": "payment-svc", "weights": {"v1": -1, "v2": 101}}"#,
        r#"{"virtual_service": "payment-svc", "weights": {"v1": 90, "v2": 10}, "forced": true}"#,
        r#"{"virtual_service": "payment-svc", "weights": {}}"#,
    ] {
        let (status, _, answer) = put(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }

    let (status, body) = weir
        .admin_json(
            "PUT",
            "/weights",
            json!({"virtual_service": "orders-svc", "weights": {"v1": 100}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("production/payment-svc"),
        "{body}"
    );
    let (status, _) = weir
        .admin_json(
            "POST",
            "/rollback",
            json!({"virtual_service": "orders-svc"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = weir
        .admin_json(
            "PUT",
            "/weights",
            json!({"virtual_service": "payment-svc", "weights": {"v3": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, headers, _) = http_request(
        "POST",
        &format!("{}/weights", weir.admin_url()),
        None,
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "PUT");
    let (status, _, _) = http_request(
        "GET",
        &format!("{}/nope", weir.admin_url()),
        None,
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing above changed the table.
    assert_eq!(routes(&weir).await["generation"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_admin_request() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let weir = Weir::start_with_args(
        &lesson_config(&v1, &v2, 90, 10),
        &["--admin-token", "s3cret"],
    );
    let url = |path: &str| format!("{}{path}", weir.admin_url());

    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("s3cret"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        for path in ["/healthz", "/routes", "/metrics"] {
            let (status, _, _) =
                http_request("GET", &url(path), None, &headers, Bytes::new()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "GET {path} with {auth:?}");
        }
        let (status, headers, _) = http_request(
            "PUT",
            &url("/weights"),
            None,
            &headers,
            Bytes::from(r#"{"virtual_service": "payment-svc", "weights": {"v1": 50, "v2": 50}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    let bearer = [("authorization", "Bearer s3cret")];
    let (status, _, body) = http_request("GET", &url("/routes"), None, &bearer, Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    let routes: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        routes["generation"], 1,
        "an unauthorized write changed the table"
    );

    // The CLI: without the token, a usage error; with it, done.
    let base = vec![
        "set-weights".to_string(),
        "--admin".to_string(),
        weir.admin_url(),
        "--virtual-service".to_string(),
        "payment-svc".to_string(),
        "v1=50".to_string(),
        "v2=50".to_string(),
    ];
    let out = weir_cli(base.clone()).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    let mut with_token = base;
    with_token.extend(["--token".to_string(), "s3cret".to_string()]);
    let out = weir_cli(with_token).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_off_loopback_needs_a_token() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let config = lesson_config(&v1, &v2, 90, 10);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &config).unwrap();
    let args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "0.0.0.0:0",
        "--config",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([path.display().to_string()])
    .collect();
    let out = weir_cli(args).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!stdout(&out).contains("ready"), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--admin-token"),
        "{err}"
    );

    // With a token it starts; it is only ever spoken to over loopback.
    let weir = Weir::start_with_args(
        &config,
        &["--admin", "0.0.0.0:0", "--admin-token", "s3cret"],
    );
    assert!(weir.admin.ip().is_unspecified(), "{}", weir.admin);
    let loopback = format!("http://127.0.0.1:{}/routes", weir.admin.port());
    let (status, _, _) = http_request("GET", &loopback, None, &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = http_request(
        "GET",
        &loopback,
        None,
        &[("authorization", "Bearer s3cret")],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_config_does_not_start() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let config = lesson_config(&v1, &v2, 1, 99);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let args = vec![
        "serve".to_string(),
        "--config".to_string(),
        path.display().to_string(),
        "--listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--admin".to_string(),
        "127.0.0.1:0".to_string(),
    ];
    let out = weir_cli(args).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!stdout(&out).contains("ready"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WEIR004") && err.contains("refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_weights_cli_end_to_end() {
    let (_v1, _v2, weir) = lesson().await;
    let cli = |weights: &[&str], extra: &[&str]| {
        let mut args = vec![
            "set-weights".to_string(),
            "--admin".to_string(),
            weir.admin_url(),
            "--virtual-service".to_string(),
            "payment-svc".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(weights.iter().map(|s| s.to_string()));
        weir_cli(args)
    };

    let out = cli(&["v1=1", "v2=99"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains("REFUSED") && text.contains("WEIR004"),
        "{text}"
    );
    assert_eq!(split(&weir).await, (90, 10));

    let out = cli(
        &["v1=50", "v2=50"],
        &["--rule", "canary-split", "--format", "json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).expect("--format json prints JSON");
    assert_eq!(reply["generation"], 2);
    assert_eq!(split(&weir).await, (50, 50));

    let out = cli(&["v1=60", "v2=40"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("generation 3"), "{out:?}");

    let out = cli(&["v1=sixty"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Nothing listens there any more: a connection error is exit 2.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = weir_cli(vec![
        "set-weights".into(),
        "--admin".into(),
        dead,
        "--virtual-service".into(),
        "payment-svc".into(),
        "v1=100".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_cli_rolls_back_and_releases() {
    let (_v1, v2, weir) = lesson().await;
    // No --virtual-service: every VirtualService of the sidecar.
    let out = weir_cli(vec!["rollback".into(), "--admin".into(), weir.admin_url()]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout(&out).contains("rolled back production/payment-svc"),
        "{out:?}"
    );
    assert_eq!(split(&weir).await, (100, 0));
    assert_eq!(routes(&weir).await["virtual_services"][0]["latched"], true);
    let before = v2.count();
    assert!(send_many(&weir, 100).await.iter().all(|u| u == "v1"));
    assert_eq!(v2.count(), before);

    let out = weir_cli(vec![
        "rollback".into(),
        "--admin".into(),
        weir.admin_url(),
        "--release".into(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(reply["generation"].as_u64().is_some(), "{reply}");
    assert_eq!(routes(&weir).await["virtual_services"][0]["latched"], false);
}
