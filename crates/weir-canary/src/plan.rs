//! The stages a canary walks through, computed once from the spec and never changed by the run.
//!
//! ```text
//! dark launch (header match only, weight 0) x iterations
//!   -> weight stages (stepWeight increments up to maxWeight, or the stepWeights list)
//!   -> promotion (the canary becomes the stable subset at 100%)
//! ```
//!
//! ```
//! use weir_canary::{Plan, Stage};
//!
//! let plan = Plan::stepped(3, 10, 50);
//! assert_eq!(plan.weights(), vec![10, 20, 30, 40, 50]);
//! assert_eq!(plan.stages()[0], Stage::DarkLaunch { iterations: 3 });
//! assert_eq!(plan.stages().last(), Some(&Stage::Promote));
//! ```

use serde::Serialize;

/// One stage of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "stage", rename_all = "kebab-case")]
pub enum Stage {
    /// The canary gets only requests that match the header rule, and no weighted traffic;
    /// `iterations` checks must pass before weighted traffic starts.
    DarkLaunch {
        /// Passing checks needed.
        iterations: u32,
    },
    /// The canary gets `canary` weight points of 100 on the split rule; one passing check moves on.
    Weight {
        /// The canary's weight, 1–100.
        canary: u32,
    },
    /// The canary becomes the stable subset at 100%.
    Promote,
}

/// The stages, in order; always ends with [`Stage::Promote`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    stages: Vec<Stage>,
}

impl Plan {
    /// Increments of `step` weight points up to `max` (the last step is cut to `max` when
    /// `step` does not divide it, as Flagger does), after `dark_iterations` dark-launch checks
    /// (0 for none). `step` 0 means no weighted stages: dark launch, then promotion.
    pub fn stepped(dark_iterations: u32, step: u32, max: u32) -> Plan {
        let mut weights = Vec::new();
        if step > 0 {
            let mut w = 0;
            while w < max {
                w = (w + step).min(max);
                weights.push(w);
            }
        }
        Self::listed(dark_iterations, &weights)
    }

    /// The given weights in order (Flagger's `stepWeights`), after `dark_iterations`
    /// dark-launch checks.
    pub fn listed(dark_iterations: u32, weights: &[u32]) -> Plan {
        let mut stages = Vec::with_capacity(weights.len() + 2);
        if dark_iterations > 0 {
            stages.push(Stage::DarkLaunch {
                iterations: dark_iterations,
            });
        }
        stages.extend(weights.iter().map(|&canary| Stage::Weight { canary }));
        stages.push(Stage::Promote);
        Plan { stages }
    }

    /// Every stage, in order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The canary weights of the weighted stages, in order.
    pub fn weights(&self) -> Vec<u32> {
        self.stages
            .iter()
            .filter_map(|s| match s {
                Stage::Weight { canary } => Some(*canary),
                _ => None,
            })
            .collect()
    }
}

impl Stage {
    /// The canary's weight during this stage (dark launch: 0; promotion: 100).
    pub fn canary_weight(&self) -> u32 {
        match self {
            Stage::DarkLaunch { .. } => 0,
            Stage::Weight { canary } => *canary,
            Stage::Promote => 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let rows: [(Plan, Vec<u32>, bool); 6] = [
            (Plan::stepped(0, 10, 50), vec![10, 20, 30, 40, 50], false),
            // maxWeight not a multiple of stepWeight: the last step is cut to maxWeight.
            (Plan::stepped(0, 20, 50), vec![20, 40, 50], false),
            (Plan::stepped(0, 25, 100), vec![25, 50, 75, 100], false),
            (
                Plan::listed(0, &[1, 10, 50, 100]),
                vec![1, 10, 50, 100],
                false,
            ),
            (Plan::listed(5, &[1, 10, 50]), vec![1, 10, 50], true),
            // Dark launch only: Flagger's A/B testing, then promotion.
            (Plan::stepped(10, 0, 100), vec![], true),
        ];
        for (plan, weights, dark) in rows {
            assert_eq!(plan.weights(), weights, "{plan:?}");
            assert_eq!(
                matches!(plan.stages()[0], Stage::DarkLaunch { .. }),
                dark,
                "{plan:?}"
            );
            assert_eq!(plan.stages().last(), Some(&Stage::Promote));
            assert_eq!(plan.stages().len(), weights.len() + 1 + usize::from(dark));
        }
    }

    #[test]
    fn stage_weights() {
        assert_eq!(Stage::DarkLaunch { iterations: 3 }.canary_weight(), 0);
        assert_eq!(Stage::Weight { canary: 10 }.canary_weight(), 10);
        assert_eq!(Stage::Promote.canary_weight(), 100);
    }
}
