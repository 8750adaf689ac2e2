//! `match` items -> [`RequestMatch`].

use std::str::FromStr;

use http::HeaderName;

use super::*;
use crate::finding::{Code, Finding};
use crate::matcher::{HeaderCondition, QueryCondition, RequestMatch, StringMatcher};
use crate::raw::*;
use crate::yaml::Document;

impl Compiler<'_> {
    pub(super) fn request_match(
        &mut self,
        m: &RawHttpMatch,
        doc: &Document,
        path: &str,
    ) -> RequestMatch {
        let mut sm = |raw: &Option<RawStringMatch>, field: &str| {
            raw.as_ref()
                .and_then(|r| self.string_match(r, doc, &format!("{path}.{field}")))
        };
        let uri = sm(&m.uri, "uri");
        let scheme = sm(&m.scheme, "scheme");
        let method = sm(&m.method, "method");
        let authority = sm(&m.authority, "authority");
        let mut headers = Vec::new();
        for (field, map, inverted) in [
            ("headers", &m.headers, false),
            ("withoutHeaders", &m.without_headers, true),
        ] {
            for (name, raw) in map {
                let loc = doc.location(&format!("{path}.{field}.{name}"));
                let Ok(header) = HeaderName::from_str(&name.to_ascii_lowercase()) else {
                    self.findings.push(Finding::error(
                        Code::InvalidValue,
                        loc,
                        format!("{name:?} is not a valid header name"),
                    ));
                    self.dropped_condition = true;
                    continue;
                };
                if self.empty_prefix(raw, doc, &format!("{path}.{field}.{name}"), field) {
                    continue;
                }
                if let Some(matcher) =
                    self.string_match(raw, doc, &format!("{path}.{field}.{name}"))
                {
                    headers.push(HeaderCondition {
                        name: header,
                        matcher,
                        inverted,
                    });
                }
            }
        }
        let mut query_params = Vec::new();
        for (name, raw) in &m.query_params {
            if self.empty_prefix(
                raw,
                doc,
                &format!("{path}.queryParams.{name}"),
                "queryParams",
            ) {
                continue;
            }
            if let Some(matcher) =
                self.string_match(raw, doc, &format!("{path}.queryParams.{name}"))
            {
                query_params.push(QueryCondition {
                    name: name.clone(),
                    matcher,
                });
            }
        }
        let port = m.port.and_then(|p| {
            self.port(
                Some(&RawPortSelector { number: p }),
                doc,
                &format!("{path}.port"),
            )
        });
        if m.port.is_some() && port.is_none() {
            self.dropped_condition = true;
        }
        self.unevaluable(m, doc, path);
        RequestMatch {
            name: m.name.clone(),
            uri,
            ignore_uri_case: m.ignore_uri_case,
            scheme,
            method,
            authority,
            port,
            headers,
            query_params,
        }
    }

    /// `prefix: ""` in headers, withoutHeaders or queryParams: Istio refuses it (it would
    /// match any value, including none, depending on the proxy).
    fn empty_prefix(
        &mut self,
        raw: &RawStringMatch,
        doc: &Document,
        path: &str,
        field: &str,
    ) -> bool {
        if raw.prefix.as_deref() != Some("") {
            return false;
        }
        self.findings.push(Finding::error(
            Code::InvalidValue,
            doc.location(&format!("{path}.prefix")),
            format!("an empty prefix is not allowed in {field}, as Istio refuses it: match presence with `{{}}`, or write the prefix"),
        ));
        self.dropped_condition = true;
        true
    }

    /// Conditions weir cannot evaluate in a sidecar that does not know who calls it
    /// (`sourceLabels`, `sourceNamespace`) or that name gateways: the rule is refused, never
    /// widened to "matches everything".
    fn unevaluable(&mut self, m: &RawHttpMatch, doc: &Document, path: &str) {
        let mut refuse = |field: &str, why: &str| {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location(&format!("{path}.{field}")),
                format!("`{field}` cannot be evaluated by weir: {why}. Without it the rule would match every caller, so it is refused: remove the condition or route the callers by a header"),
            ));
        };
        if !m.source_labels.is_empty() {
            refuse(
                "sourceLabels",
                "weir does not know the calling workload's labels",
            );
        }
        if m.source_namespace.is_some() {
            refuse(
                "sourceNamespace",
                "weir does not know the calling workload's namespace",
            );
        }
        if !m.gateways.is_empty() && !m.gateways.iter().any(|g| g == "mesh") {
            refuse(
                "gateways",
                "the item applies to the named gateways only, and weir is a sidecar (`mesh`)",
            );
        }
        if !m.source_labels.is_empty()
            || m.source_namespace.is_some()
            || (!m.gateways.is_empty() && !m.gateways.iter().any(|g| g == "mesh"))
        {
            self.dropped_condition = true;
        }
    }

    pub(super) fn string_match(
        &mut self,
        raw: &RawStringMatch,
        doc: &Document,
        path: &str,
    ) -> Option<StringMatcher> {
        let set = [
            raw.exact.is_some(),
            raw.prefix.is_some(),
            raw.regex.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set > 1 {
            self.findings.push(Finding::error(
                Code::InvalidValue,
                doc.location(path),
                "a string match takes one of exact, prefix or regex, not several: keep one",
            ));
            self.dropped_condition = true;
            return None;
        }
        if let Some(e) = &raw.exact {
            return Some(StringMatcher::Exact(e.clone()));
        }
        if let Some(p) = &raw.prefix {
            // Istio turns an empty prefix into a presence match.
            return Some(if p.is_empty() {
                StringMatcher::Present
            } else {
                StringMatcher::Prefix(p.clone())
            });
        }
        if let Some(r) = &raw.regex {
            return match StringMatcher::regex(r) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.findings.push(Finding::error(
                        Code::InvalidRegex,
                        doc.location(&format!("{path}.regex")),
                        format!(
                            "regex {r:?} does not compile (RE2 syntax): {}",
                            first_line(&e.to_string())
                        ),
                    ));
                    self.dropped_condition = true;
                    None
                }
            };
        }
        Some(StringMatcher::Present)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s).trim()
}
