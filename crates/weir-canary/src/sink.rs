//! Where weights go: one trait, [`WeightSink`], and three implementations.
//!
//! - [`LiveSink`]: the in-process `LiveTable` of a sidecar (`weir serve --canary`).
//! - [`AdminSink`]: the admin API of one or many sidecars, fanned out; every replica must
//!   confirm, and a partial failure is undone on every replica before the error is returned.
//! - [`DnsAdminSink`]: the same over every address of a headless Service, resolved again on
//!   every tick.
//! - [`FileSink`]: the VirtualService YAML file, weights rewritten in place, for clusters whose
//!   sidecars read a ConfigMap.

use std::fmt;
use std::time::Duration;

use weir_proxy::admin::client::AdminClientError;

use crate::spec::Target;

mod admin;
mod dns;
mod file;
mod live;

pub use admin::AdminSink;
pub use dns::{DnsAdminSink, ReplicaChange};
pub use file::FileSink;
pub use live::LiveSink;

/// The weights of the split rule: stable and canary weight points, summing to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// The stable subset's weight points.
    pub stable: u32,
    /// The canary subset's weight points.
    pub canary: u32,
}

impl Split {
    /// `canary` points to the canary (at most 100), the rest to the stable subset.
    pub fn canary(canary: u32) -> Split {
        let canary = canary.min(100);
        Split {
            stable: 100 - canary,
            canary,
        }
    }

    /// Whether the canary gets more than the stable subset: the sidecar's direction guard
    /// refuses that unless the change says it is a promotion in progress.
    pub fn is_promotion(&self) -> bool {
        self.canary > self.stable
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stable, self.canary)
    }
}

/// A change the sink confirmed is in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confirmation {
    /// Wall time from sending the change to the last confirmation.
    pub took: Duration,
    /// The config generation each replica reported (none for a file).
    pub generations: Vec<u64>,
    /// Replicas that do not serve the change yet, one line each (a [`FileSink`]'s sidecars
    /// that have not reloaded the file): the change is written, not in force. Empty when
    /// every replica the sink reaches serves it.
    pub pending: Vec<String>,
}

/// Applies a canary's weights. Every method returns only once the change is in force
/// everywhere the sink reaches (or, for a file, written).
pub trait WeightSink {
    /// Sets the split rule of `target` to `split`.
    fn set_weights(&mut self, target: &Target, split: Split) -> Result<Confirmation, SinkError>;

    /// Sends the canary to 0% in one change, latched where the sink has a latch (a rollback
    /// survives config reloads until [released](Self::release)).
    fn rollback(&mut self, target: &Target) -> Result<Confirmation, SinkError>;

    /// Makes the canary subset the stable subset, at 100%.
    fn promote(&mut self, target: &Target) -> Result<Confirmation, SinkError>;

    /// Releases a rollback latch so that weights can move again.
    fn release(&mut self, target: &Target) -> Result<Confirmation, SinkError>;

    /// Names the sink in reports, e.g. `admin API of 2 sidecars`.
    fn describe(&self) -> String;

    /// Brings the set of replicas the sink reaches up to date, for a sink that finds them by
    /// name ([`DnsAdminSink`]); the controller calls it on every tick and reports the changes.
    /// A fixed set of replicas has nothing to do.
    fn refresh(&mut self, target: &Target) -> Vec<ReplicaChange> {
        let _ = target;
        Vec::new()
    }

    /// Checks, before anything is changed, that every replica answers and serves `target`
    /// (its VirtualService, rule, stable and canary subsets) and that they agree on the
    /// split in force. A sink that cannot tell answers `Ok`.
    fn preflight(&mut self, target: &Target) -> Result<(), SinkError> {
        let _ = target;
        Ok(())
    }

    /// Reads what is in force and compares it with `expected`, the split the run set last;
    /// the controller calls it on every tick. A sink that cannot read what is in force
    /// answers no drift.
    fn verify(&mut self, target: &Target, expected: Split) -> Vec<Drift> {
        let _ = (target, expected);
        Vec::new()
    }
}

/// What is in force is not what the run set, or cannot be known.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drift {
    /// The replica restarted since the last look (its boot id changed).
    Restarted {
        /// The replica's admin URL.
        replica: String,
    },
    /// The replica serves other weights than the run set.
    Weights {
        /// The replica's admin URL.
        replica: String,
        /// What it serves.
        in_force: Split,
        /// What the run set.
        expected: Split,
    },
    /// The replica has not loaded the change written yet (a [`FileSink`]'s sidecar before its
    /// next reload): the weights are not in force, and that is expected for a while.
    Pending {
        /// The replica's admin URL.
        replica: String,
        /// What it serves.
        in_force: Split,
        /// What was written.
        expected: Split,
    },
    /// A rollback latch holds the canary at 0%: someone rolled it back by hand.
    Latched {
        /// The replica's admin URL.
        replica: String,
    },
    /// What is in force could not be read (unreachable, not weir's routes document, no such
    /// VirtualService or rule).
    Unreadable {
        /// The replica's admin URL.
        replica: String,
        /// Why.
        why: String,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Restarted { replica } => write!(f, "{replica} restarted (new boot id)"),
            Drift::Weights {
                replica,
                in_force,
                expected,
            } => write!(f, "{replica} serves {in_force}, not the step's {expected}"),
            Drift::Pending {
                replica,
                in_force,
                expected,
            } => write!(
                f,
                "{replica} has not loaded the file yet: serves {in_force}, the file says {expected}"
            ),
            Drift::Latched { replica } => write!(
                f,
                "{replica} was rolled back by hand: a rollback latch holds the canary at 0%"
            ),
            Drift::Unreadable { replica, why } => {
                write!(f, "what {replica} serves cannot be read: {why}")
            }
        }
    }
}

/// Why a sink did not apply a change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The guard refused the change (HTTP 409, or the live table's refusal).
    #[error("{by} refused the change: {message}{}", list(.findings))]
    Refused {
        /// Which replica or table.
        by: String,
        /// The refusal's summary.
        message: String,
        /// The findings behind it, one line each.
        findings: Vec<String>,
    },
    /// A replica's admin API produced no answer (refused, timed out, cut short): the change
    /// may or may not have been applied there.
    #[error("{by}: {source}")]
    Unreachable {
        /// Which replica (the URL asked).
        by: String,
        /// What went wrong, with the client's error as its source.
        #[source]
        source: AdminClientError,
    },
    /// The change could not be made: an unexpected status, an unreadable file.
    #[error("{by}: {reason}")]
    Failed {
        /// Which replica or file.
        by: String,
        /// What went wrong.
        reason: String,
    },
    /// The checks before the run found problems; nothing was changed.
    #[error("{}", preflight(.problems))]
    Preflight {
        /// One line per problem, naming the replica.
        problems: Vec<String>,
    },
    /// Some replicas failed; the ones that confirmed were put back.
    #[error("{} of {replicas} sidecars failed: {}; {}", .failures.len(), join(.failures), undo(.undo_error))]
    Partial {
        /// Each failed replica's error.
        failures: Vec<SinkError>,
        /// How many replicas were asked.
        replicas: usize,
        /// Why undoing the confirmed replicas failed too, if it did.
        undo_error: Option<String>,
    },
}

impl SinkError {
    /// Whether a guard refused the change (as opposed to something failing).
    pub fn is_refused(&self) -> bool {
        match self {
            SinkError::Refused { .. } => true,
            SinkError::Partial { failures, .. } => failures.iter().all(SinkError::is_refused),
            SinkError::Unreachable { .. }
            | SinkError::Failed { .. }
            | SinkError::Preflight { .. } => false,
        }
    }
}

fn preflight(problems: &[String]) -> String {
    format!("preflight failed:{}", list(problems))
}

fn list(findings: &[String]) -> String {
    findings.iter().map(|f| format!("\n  - {f}")).collect()
}

fn join(failures: &[SinkError]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn undo(error: &Option<String>) -> String {
    match error {
        None => "every sidecar that had applied the change was put back".to_string(),
        Some(e) => format!("putting back the sidecars that had applied it FAILED too: {e}"),
    }
}
