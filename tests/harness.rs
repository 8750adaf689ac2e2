//! Checks of the harness itself and of the CLI commands that need no sidecar.

mod support;

use support::*;

#[tokio::test]
async fn upstream_counts_and_follows_behavior() {
    let up = Upstream::start_with(
        "v1",
        Behavior {
            fail_first: 1,
            ..Behavior::default()
        },
    )
    .await;
    let url = format!("http://{}/x", up.addr);
    let (s1, _, _) = http_request("GET", &url, None, &[], bytes::Bytes::new()).await;
    let (s2, h2, b2) = http_request("GET", &url, None, &[], bytes::Bytes::new()).await;
    assert_eq!(s1.as_u16(), 503);
    assert_eq!(s2.as_u16(), 200);
    assert_eq!(h2["x-upstream"], "v1");
    assert_eq!(&b2[..], b"v1");
    assert_eq!(up.count(), 2);
    assert_eq!(up.answered().get(&503), Some(&1));
}

#[test]
fn metric_parsing_sums_matching_series() {
    let text = "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"z\"} 3\nx_total{a=\"2\",b=\"z\"} 4\nx_total{a=\"1\",b=\"w\"} 5\n";
    assert_eq!(metric_sum(text, "x_total", &[("a", "1")]), 8.0);
    assert_eq!(metric_sum(text, "x_total", &[("b", "q\"z")]), 3.0);
    assert_eq!(metric_sum(text, "x_total", &[]), 12.0);
}

#[test]
fn render_sets_any_split() {
    let text = std::fs::read_to_string(root().join("config/payment-svc.yaml")).unwrap();
    for (a, b) in [(100, 0), (0, 100), (90, 10), (50, 50), (1, 99)] {
        let out = render(&text, 1, 2, a, b);
        assert!(out.contains(&format!("weight: {a} #")), "{a}/{b}");
        assert!(out.contains(&format!("weight: {b} #")), "{a}/{b}");
        assert!(out.contains("http: 1\n") && out.contains("http: 2\n"));
    }
}
