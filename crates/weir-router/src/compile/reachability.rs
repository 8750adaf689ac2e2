//! Rules that can never match (IST0130).

use super::*;
use crate::finding::{Code, Finding};
use crate::matcher::RequestMatch;
use crate::table::*;
use crate::yaml::Document;

impl Compiler<'_> {
    pub(super) fn unreachable_rules(&mut self, rules: &[Rule], doc: &Document) {
        let mut catch_all: Option<usize> = None;
        let mut seen: Vec<(usize, &RequestMatch)> = Vec::new();
        for rule in rules {
            let loc = || doc.location(&format!("spec.http[{}]", rule.index));
            if let Some(c) = catch_all {
                self.findings.push(Finding::error(
                    Code::UnreachableRule,
                    loc(),
                    format!(
                        "{} can never match: rule {c} before it matches every request (Istio's IST0130 warns; weir refuses, since the rule's traffic would silently go to rule {c}). Move {} above rule {c}, or give rule {c} a match",
                        rule.label(),
                        rule.label()
                    ),
                ));
                continue;
            }
            let dupes: Vec<usize> = rule
                .matches
                .iter()
                .filter_map(|m| seen.iter().find(|(_, s)| *s == m).map(|(i, _)| *i))
                .collect();
            if !rule.matches.is_empty() && dupes.len() == rule.matches.len() {
                self.findings.push(Finding::error(
                    Code::UnreachableRule,
                    loc(),
                    format!(
                        "{} can never match: every match of it repeats a match of rule {} before it (match names aside, as Istio compares them; IST0130 warns, weir refuses). Remove it or change its match",
                        rule.label(),
                        dupes[0]
                    ),
                ));
            } else if let Some(d) = dupes.first() {
                self.findings.push(Finding::warning(
                    Code::UnreachableRule,
                    loc(),
                    format!(
                        "a match of {} repeats a match of rule {d} and is never used",
                        rule.label()
                    ),
                ));
            }
            for m in &rule.matches {
                seen.push((rule.index, m));
            }
            if rule.is_catch_all() && !rule.broken {
                catch_all = Some(rule.index);
            }
        }
    }
}
