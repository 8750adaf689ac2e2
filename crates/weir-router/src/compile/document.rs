//! Reading documents: Lists, kinds, apiVersions and fields weir does not act on.

use super::*;
use crate::finding::{Code, Finding};
use crate::yaml::Document;

pub(super) fn read_document(doc: Document, out: &mut Resources, findings: &mut Vec<Finding>) {
    let kind = doc.str_field("kind").unwrap_or("").to_string();
    if kind == "List" || kind.ends_with("List") {
        for item in doc.list_items() {
            read_document(item, out, findings);
        }
        return;
    }
    let api = doc.str_field("apiVersion").unwrap_or("");
    let known = matches!(
        kind.as_str(),
        "VirtualService" | "DestinationRule" | "ServiceEntry"
    );
    if !known {
        let what = if kind.is_empty() {
            "a document without `kind`".to_string()
        } else {
            format!("kind {kind:?} ({api})")
        };
        findings.push(Finding::warning(
            Code::UnknownKind,
            doc.location("kind"),
            format!(
                "{what} is ignored: weir reads VirtualService, DestinationRule and ServiceEntry"
            ),
        ));
        return;
    }
    if !API_VERSIONS.contains(&api) {
        findings.push(Finding::warning(
            Code::InvalidValue,
            doc.location("apiVersion"),
            format!(
                "apiVersion {api:?} is not one weir knows; read as networking.istio.io/v1 (use one of {})",
                API_VERSIONS.join(", ")
            ),
        ));
    }
    let mut ignored = Vec::new();
    macro_rules! read {
        ($list:ident) => {
            match doc.deserialize(&mut |p| ignored.push(p)) {
                Ok(raw) => out.$list.push(Located {
                    raw,
                    doc: doc.clone(),
                }),
                Err(f) => findings.push(f),
            }
        };
    }
    match kind.as_str() {
        "VirtualService" => read!(virtual_services),
        "DestinationRule" => read!(destination_rules),
        _ => read!(service_entries),
    }
    for path in ignored {
        // What the API server fills in (`kubectl get -o yaml`) says nothing about routing.
        if path == "status" || path.starts_with("status.") || path.starts_with("metadata.") {
            continue;
        }
        let field = path.rsplit('.').next().unwrap_or(&path);
        let field = field.split('[').next().unwrap_or(field);
        let message = match did_you_mean(field) {
            Some(known) => format!(
                "`{path}` is not a field weir knows: did you mean `{known}`? As written it is ignored, and traffic is routed as if it were absent"
            ),
            None => format!(
                "`{path}` is read but weir does not act on it; traffic is routed as if it were absent"
            ),
        };
        findings.push(Finding::warning(
            Code::NotActedOn,
            doc.location(&path),
            message,
        ));
    }
}

/// The fields of the Istio resources weir reads, for "did you mean" hints.
const KNOWN_FIELDS: &[&str] = &[
    "hosts",
    "gateways",
    "http",
    "name",
    "match",
    "route",
    "rewrite",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrorPercentage",
    "mirrorPercent",
    "mirrors",
    "headers",
    "uri",
    "scheme",
    "method",
    "authority",
    "queryParams",
    "withoutHeaders",
    "ignoreUriCase",
    "port",
    "sourceLabels",
    "sourceNamespace",
    "exact",
    "prefix",
    "regex",
    "destination",
    "weight",
    "host",
    "subset",
    "number",
    "value",
    "percentage",
    "delay",
    "abort",
    "fixedDelay",
    "percent",
    "httpStatus",
    "attempts",
    "perTryTimeout",
    "retryOn",
    "request",
    "response",
    "set",
    "add",
    "remove",
    "trafficPolicy",
    "subsets",
    "labels",
    "loadBalancer",
    "simple",
    "consistentHash",
    "httpHeaderName",
    "httpCookie",
    "useSourceIp",
    "httpQueryParameterName",
    "ttl",
    "path",
    "ports",
    "location",
    "resolution",
    "endpoints",
    "address",
    "protocol",
    "targetPort",
    "spec",
    "metadata",
    "kind",
    "apiVersion",
];

/// The known field a misspelled one most likely meant: within two edits, and not the field
/// itself (a known field weir does not act on is no typo).
fn did_you_mean(field: &str) -> Option<&'static str> {
    if KNOWN_FIELDS.contains(&field) {
        return None;
    }
    KNOWN_FIELDS
        .iter()
        .map(|k| {
            (
                edit_distance(&field.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, k)| *d <= 2 && *d < k.len() / 2 + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, counting a swap of two neighbours as one edit (`weigth`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
