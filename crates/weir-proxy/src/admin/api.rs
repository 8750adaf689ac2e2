//! The admin API's wire types: every request and response body, as JSON. The server writes and
//! reads these, and so does every client (`weir set-weights`, `weir rollback`, `weir demo`), so
//! the two cannot drift.
//!
//! | call | request body | 2xx answer |
//! |---|---|---|
//! | `GET /config` | | [`ConfigResponse`] (`?format=yaml`: the YAML) |
//! | `GET /routes` | | [`RoutesResponse`] |
//! | `PUT /weights` | [`WeightChange`] | [`ChangeResponse`] |
//! | `POST /rollback` | [`RollbackRequest`] or none | [`RollbackResponse`] |
//! | `DELETE /rollback` | [`RollbackRequest`] or none | [`RollbackResponse`] (generation only) |
//! | `POST /promote` | [`PromoteRequest`] | [`PromoteResponse`] |
//! | `POST /reload` | | [`ChangeResponse`] |
//! | `DELETE /state` | [`RollbackRequest`] or none | [`ChangeResponse`] |
//!
//! Every other answer is an [`ErrorResponse`]: 400 malformed, 401 no or wrong token, 404
//! unknown endpoint or VirtualService, 405 wrong method, 409 refused by the validator (with its
//! findings; nothing changed), 413 body over 1 MiB, 500 the feed could not be read.
//!
//! In `PUT /weights`, `rule` may also be a number (the rule's index); it is read as its decimal
//! string.

use serde::{Deserialize, Serialize};

pub use weir_router::WeightChange;

/// `POST /rollback`, `DELETE /rollback`, `DELETE /state`: one VirtualService, or every one when
/// `None` (or when the body is empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// `name`, `namespace/name`, or one of its hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<String>,
}

/// `POST /promote`: make `subset` the stable subset, with all of the split's weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// `name`, `namespace/name`, or one of its hosts.
    pub virtual_service: String,
    /// The subset promoted.
    pub subset: String,
}

/// A change published: `PUT /weights`, `POST /reload`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeResponse {
    /// The generation now in force.
    pub generation: u64,
    /// Warnings about the change (errors refuse it: see [`ErrorResponse`]).
    #[serde(default)]
    pub findings: Vec<FindingView>,
}

/// `POST /rollback` (and `DELETE /rollback`, which answers the generation only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackResponse {
    /// The generation now in force.
    pub generation: u64,
    /// How long the rollback took inside the sidecar, in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_us: Option<u64>,
    /// The VirtualServices rolled back, as `namespace/name`; on a release, the ones whose
    /// latch was released (empty: nothing was latched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_services: Option<Vec<String>>,
}

/// `POST /promote`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteResponse {
    /// The generation now in force.
    pub generation: u64,
}

/// Any answer that is not a success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong and what to do about it.
    pub error: String,
    /// The validator's findings, on a 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<FindingView>>,
}

/// A validator finding on the wire ([`weir_router::Finding`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingView {
    /// The code, e.g. `WEIR004` or `IST0101`.
    pub code: String,
    /// `error` or `warning`.
    pub severity: String,
    /// Where it is.
    #[serde(default)]
    pub location: LocationView,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// Where a finding points ([`weir_router::Location`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationView {
    /// The file name, or the origin of a change (`admin API`).
    pub file: String,
    /// 1-based line; 0 when unknown.
    #[serde(default)]
    pub line: u32,
    /// 1-based column; 0 when unknown.
    #[serde(default)]
    pub column: u32,
    /// The field path inside the document.
    #[serde(default)]
    pub path: String,
}

/// `GET /config`: what is in force (the config with the admin state applied), apart from the
/// config as read from its files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigResponse {
    /// The generation in force.
    pub generation: u64,
    /// What is served.
    pub in_force: InForceView,
    /// The config as read: what the files say, which admin writes may have overridden.
    pub file: FileView,
}

/// What is served, by VirtualService.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InForceView {
    /// Whether any VirtualService is served otherwise than its file says.
    pub differs_from_file: bool,
    /// Every VirtualService, in file order.
    pub virtual_services: Vec<InForceVirtualService>,
}

/// One VirtualService as served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InForceVirtualService {
    /// `namespace/name`.
    pub name: String,
    /// `file` (as the file says), `admin state` (admin weights or a promotion over the
    /// file's) or `rollback latch` (canaries held at 0%).
    pub source: String,
    /// The stable subset.
    pub stable_subset: Option<String>,
    /// Its rules' destinations and weights, as served.
    pub rules: Vec<weir_router::state::RuleState>,
    /// Its rules as the file says, when they differ from `rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_rules: Option<Vec<weir_router::state::RuleState>>,
}

/// The config as read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    /// Every source, in order.
    pub sources: Vec<SourceView>,
}

/// One config source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView {
    /// Its name (the path, as given).
    pub file: String,
    /// Its text.
    pub yaml: String,
}

/// [`RoutesResponse::api_version`]: a client checks it to know that it speaks to weir.
pub const ROUTES_API_VERSION: &str = "weir.dev/v1";

/// [`RoutesResponse::kind`].
pub const ROUTES_KIND: &str = "Routes";

/// `GET /routes`: the table in force, the weights an SRE should look at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutesResponse {
    /// [`ROUTES_API_VERSION`]. Empty from a peer that is not weir (or an older one).
    #[serde(default)]
    pub api_version: String,
    /// [`ROUTES_KIND`].
    #[serde(default)]
    pub kind: String,
    /// Changes every time the sidecar starts.
    #[serde(default)]
    pub boot_id: String,
    /// The generation in force.
    pub generation: u64,
    /// The state file keeping admin writes across restarts.
    #[serde(default)]
    pub state: StateView,
    /// Every VirtualService.
    pub virtual_services: Vec<VirtualServiceView>,
}

/// The state file in `GET /routes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateView {
    /// Where it is; `None` when the sidecar keeps no state (admin writes last until a
    /// restart).
    pub path: Option<String>,
    /// What is wrong with it (corrupt at start, the last save failed); `None` when fine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Where a VirtualService's weights in force come from, when admin writes changed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminStateView {
    /// `admin state` while the file says what it said when the admin wrote (the state wins);
    /// a latch always wins.
    pub wins: String,
    /// Its rules as the config file says, e.g. `canary-split: v1=90 v2=10`.
    pub file: String,
    /// Its rules as the admin writes left them (in force, before a latch).
    pub admin: String,
    /// Why, in words.
    pub note: String,
}

/// A VirtualService in `GET /routes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VirtualServiceView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.hosts`.
    pub hosts: Vec<String>,
    /// The stable subset; every other subset is a canary.
    pub stable_subset: Option<String>,
    /// Whether a rollback latch holds its canaries at 0%.
    pub latched: bool,
    /// Set when admin writes changed it: the file's weights and the admin's, and which wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_state: Option<AdminStateView>,
    /// How weights are read (`weir.dev/weight-policy`).
    pub weight_policy: String,
    /// Largest canary step one change may make, in percentage points.
    pub max_step: u32,
    /// Its rules, in order.
    pub rules: Vec<RuleView>,
}

/// A rule in `GET /routes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    /// Position in `spec.http`, from 0.
    pub index: usize,
    /// The rule's name.
    pub name: Option<String>,
    /// Where it sends requests.
    pub destinations: Vec<DestinationView>,
}

/// A destination in `GET /routes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DestinationView {
    /// The host.
    pub host: String,
    /// The subset.
    pub subset: Option<String>,
    /// The weight as written.
    pub weight: u32,
    /// The share of the rule's traffic, in percent.
    pub share_percent: f64,
    /// The endpoints, as `host:port`.
    pub endpoints: Vec<String>,
}

impl From<&weir_router::Finding> for FindingView {
    fn from(f: &weir_router::Finding) -> Self {
        FindingView {
            code: f.code.to_string(),
            severity: if f.is_error() { "error" } else { "warning" }.to_string(),
            location: LocationView {
                file: f.location.file.to_string(),
                line: f.location.line,
                column: f.location.column,
                path: f.location.path.clone(),
            },
            message: f.message.clone(),
        }
    }
}

/// As `weir validate` prints a finding: `file:line:column: severity[CODE] message`, then the
/// field path on a line of its own.
impl std::fmt::Display for FindingView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = &self.location;
        f.write_str(&at.file)?;
        if at.line > 0 {
            write!(f, ":{}:{}", at.line, at.column)?;
        }
        write!(f, ": {}[{}] {}", self.severity, self.code, self.message)?;
        if !at.path.is_empty() {
            write!(f, "\n    at {}", at.path)?;
        }
        Ok(())
    }
}

/// The wire form of a validator's findings.
pub fn findings(findings: &weir_router::Findings) -> Vec<FindingView> {
    findings.0.iter().map(FindingView::from).collect()
}

#[cfg(test)]
mod tests {
    use weir_router::{Code, Finding, Findings, Location};

    use super::*;

    #[test]
    fn findings_on_the_wire_are_the_validators_own_serialization() {
        let findings_ = Findings(vec![
            Finding::error(
                Code::CanaryMajority,
                Location {
                    file: "vs.yaml".into(),
                    line: 3,
                    column: 7,
                    path: "spec.http[0]".into(),
                },
                "too much",
            ),
            Finding::warning(
                Code::NotActedOn,
                Location::origin("admin API", ""),
                "ignored",
            ),
        ]);
        let wire = findings(&findings_);
        assert_eq!(
            serde_json::to_value(&wire).unwrap(),
            serde_json::to_value(&findings_).unwrap()
        );
        assert_eq!(
            wire[0].to_string(),
            "vs.yaml:3:7: error[WEIR004] too much\n    at spec.http[0]"
        );
        assert_eq!(wire[1].to_string(), "admin API: warning[WEIR010] ignored");
    }

    #[test]
    fn a_weight_change_is_the_put_weights_body() {
        let change: WeightChange = serde_json::from_str(
            r#"{"virtual_service": "p", "rule": "canary-split", "weights": {"v1": 100}}"#,
        )
        .unwrap();
        assert_eq!(change.rule.as_deref(), Some("canary-split"));
        assert!(!change.force && !change.promotion && change.origin.is_empty());
        let text = serde_json::to_string(&change).unwrap();
        assert_eq!(serde_json::from_str::<WeightChange>(&text).unwrap(), change);
        assert!(!text.contains("origin"), "{text}");
    }
}
