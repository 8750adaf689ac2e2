//! The Canary document as serde reads it: a mirror of the YAML, every field optional so that
//! validation can name each missing one. Nothing outside `spec` sees these types.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawCanary {
    #[serde(default)]
    pub(super) api_version: String,
    #[serde(default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) metadata: RawMetadata,
    #[serde(default)]
    pub(super) spec: RawSpec,
}

#[derive(Default, Deserialize)]
pub(super) struct RawMetadata {
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) namespace: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawSpec {
    #[serde(default)]
    pub(super) target_ref: Option<RawName>,
    #[serde(default)]
    pub(super) service: Option<RawName>,
    #[serde(default)]
    pub(super) analysis: Option<RawAnalysis>,
    #[serde(default)]
    pub(super) weir: RawWeir,
}

#[derive(Default, Deserialize)]
pub(super) struct RawName {
    #[serde(default)]
    pub(super) name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawAnalysis {
    pub(super) interval: Option<String>,
    pub(super) threshold: Option<u32>,
    pub(super) max_weight: Option<u32>,
    pub(super) step_weight: Option<u32>,
    pub(super) step_weights: Option<Vec<u32>>,
    pub(super) iterations: Option<u32>,
    #[serde(rename = "match")]
    pub(super) matches: Option<Vec<RawMatch>>,
    #[serde(default)]
    pub(super) metrics: Vec<RawMetric>,
    #[serde(default)]
    pub(super) webhooks: Vec<RawWebhook>,
    // Flagger fields weir refuses with a reason rather than ignore.
    pub(super) mirror: Option<bool>,
    pub(super) mirror_weight: Option<u32>,
    pub(super) step_weight_promotion: Option<u32>,
    pub(super) session_affinity: Option<IgnoredAny>,
    // Flagger fields about Kubernetes workloads and alerting: nothing for weir to do.
    #[allow(dead_code)]
    pub(super) alerts: Option<IgnoredAny>,
    #[allow(dead_code)]
    pub(super) primary_ready_threshold: Option<IgnoredAny>,
    #[allow(dead_code)]
    pub(super) canary_ready_threshold: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    pub(super) headers: BTreeMap<String, RawStringMatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStringMatch {
    pub(super) exact: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) regex: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawMetric {
    #[serde(default)]
    pub(super) name: String,
    pub(super) interval: Option<String>,
    pub(super) threshold_range: Option<RawRange>,
    /// Flagger's older single-number form.
    pub(super) threshold: Option<f64>,
    pub(super) query: Option<String>,
    pub(super) template_ref: Option<IgnoredAny>,
    pub(super) template_variables: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRange {
    pub(super) min: Option<f64>,
    pub(super) max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawWebhook {
    #[serde(default)]
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) url: String,
    pub(super) timeout: Option<String>,
    #[serde(default)]
    pub(super) metadata: BTreeMap<String, String>,
    #[allow(dead_code)]
    pub(super) mute_alert: Option<IgnoredAny>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawWeir {
    pub(super) virtual_service: Option<String>,
    pub(super) rule: Option<String>,
    pub(super) stable_subset: Option<String>,
    pub(super) canary_subset: Option<String>,
    pub(super) stable_version: Option<String>,
    pub(super) canary_version: Option<String>,
    pub(super) destination_service: Option<String>,
    pub(super) min_requests: Option<u64>,
    pub(super) fast_guard: Option<RawFastGuard>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFastGuard {
    pub(super) period: Option<String>,
    pub(super) window: Option<String>,
}
