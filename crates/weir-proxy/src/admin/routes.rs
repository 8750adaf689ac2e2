//! The reads: `GET /readyz /config /routes` (`/healthz` and `/metrics` need no code of their
//! own).

use http::StatusCode;
use weir_router::{LiveTable, RouteTable};

use weir_router::state::{AdminState, VirtualServiceState, describe, rules_of};

use super::api::{
    AdminStateView, ConfigResponse, DestinationView, FileView, InForceView, InForceVirtualService,
    ROUTES_API_VERSION, ROUTES_KIND, RoutesResponse, RuleView, SourceView, StateView,
    VirtualServiceView,
};
use super::reply::{AdminResponse, json, text, with_type};
use crate::sidecar::Sidecar;

/// 200 while serving, 503 once the drain began (so that a load balancer stops sending).
pub(super) fn readyz(sidecar: &Sidecar) -> AdminResponse {
    if sidecar.is_draining() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        text(StatusCode::OK, "ready\n")
    }
}

/// What is in force, apart from the config as read: JSON by default; with `?format=yaml` the
/// files' YAML under a comment block saying what is served otherwise.
pub(super) fn config(live: &LiveTable, query: Option<&str>) -> AdminResponse {
    let table = live.load_full();
    let state = live.admin_state();
    let in_force = in_force(&table, &state);
    let yaml = query.is_some_and(|q| q.split('&').any(|kv| kv == "format=yaml"));
    if yaml {
        let mut out = format!("# generation {} in force\n", table.generation());
        for vs in in_force
            .virtual_services
            .iter()
            .filter(|v| v.file_rules.is_some())
        {
            out.push_str(&format!(
                "# NOT AS WRITTEN BELOW: {} is served from the {}: {} (the file says {})\n",
                vs.name,
                vs.source,
                describe(&vs.rules),
                describe(vs.file_rules.as_deref().unwrap_or_default())
            ));
        }
        for source in table.sources() {
            out.push_str(&format!("# source: {}\n", source.name));
            out.push_str(&source.text);
            if !source.text.ends_with('\n') {
                out.push('\n');
            }
        }
        return with_type(StatusCode::OK, "application/yaml; charset=utf-8", out);
    }
    json(
        StatusCode::OK,
        &ConfigResponse {
            generation: table.generation(),
            in_force,
            file: FileView {
                sources: table
                    .sources()
                    .iter()
                    .map(|s| SourceView {
                        file: s.name.to_string(),
                        yaml: s.text.to_string(),
                    })
                    .collect(),
            },
        },
    )
}

fn in_force(table: &RouteTable, state: &AdminState) -> InForceView {
    let virtual_services: Vec<InForceVirtualService> = table
        .virtual_services()
        .iter()
        .map(|vs| {
            let entry = state.virtual_services.get(&vs.key());
            let rules = rules_of(vs);
            let file_rules = entry.map(|e| e.file.clone()).filter(|f| *f != rules);
            let source = match entry {
                Some(e) if e.latched => "rollback latch",
                Some(_) if file_rules.is_some() => "admin state",
                _ => "file",
            };
            InForceVirtualService {
                name: vs.key(),
                source: source.to_string(),
                stable_subset: vs.stable_subset.clone(),
                rules,
                file_rules,
            }
        })
        .collect();
    InForceView {
        differs_from_file: virtual_services.iter().any(|v| v.file_rules.is_some()),
        virtual_services,
    }
}

/// The table in force, as `GET /routes` shows it.
pub(super) fn routes(sidecar: &Sidecar) -> RoutesResponse {
    let live = &sidecar.live;
    let admin_state = live.admin_state();
    let table = live.load_full();
    let virtual_services = table
        .virtual_services()
        .iter()
        .map(|vs| VirtualServiceView {
            name: vs.name.clone(),
            namespace: vs.namespace.clone(),
            hosts: vs.hosts.clone(),
            stable_subset: vs.stable_subset.clone(),
            latched: live.is_latched(&vs.key()),
            admin_state: admin_state
                .virtual_services
                .get(&vs.key())
                .map(admin_state_view),
            weight_policy: serde_json::to_value(vs.policy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            max_step: vs.max_step,
            rules: vs
                .rules
                .iter()
                .map(|rule| RuleView {
                    index: rule.index,
                    name: rule.name.clone(),
                    destinations: rule
                        .destinations
                        .iter()
                        .map(|d| DestinationView {
                            host: d.host.clone(),
                            subset: d.subset.clone(),
                            weight: d.weight,
                            share_percent: rule.share_percent(d),
                            endpoints: endpoints(&table, d.cluster),
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    RoutesResponse {
        api_version: ROUTES_API_VERSION.to_string(),
        kind: ROUTES_KIND.to_string(),
        boot_id: sidecar.boot_id.clone(),
        generation: table.generation(),
        state: StateView {
            path: sidecar.state.file().map(|f| f.path().display().to_string()),
            problem: sidecar.state.problem(),
        },
        virtual_services,
    }
}

fn admin_state_view(entry: &VirtualServiceState) -> AdminStateView {
    let file = describe(&entry.file);
    let admin = describe(&entry.rules);
    let (wins, note) = if entry.latched {
        (
            "rollback latch",
            "rolled back: its canaries stay at 0% whatever the file says, until `weir rollback --release`".to_string(),
        )
    } else {
        (
            "admin state",
            format!(
                "the admin API set these weights over the file's; they hold across reloads and restarts while the file says {file}. Editing this VirtualService in the file makes the file win"
            ),
        )
    };
    AdminStateView {
        wins: wins.to_string(),
        file,
        admin,
        note,
    }
}

fn endpoints(table: &RouteTable, cluster: usize) -> Vec<String> {
    table
        .cluster(cluster)
        .endpoints
        .iter()
        .map(|e| e.authority.to_string())
        .collect()
}
