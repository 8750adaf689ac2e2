//! Who this sidecar's pod is: the workload (Deployment) name, namespace, app, version and
//! Istio's canonical service and revision, as the Istio proxy learns them from the pod (the
//! injector's `ISTIO_META_WORKLOAD_NAME`, `POD_NAMESPACE`, the pod's labels). The outbound
//! side reports them as the `source_*` labels, the inbound side as the `destination_*` ones,
//! which Flagger's built-in queries select.
//!
//! ```
//! use weir_proxy::PodIdentity;
//! let labels = "app=\"payment-svc\"\nversion=\"v2\"\npod-template-hash=\"7d4b9\"\n";
//! let id = PodIdentity::from_labels("payment-svc-canary", "production", labels);
//! assert_eq!(id.app, "payment-svc");
//! assert_eq!(id.version, "v2");
//! assert_eq!(id.canonical_service, "payment-svc");
//! assert_eq!(id.canonical_revision, "v2");
//! assert_eq!(id.service, "payment-svc.production.svc.cluster.local");
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_router::ClusterLabels;

/// The value Istio writes for a label it cannot know.
pub const UNKNOWN: &str = "unknown";

/// The pod a sidecar runs in. Every field is a label value; `unknown` when not known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodIdentity {
    /// The workload: the Deployment's name (`--workload`).
    pub workload: String,
    /// The pod's namespace (`--namespace`, `POD_NAMESPACE`).
    pub namespace: String,
    /// The `app.kubernetes.io/name` or `app` label.
    pub app: String,
    /// The `app.kubernetes.io/version` or `version` label.
    pub version: String,
    /// `service.istio.io/canonical-name`, else the app, else the workload.
    pub canonical_service: String,
    /// `service.istio.io/canonical-revision`, else the version, else `latest`.
    pub canonical_revision: String,
    /// The service inbound requests are reported for (`destination_service`): the FQDN of
    /// the canonical service in the namespace unless given.
    pub service: String,
}

impl PodIdentity {
    /// A pod of which only the workload name is known (the other labels `unknown`).
    pub fn workload(workload: &str) -> Self {
        PodIdentity::from_labels(workload, UNKNOWN, "")
    }

    /// The identity of the pod this process runs in: `workload` and `namespace` when given
    /// (non-empty), else the downward-API environment (`WEIR_WORKLOAD` or
    /// `ISTIO_META_WORKLOAD_NAME`, `POD_NAMESPACE`), with the labels of the downward-API
    /// `metadata.labels` file at `labels` if given. An unreadable labels file is an error
    /// naming it.
    pub fn from_pod(
        workload: &str,
        namespace: &str,
        labels: Option<&std::path::Path>,
    ) -> std::io::Result<Self> {
        let given_or_env = |given: &str, names: &[&str]| {
            if !given.is_empty() {
                return given.to_string();
            }
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
                .unwrap_or_default()
        };
        let workload = given_or_env(workload, &["WEIR_WORKLOAD", "ISTIO_META_WORKLOAD_NAME"]);
        let namespace = given_or_env(namespace, &["POD_NAMESPACE"]);
        let labels = match labels {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot read the pod labels file {} (a downward-API volume of metadata.labels): {e}",
                        path.display()
                    ),
                )
            })?,
            None => String::new(),
        };
        Ok(PodIdentity::from_labels(&workload, &namespace, &labels))
    }

    /// The identity of a pod from its workload name, namespace and labels in the format of a
    /// downward-API `metadata.labels` file (`key="value"` lines). An empty workload name is
    /// taken from the `service.istio.io/workload-name` label, else the app.
    pub fn from_labels(workload: &str, namespace: &str, labels: &str) -> Self {
        let labels = parse_labels(labels);
        let get = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()).cloned())
        };
        let app = get(&["app.kubernetes.io/name", "app"]);
        let version = get(&["app.kubernetes.io/version", "version"]);
        let workload = Some(workload.to_string())
            .filter(|w| !w.is_empty() && w != UNKNOWN)
            .or_else(|| get(&["service.istio.io/workload-name"]))
            .or_else(|| app.clone())
            .unwrap_or_else(|| UNKNOWN.to_string());
        let canonical_service = get(&["service.istio.io/canonical-name"])
            .or_else(|| app.clone())
            .unwrap_or_else(|| workload.clone());
        let canonical_revision = get(&["service.istio.io/canonical-revision"])
            .or_else(|| version.clone())
            .unwrap_or_else(|| "latest".to_string());
        let namespace = if namespace.is_empty() {
            UNKNOWN.to_string()
        } else {
            namespace.to_string()
        };
        let service = format!("{canonical_service}.{namespace}.svc.cluster.local");
        PodIdentity {
            workload,
            namespace,
            app: app.unwrap_or_else(|| UNKNOWN.to_string()),
            version: version.unwrap_or_else(|| UNKNOWN.to_string()),
            canonical_service,
            canonical_revision,
            service,
        }
    }

    /// The labels of this pod as the destination of inbound requests.
    pub(crate) fn destination_labels(&self) -> ClusterLabels {
        ClusterLabels {
            destination_service: Arc::from(self.service.as_str()),
            destination_service_name: Arc::from(
                self.service.split('.').next().unwrap_or(&self.service),
            ),
            destination_service_namespace: Arc::from(self.namespace.as_str()),
            destination_workload: Arc::from(self.workload.as_str()),
            destination_version: Arc::from(self.version.as_str()),
            destination_app: Arc::from(self.app.as_str()),
            destination_canonical_service: Arc::from(self.canonical_service.as_str()),
            destination_canonical_revision: Arc::from(self.canonical_revision.as_str()),
        }
    }

    /// A peer nothing is known of: the source of inbound requests (weir exchanges no peer
    /// metadata).
    pub(crate) fn unknown() -> Self {
        PodIdentity::from_labels(UNKNOWN, UNKNOWN, "")
    }
}

/// Parses a downward-API labels file: one `key="value"` a line, the value quoted as Go's
/// `%q` writes it. Lines that are not `key=value` are skipped.
pub fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once('=')?;
            let value = value.trim();
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(quoted) => unquote(quoted),
                None => value.to_string(),
            };
            Some((key.trim().to_string(), value))
        })
        .collect()
}

/// Undoes Go's `%q` escapes of the common characters (`\"`, `\\`, `\n`, `\t`).
fn unquote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_file_values_are_unquoted_and_istio_labels_win() {
        let text = "app=\"pay\"\nservice.istio.io/canonical-name=\"payments\"\n\
                    service.istio.io/canonical-revision=\"r7\"\nservice.istio.io/workload-name=\"pay-v2\"\n\
                    note=\"a \\\"quoted\\\" word\"\nnot a label\n";
        assert_eq!(parse_labels(text)["note"], "a \"quoted\" word");
        let id = PodIdentity::from_labels("", "shop", text);
        assert_eq!(id.workload, "pay-v2");
        assert_eq!(id.canonical_service, "payments");
        assert_eq!(id.canonical_revision, "r7");
        assert_eq!(id.version, UNKNOWN);
        assert_eq!(id.service, "payments.shop.svc.cluster.local");
        // --workload wins over the label.
        assert_eq!(
            PodIdentity::from_labels("pay", "shop", text).workload,
            "pay"
        );
    }

    #[test]
    fn nothing_known_is_unknown_with_the_latest_revision() {
        let id = PodIdentity::unknown();
        assert_eq!(
            (
                id.workload.as_str(),
                id.app.as_str(),
                id.canonical_revision.as_str()
            ),
            (UNKNOWN, UNKNOWN, "latest")
        );
    }
}
