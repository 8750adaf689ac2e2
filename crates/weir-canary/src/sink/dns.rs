//! The admin APIs of every replica behind a headless Service, found again on every tick.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use super::{AdminSink, Confirmation, SinkError, Split, WeightSink};
use crate::replicas::{ReplicaSet, Resolve, SystemResolver};
use crate::spec::Target;

/// A [`WeightSink`] over the admin APIs of whatever replicas a name resolves to, e.g. the
/// headless Service `checkout-admin.shop.svc.cluster.local` on port 15000.
///
/// The name is resolved on every [`refresh`](WeightSink::refresh) (the controller calls it on
/// every tick) and before every change:
/// - a new address gets the change last confirmed (the current step's weights, the rollback,
///   or the promotion) before it joins the set: it counts (for the sink's confirmations and
///   for a [`ScrapeSource::following`](crate::ScrapeSource::following) the set) only once
///   it is in step with the others; one that cannot be brought in step is reported once,
///   tried again on every refresh and does not count meanwhile;
/// - an address that no longer resolves is dropped and reported;
/// - a failed resolution keeps the set as it was and is reported.
///
/// Every change then goes to the set as [`AdminSink`] sends it: every replica must confirm.
pub struct DnsAdminSink {
    host: String,
    port: u16,
    resolver: Box<dyn Resolve>,
    replicas: ReplicaSet,
    token: Option<String>,
    timeout: Duration,
    /// The last change every replica confirmed, replayed to newcomers.
    last: Option<Change>,
    /// What changed during a sink call, reported at the next refresh.
    changes: Vec<ReplicaChange>,
    /// New replicas not in step yet, reported once each (not on every tick).
    pending: BTreeSet<String>,
}

/// A change in the set of replicas a sink reaches, reported as an event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicaChange {
    /// A new replica, brought in step (`applied` says with what) and counted from now on.
    Joined {
        /// Its admin base URL.
        replica: String,
        /// What it was sent before joining, e.g. `weights 90/10`.
        applied: String,
    },
    /// A replica that no longer resolves: dropped.
    Left {
        /// Its admin base URL.
        replica: String,
    },
    /// A new replica that could not be brought in step: not counted, tried again.
    Pending {
        /// Its admin base URL.
        replica: String,
        /// Why.
        error: String,
    },
    /// The name did not resolve: the set is kept as it was.
    Unresolved {
        /// `name:port`.
        name: String,
        /// Why.
        error: String,
    },
}

impl ReplicaChange {
    /// Whether it is a problem (as opposed to the set following the Service).
    pub fn is_problem(&self) -> bool {
        matches!(
            self,
            ReplicaChange::Pending { .. } | ReplicaChange::Unresolved { .. }
        )
    }
}

impl fmt::Display for ReplicaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaChange::Joined { replica, applied } => {
                write!(f, "replica {replica} joined ({applied})")
            }
            ReplicaChange::Left { replica } => {
                write!(f, "replica {replica} is gone from DNS: dropped")
            }
            ReplicaChange::Pending { replica, error } => write!(
                f,
                "replica {replica} found but not counted yet (could not bring it in step: {error})"
            ),
            ReplicaChange::Unresolved { name, error } => write!(
                f,
                "cannot resolve {name} ({error}): keeping the replicas known before"
            ),
        }
    }
}

/// A change a newcomer must be brought in step with.
#[derive(Clone, Copy, Debug)]
enum Change {
    Weights(Split),
    RolledBack,
    Promoted,
    Released,
}

impl DnsAdminSink {
    /// A sink over every address of `host` on `port`, found with the system's resolver.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self::with_resolver(host, port, SystemResolver)
    }

    /// As [`new`](Self::new), resolving with `resolver`.
    pub fn with_resolver(
        host: impl Into<String>,
        port: u16,
        resolver: impl Resolve + 'static,
    ) -> Self {
        DnsAdminSink {
            host: host.into(),
            port,
            resolver: Box::new(resolver),
            replicas: ReplicaSet::default(),
            token: None,
            timeout: Duration::from_secs(2),
            last: None,
            changes: Vec::new(),
            pending: BTreeSet::new(),
        }
    }

    /// Sends `Authorization: Bearer <token>`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The timeout of one request to one replica.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The replicas that count, shared: give it to
    /// [`ScrapeSource::following`](crate::ScrapeSource::following).
    pub fn replicas(&self) -> ReplicaSet {
        self.replicas.clone()
    }

    fn admin(&self, replicas: Vec<String>) -> AdminSink {
        let sink = AdminSink::new(replicas).timeout(self.timeout);
        match &self.token {
            Some(t) => sink.token(t.clone()),
            None => sink,
        }
    }

    /// Resolves the name and brings the set up to date; the changes are queued for the next
    /// refresh.
    fn sync(&mut self, target: &Target) {
        let found: Vec<String> = match self.resolver.resolve(&self.host, self.port) {
            Ok(addrs) if !addrs.is_empty() => addrs.iter().map(|a| format!("http://{a}")).collect(),
            Ok(_) => return self.unresolved("no addresses".into()),
            Err(e) => return self.unresolved(e.to_string()),
        };
        let known = self.replicas.urls();
        let mut next: Vec<String> = Vec::new();
        for url in &known {
            if found.contains(url) {
                next.push(url.clone());
            } else {
                self.changes.push(ReplicaChange::Left {
                    replica: url.clone(),
                });
            }
        }
        let found_now = found.clone();
        let mut fresh: Vec<String> = found.into_iter().filter(|u| !known.contains(u)).collect();
        fresh.sort();
        fresh.dedup();
        for url in fresh {
            match self.catch_up(target, &url) {
                Ok(applied) => {
                    self.pending.remove(&url);
                    next.push(url.clone());
                    self.changes.push(ReplicaChange::Joined {
                        replica: url,
                        applied,
                    });
                }
                Err(e) => {
                    if self.pending.insert(url.clone()) {
                        self.changes.push(ReplicaChange::Pending {
                            replica: url,
                            error: e.to_string(),
                        });
                    }
                }
            }
        }
        self.pending.retain(|u| found_now.contains(u));
        self.replicas.set(next);
    }

    fn unresolved(&mut self, error: String) {
        self.changes.push(ReplicaChange::Unresolved {
            name: format!("{}:{}", self.host, self.port),
            error,
        });
    }

    /// Sends a newcomer the change the others confirmed last; what it was sent.
    fn catch_up(&self, target: &Target, url: &str) -> Result<String, SinkError> {
        let mut one = self.admin(vec![url.to_string()]);
        Ok(match self.last {
            None => "nothing to catch up on yet".into(),
            Some(Change::Weights(split)) => {
                one.set_weights(target, split)?;
                format!("weights {split}")
            }
            Some(Change::RolledBack) => {
                one.rollback(target)?;
                "rolled back".into()
            }
            Some(Change::Promoted) => {
                one.promote(target)?;
                "promoted".into()
            }
            Some(Change::Released) => {
                one.release(target)?;
                "rollback released".into()
            }
        })
    }

    /// Resolves, then sends `op` to every replica that counts; remembers the change.
    fn everywhere(
        &mut self,
        target: &Target,
        change: Change,
        op: impl FnOnce(&mut AdminSink, &Target) -> Result<Confirmation, SinkError>,
    ) -> Result<Confirmation, SinkError> {
        self.sync(target);
        let replicas = self.replicas.urls();
        if replicas.is_empty() {
            return Err(SinkError::Failed {
                by: format!("{}:{}", self.host, self.port),
                reason: "no replica found: check the headless Service's name and that its pods are ready".into(),
            });
        }
        let confirmed = op(&mut self.admin(replicas), target)?;
        self.last = Some(change);
        Ok(confirmed)
    }
}

impl WeightSink for DnsAdminSink {
    fn set_weights(&mut self, target: &Target, split: Split) -> Result<Confirmation, SinkError> {
        self.everywhere(target, Change::Weights(split), |s, t| {
            s.set_weights(t, split)
        })
    }

    fn rollback(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        self.everywhere(target, Change::RolledBack, |s, t| s.rollback(t))
    }

    fn promote(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        self.everywhere(target, Change::Promoted, |s, t| s.promote(t))
    }

    fn release(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        self.everywhere(target, Change::Released, |s, t| s.release(t))
    }

    fn refresh(&mut self, target: &Target) -> Vec<ReplicaChange> {
        self.sync(target);
        std::mem::take(&mut self.changes)
    }

    fn describe(&self) -> String {
        format!(
            "admin API of every replica of {}:{} ({} now)",
            self.host,
            self.port,
            self.replicas.urls().len()
        )
    }
}
