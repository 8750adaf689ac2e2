//! Flagger's query templates: the variables a query may name (Flagger's
//! `MetricTemplateModel`), how they are filled in, and Flagger's two built-in Istio queries
//! (fluxcd/flagger `pkg/metrics/observers/istio.go`) as Flagger sends them to Prometheus.
//!
//! Flagger renders a template with Go's `text/template`, each variable a function returning
//! the model's field as is (no quoting, no escaping), and its Prometheus provider then
//! replaces every run of whitespace with one space before sending the query
//! (`trimQuery` in `pkg/metrics/providers/prometheus.go`). The built-in queries below go
//! through both steps, so that what weir sends is byte for byte what Flagger sends.
//! A leaf module: the spec (custom queries) and the Prometheus source use it.

use std::time::Duration;

/// What a query template may name: `{{ name }}`, `{{ namespace }}`, `{{ target }}`,
/// `{{ service }}` and `{{ interval }}`, with or without the spaces inside the braces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Model<'a> {
    /// The Canary's `metadata.name`.
    pub(crate) name: &'a str,
    /// The Canary's `metadata.namespace`.
    pub(crate) namespace: &'a str,
    /// `spec.targetRef.name`: the canary's workload.
    pub(crate) target: &'a str,
    /// The service (for weir: the VirtualService) the canary is behind.
    pub(crate) service: &'a str,
    /// The metric's interval, as written in the spec (Flagger's default is `1m`).
    pub(crate) interval: &'a str,
}

impl Model<'_> {
    /// `template` with every variable it names filled in; unknown variables are left as
    /// written (the spec refuses them).
    pub(crate) fn render(&self, template: &str) -> String {
        let mut out = template.to_string();
        for (var, value) in [
            ("interval", self.interval),
            ("namespace", self.namespace),
            ("name", self.name),
            ("target", self.target),
            ("service", self.service),
        ] {
            out = out
                .replace(&format!("{{{{ {var} }}}}"), value)
                .replace(&format!("{{{{{var}}}}}"), value);
        }
        out
    }
}

/// Flagger's `request-success-rate` for Istio: non-5xx requests in % of all, as the
/// destination's sidecar reports them, for the workloads matching `target`.
const REQUEST_SUCCESS_RATE: &str = r#"
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}",
				response_code!~"5.*"
			}[{{ interval }}]
		)
	)
	/
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}"
			}[{{ interval }}]
		)
	)
	* 100"#;

/// Flagger's `request-duration` for Istio: the p99 in ms over the same series.
const REQUEST_DURATION: &str = r#"
	histogram_quantile(
		0.99,
		sum(
			rate(
				istio_request_duration_milliseconds_bucket{
					reporter="destination",
					destination_workload_namespace="{{ namespace }}",
					destination_workload=~"{{ target }}"
				}[{{ interval }}]
			)
		) by (le)
	)"#;

/// weir's own, beside Flagger's: the requests in the window over the same series, for
/// `minRequests` (Flagger has no such gate).
const REQUESTS: &str = r#"
	sum(
		increase(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}"
			}[{{ interval }}]
		)
	)"#;

/// Flagger's built-in Istio queries for one canary workload, rendered and trimmed as Flagger
/// sends them.
///
/// ```
/// use std::time::Duration;
/// use weir_canary::FlaggerQueries;
///
/// let q = FlaggerQueries::new("default", "podinfo");
/// assert_eq!(
///     q.request_duration(Duration::from_secs(60)),
///     r#" histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) by (le) )"#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlaggerQueries {
    namespace: String,
    target: String,
}

impl FlaggerQueries {
    /// The queries for the workload(s) matching `target` (a regular expression, as Flagger
    /// writes it into `=~`) in `namespace`.
    pub fn new(namespace: impl Into<String>, target: impl Into<String>) -> Self {
        FlaggerQueries {
            namespace: namespace.into(),
            target: target.into(),
        }
    }

    /// `request-success-rate` over `interval`.
    pub fn request_success_rate(&self, interval: Duration) -> String {
        self.render(REQUEST_SUCCESS_RATE, interval)
    }

    /// `request-duration` (p99, ms) over `interval`.
    pub fn request_duration(&self, interval: Duration) -> String {
        self.render(REQUEST_DURATION, interval)
    }

    /// The request count over `interval` (weir's, for `minRequests`), on the same series.
    pub fn requests(&self, interval: Duration) -> String {
        self.render(REQUESTS, interval)
    }

    fn render(&self, template: &str, interval: Duration) -> String {
        let interval = flagger_interval(interval);
        let model = Model {
            name: "",
            namespace: &self.namespace,
            target: &self.target,
            service: "",
            interval: &interval,
        };
        trim(&model.render(template))
    }
}

/// Flagger's `trimQuery`: every run of whitespace becomes one space (leading and trailing
/// runs included, so a query starting with a newline starts with a space).
fn trim(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut in_space = false;
    for c in query.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// A window as Flagger's intervals are usually written: the largest unit that divides it
/// (`1m`, `30s`, `2h`, `1500ms`), so that the default 60 s is Flagger's default `1m`.
/// Never `0s`: a zero window is `1ms`.
pub(crate) fn flagger_interval(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_filled_in_as_written() {
        let model = Model {
            name: "payment-svc",
            namespace: "prod",
            target: "payment-svc-v2",
            service: "payment-svc",
            interval: "30s",
        };
        assert_eq!(
            model.render(r#"x{a="{{ namespace }}",b=~"{{target}}",c="{{ name }}",d="{{ service }}"}[{{ interval }}] {{ other }}"#),
            r#"x{a="prod",b=~"payment-svc-v2",c="payment-svc",d="payment-svc"}[30s] {{ other }}"#
        );
    }

    /// The strings Flagger's own tests expect (`TestIstioObserver_GetRequestSuccessRate` and
    /// `_GetRequestDuration` in fluxcd/flagger `pkg/metrics/observers/istio_test.go`: namespace
    /// `default`, target `podinfo`, interval `1m`).
    #[test]
    fn flaggers_own_test_expectations() {
        let q = FlaggerQueries::new("default", "podinfo");
        let minute = Duration::from_secs(60);
        assert_eq!(
            q.request_success_rate(minute),
            concat!(
                r#" sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo", response_code!~"5.*" }[1m] ) )"#,
                r#" / sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) * 100"#
            )
        );
        assert_eq!(
            q.request_duration(minute),
            r#" histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) by (le) )"#
        );
        assert_eq!(
            FlaggerQueries::new("shop", "payment-svc-v2").requests(Duration::from_secs(10)),
            r#" sum( increase( istio_requests_total{ reporter="destination", destination_workload_namespace="shop", destination_workload=~"payment-svc-v2" }[10s] ) )"#
        );
    }

    #[test]
    fn whitespace_runs_become_one_space() {
        assert_eq!(trim("\n\tsum(\n\t\tx\n\t) \n\t/ y"), " sum( x ) / y");
        assert_eq!(trim("a  b\r\nc "), "a b c ");
    }

    #[test]
    fn intervals_in_the_largest_unit() {
        for (d, want) in [
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(86_400), "1d"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::ZERO, "1ms"),
        ] {
            assert_eq!(flagger_interval(d), want, "{d:?}");
        }
    }
}
