//! The sidecar's in-process route table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use weir_router::{Applied, LiveTable, Refused, WeightChange};

use super::{Confirmation, SinkError, Split, WeightSink};
use crate::spec::Target;

/// A [`WeightSink`] over the `LiveTable` of the sidecar the controller runs in: every change
/// goes through the same guard as an admin write and is in force for the next request.
pub struct LiveSink {
    table: Arc<LiveTable>,
    origin: String,
}

impl LiveSink {
    /// A sink over `table`; changes are recorded with origin `canary`.
    pub fn new(table: Arc<LiveTable>) -> Self {
        LiveSink {
            table,
            origin: "canary".into(),
        }
    }

    /// The origin recorded with each change (e.g. `canary payment-svc`).
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }
}

fn confirm(started: Instant, result: Result<Applied, Refused>) -> Result<Confirmation, SinkError> {
    let took = started.elapsed();
    match result {
        Ok(applied) => Ok(Confirmation {
            took,
            generations: vec![applied.generation],
            pending: Vec::new(),
        }),
        Err(refused) => Err(SinkError::Refused {
            by: "live route table".into(),
            message: refused.to_string(),
            findings: refused.findings.0.iter().map(ToString::to_string).collect(),
        }),
    }
}

impl WeightSink for LiveSink {
    fn set_weights(&mut self, target: &Target, split: Split) -> Result<Confirmation, SinkError> {
        let change = WeightChange {
            virtual_service: target.virtual_service.clone(),
            rule: target.rule.clone(),
            weights: BTreeMap::from([
                (target.stable_subset.clone(), split.stable),
                (target.canary_subset.clone(), split.canary),
            ]),
            force: false,
            promotion: split.is_promotion(),
            origin: self.origin.clone(),
        };
        let started = Instant::now();
        confirm(started, self.table.set_weights(&change))
    }

    fn rollback(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        let started = Instant::now();
        confirm(started, self.table.rollback(Some(&target.virtual_service)))
    }

    fn promote(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        let started = Instant::now();
        confirm(
            started,
            self.table
                .promote(&target.virtual_service, &target.canary_subset),
        )
    }

    fn release(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        let started = Instant::now();
        confirm(started, self.table.release(Some(&target.virtual_service)))
    }

    fn describe(&self) -> String {
        "in-process route table".into()
    }
}
