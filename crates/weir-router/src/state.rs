//! The admin state: what admin writes (weights, a rollback latch, its release, a promotion)
//! changed on top of the config file, per VirtualService. A [`LiveTable`](crate::LiveTable)
//! keeps it beside the table, re-applies it to every config it reads (a reload, a start with a
//! saved state), and hands it to its persister before a write is acknowledged, so that an
//! embedder can keep it across restarts (the sidecar's `--state FILE`).
//!
//! Which wins when the file and the state disagree:
//! - a **latch** always wins: a rolled-back VirtualService keeps its canaries at 0% (and its
//!   dark-launch rules on the stable subset) until it is released, whatever the file says;
//! - **weights and a promotion** win while the file still says what it said when the admin
//!   wrote them (`file` below). A file edit of that VirtualService is newer intent: the file
//!   wins, the admin weights are dropped, and the reload says so.
//!
//! A state that names a VirtualService the config no longer has is kept (its latch applies
//! again if it comes back) and reported.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::finding::{Code, Finding, Location};
use crate::table::{RouteTable, Rule, VirtualService, find_cluster};

/// The format version written in [`AdminState::version`].
pub const STATE_VERSION: u32 = 1;

/// Where findings about the admin state point.
pub(crate) const ORIGIN: &str = "admin state";

/// Every VirtualService's admin changes, by `namespace/name`. Serializable as the state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminState {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// By `namespace/name`; a VirtualService without admin changes has no entry.
    #[serde(default)]
    pub virtual_services: BTreeMap<String, VirtualServiceState>,
}

/// One VirtualService's admin changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServiceState {
    /// A rollback latch holds its canaries at 0%.
    #[serde(default)]
    pub latched: bool,
    /// The stable subset the admin writes left (a promotion changes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_subset: Option<String>,
    /// Its rules as the admin writes left them: what is served while [`file`](Self::file)
    /// is what the config says.
    #[serde(default)]
    pub rules: Vec<RuleState>,
    /// Its rules as the config file said when the admin wrote.
    #[serde(default)]
    pub file: Vec<RuleState>,
}

/// A rule's destinations and weights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleState {
    /// The rule's name, or its index as a decimal string.
    pub rule: String,
    /// Its destinations, in order.
    pub destinations: Vec<DestinationState>,
}

/// One destination of a [`RuleState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationState {
    /// `destination.host`.
    pub host: String,
    /// `destination.subset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The weight.
    pub weight: u32,
}

impl Default for AdminState {
    fn default() -> Self {
        AdminState {
            version: STATE_VERSION,
            virtual_services: BTreeMap::new(),
        }
    }
}

// === impl AdminState ===

impl AdminState {
    /// `namespace/name` of every latched VirtualService.
    pub fn latched(&self) -> BTreeSet<String> {
        self.virtual_services
            .iter()
            .filter(|(_, s)| s.latched)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether the state holds nothing.
    pub fn is_empty(&self) -> bool {
        self.virtual_services.is_empty()
    }

    /// Records what an admin write left in force for `vs`. The file's rules are those of the
    /// existing entry, or (with none) the rules in force before the write, which were the
    /// file's.
    pub(crate) fn record(
        &mut self,
        before: &VirtualService,
        after: &VirtualService,
        latched: bool,
    ) {
        let key = after.key();
        let file = match self.virtual_services.get(&key) {
            Some(entry) => entry.file.clone(),
            None => rules_of(before),
        };
        let rules = rules_of(after);
        if !latched && rules == file && after.stable_subset == before.stable_subset {
            self.virtual_services.remove(&key);
            return;
        }
        self.virtual_services.insert(
            key,
            VirtualServiceState {
                latched,
                stable_subset: after.stable_subset.clone(),
                rules,
                file,
            },
        );
    }

    /// Applies the state to a table compiled from the config (stable subsets decided, before
    /// the weight guards and the latches). Entries whose file rules no longer match are
    /// reduced to their latch; findings say what was dropped and what names nothing.
    pub(crate) fn apply(&mut self, table: &mut RouteTable, findings: &mut Vec<Finding>) {
        let clusters = table.clusters.clone();
        let mut drop = Vec::new();
        for (key, entry) in self.virtual_services.iter_mut() {
            let Some(vs) = table.virtual_services.iter_mut().find(|v| &v.key() == key) else {
                findings.push(Finding::warning(
                    Code::AdminState,
                    Location::origin(ORIGIN, key.clone()),
                    format!(
                        "the admin state names VirtualService {key}, which the config no longer has; its state is kept{}",
                        if entry.latched {
                            " (its rollback latch applies again if it comes back)"
                        } else {
                            ""
                        }
                    ),
                ));
                continue;
            };
            let file_now = rules_of(vs);
            if entry.file != file_now {
                if entry.rules != entry.file {
                    findings.push(Finding::warning(
                        Code::AdminState,
                        Location::origin(ORIGIN, key.clone()),
                        format!(
                            "the config changed VirtualService {key} since the admin wrote its weights ({} then, {} now): the config wins and the admin weights ({}) are dropped{}",
                            describe(&entry.file),
                            describe(&file_now),
                            describe(&entry.rules),
                            if entry.latched {
                                "; its rollback latch stays"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                entry.file = file_now.clone();
                entry.rules = file_now;
                entry.stable_subset = vs.stable_subset.clone();
                if !entry.latched {
                    drop.push(key.clone());
                }
                continue;
            }
            let mut next = vs.clone();
            match rebuild(&mut next, &entry.rules, &clusters) {
                Ok(()) => {
                    if entry.stable_subset.is_some() {
                        next.stable_subset = entry.stable_subset.clone();
                    }
                    *vs = next;
                }
                Err(why) => {
                    findings.push(Finding::warning(
                        Code::AdminState,
                        Location::origin(ORIGIN, key.clone()),
                        format!(
                            "the admin weights of VirtualService {key} cannot be applied ({why}): the config's weights are served{}",
                            if entry.latched {
                                ", with its rollback latch"
                            } else {
                                ""
                            }
                        ),
                    ));
                    entry.rules = file_now;
                    if !entry.latched {
                        drop.push(key.clone());
                    }
                }
            }
        }
        for key in drop {
            self.virtual_services.remove(&key);
        }
    }
}

/// A VirtualService's rules as [`RuleState`]s.
pub fn rules_of(vs: &VirtualService) -> Vec<RuleState> {
    vs.rules
        .iter()
        .map(|rule| RuleState {
            rule: rule_key(rule),
            destinations: rule
                .destinations
                .iter()
                .map(|d| DestinationState {
                    host: d.host.clone(),
                    subset: d.subset.clone(),
                    weight: d.weight,
                })
                .collect(),
        })
        .collect()
}

fn rule_key(rule: &Rule) -> String {
    rule.name.clone().unwrap_or_else(|| rule.index.to_string())
}

/// `canary-split: v1=90 v2=10; dark-launch: v2=100`, the rules that split or route by
/// subset.
pub fn describe(rules: &[RuleState]) -> String {
    let text: Vec<String> = rules
        .iter()
        .map(|r| {
            let ds: Vec<String> = r
                .destinations
                .iter()
                .map(|d| format!("{}={}", d.subset.as_deref().unwrap_or(&d.host), d.weight))
                .collect();
            format!("{}: {}", r.rule, ds.join(" "))
        })
        .collect();
    text.join("; ")
}

/// Gives `vs` the destinations of `rules`: existing destinations keep their settings with the
/// recorded weight; one the file does not have (a dark-launch rule pointed at the stable
/// subset, a promoted subset) is the rule's first destination retargeted at its cluster.
fn rebuild(
    vs: &mut VirtualService,
    rules: &[RuleState],
    clusters: &[crate::table::Cluster],
) -> Result<(), String> {
    if rules.len() != vs.rules.len() {
        return Err(format!(
            "{} rules recorded, the config has {}",
            rules.len(),
            vs.rules.len()
        ));
    }
    for (rule, recorded) in vs.rules.iter_mut().zip(rules) {
        if rule_key(rule) != recorded.rule {
            return Err(format!(
                "rule {} is {} in the config",
                recorded.rule,
                rule_key(rule)
            ));
        }
        let Some(template) = rule.destinations.first().cloned() else {
            continue;
        };
        let mut next = Vec::with_capacity(recorded.destinations.len());
        for want in &recorded.destinations {
            let found = rule
                .destinations
                .iter()
                .find(|d| d.host == want.host && d.subset == want.subset);
            let mut d = match found {
                Some(d) => d.clone(),
                None => {
                    let cluster = find_cluster(clusters, &want.host, want.subset.as_deref())
                        .ok_or_else(|| {
                            format!(
                                "host {} subset {} is not in the config",
                                want.host,
                                want.subset.as_deref().unwrap_or("(none)")
                            )
                        })?;
                    let mut d = template.clone();
                    d.host = want.host.clone();
                    d.subset = want.subset.clone();
                    d.cluster = cluster;
                    d
                }
            };
            if d.weight != want.weight {
                d.location =
                    Location::origin(ORIGIN, format!("{} {} weight", vs.name, rule.label()));
            }
            d.weight = want.weight;
            next.push(d);
        }
        rule.destinations = next;
        rule.total_weight = rule.destinations.iter().map(|d| u64::from(d.weight)).sum();
    }
    Ok(())
}
