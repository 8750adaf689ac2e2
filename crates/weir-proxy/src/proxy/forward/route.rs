//! Routing: the table in force and its cluster table, from one load, and the decision.

use weir_router::{Decision, Extension, Published, RequestHead, random_value};

use super::super::clusters::{ClusterRuntime, ClusterTable};
use super::super::failure::Failure;

/// A routed request: the decision and the proxy's runtime of the chosen cluster, both from
/// the same published table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Routed<'t> {
    pub decision: Decision<'t>,
    /// Every cluster of the table (mirrors go to others).
    pub clusters: &'t ClusterTable,
    /// The destination's cluster.
    pub cluster: &'t ClusterRuntime,
}

/// Decides where a request goes on `published` (the caller's one load of the live table).
/// A request with no route fails with the text of its 404: the host it asked for and the
/// hosts that are known (only this path formats anything).
#[inline]
pub(crate) fn route<'t>(
    published: &'t Published,
    slot: Extension<ClusterTable>,
    head: &RequestHead<'_>,
) -> Result<Routed<'t>, (Failure, Option<String>)> {
    let decision = published.decide(head, random_value()).map_err(|no_route| {
        tracing::debug!(%no_route, "no route");
        let mut text = published.no_route_message(&no_route);
        text.push('\n');
        (Failure::NoRoute, Some(text))
    })?;
    let Some(clusters) = published.extension(slot) else {
        tracing::error!("the live table carries no cluster table for this proxy");
        return Err((Failure::Internal, None));
    };
    Ok(Routed {
        decision,
        clusters,
        cluster: clusters.cluster(decision.destination.cluster),
    })
}
