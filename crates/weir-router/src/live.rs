//! The live table: one [`RouteTable`] behind an `ArcSwap`, read lock-free by every request and
//! replaced whole by writers, each write through the same validator.
//!
//! An embedder that keeps its own state per table (the proxy's parsed authorities, load
//! balancers and metric series; [`Balancers`](crate::balance::Balancers) for a router-only
//! service) registers an *extension* with [`LiveTable::extend`]. The writer builds every
//! extension from the new table inside its critical section and publishes table and
//! extensions with the same `store`: a request does one load and finds both, built for the
//! same generation, with no generation check and no lock.
//!
//! ```
//! use weir_router::{ConfigSource, LiveTable, RouteTable};
//! # let yaml = include_str!("../../../config/payment-svc.yaml");
//! let (live, _warnings) = LiveTable::from_sources(&[ConfigSource::new("p.yaml", yaml)]).unwrap();
//! // Per table: how many clusters it has, and how many tables came before since the
//! // extension was registered (carried over from the previous table's extension).
//! let slot = live.extend(|table: &RouteTable, previous: Option<&(usize, u32)>| {
//!     (table.clusters().len(), previous.map_or(0, |p| p.1 + 1))
//! });
//! let published = live.load(); // one load: the table and its extension
//! assert_eq!(published.extension(slot), Some(&(published.clusters().len(), 0)));
//! live.rollback(None).unwrap();
//! assert_eq!(live.load().extension(slot).unwrap().1, 1);
//! ```

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::error::Error as StdError;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use crate::compile::{Compiled, compile_with};
use crate::finding::{Code, Finding, Findings, Location};
use crate::guard::{GuardOptions, check_weights, guard_compiled, validate, validate_adjusted};
use crate::source::ConfigSource;
use crate::state::{self, AdminState};
use crate::table::{RouteTable, Rule, VirtualService, find_cluster};

/// A change of one rule's weights (admin `PUT /weights`, the canary controller).
///
/// Also the JSON body of the admin API's `PUT /weights`: unknown fields are refused, `rule`,
/// `force` and `promotion` may be left out, and `origin` is never on the wire (the receiver
/// sets it).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightChange {
    /// The VirtualService: `name`, `namespace/name`, or one of its hosts.
    pub virtual_service: String,
    /// The rule by name or index; `None` = the first rule that splits between destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// New weights by subset name. Destinations not named keep their weight.
    pub weights: BTreeMap<String, u32>,
    /// Skip the direction and step guards. Must be explicit.
    #[serde(default)]
    pub force: bool,
    /// Declares a promotion in progress: the canary may get the majority.
    #[serde(default)]
    pub promotion: bool,
    /// Who asks, for findings' locations and logs (e.g. `admin API`, `weir canary`).
    #[serde(skip)]
    pub origin: String,
}

/// A published change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The generation now in force.
    pub generation: u64,
    /// Warnings about the change.
    pub findings: Findings,
}

/// A refused change: the running table is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("change refused:\n{findings}")]
pub struct Refused {
    /// Why, errors first.
    pub findings: Findings,
}

impl Refused {
    fn one(code: Code, origin: &str, path: &str, message: String) -> Self {
        Refused {
            findings: Findings(vec![Finding::error(
                code,
                Location::origin(origin, path),
                message,
            )]),
        }
    }
}

type AnyExtension = Box<dyn Any + Send + Sync>;
type Builder =
    Box<dyn Fn(&RouteTable, Option<&(dyn Any + Send + Sync)>) -> AnyExtension + Send + Sync>;

/// Saves the admin state before a write is acknowledged (see [`LiveTable::persist_with`]).
pub type Persist =
    Box<dyn Fn(&AdminState) -> Result<(), Box<dyn StdError + Send + Sync>> + Send + Sync>;

struct Writer {
    generation: u64,
    /// What admin writes changed on top of the config, latches included.
    state: AdminState,
    /// Where the state is saved, if anywhere.
    persist: Option<Persist>,
    /// Extension builders by slot; `None` once removed.
    builders: Vec<Option<Builder>>,
}

impl Writer {
    fn latched(&self) -> BTreeSet<String> {
        self.state.latched()
    }

    /// Saves `state` (when a persister is set).
    fn save(&self, state: &AdminState) -> Result<(), String> {
        match &self.persist {
            Some(persist) => persist(state).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Saves `state` before a change is published; a failure refuses the change.
    fn save_or_refuse(&self, state: &AdminState, origin: &str) -> Result<(), Refused> {
        self.save(state).map_err(|e| {
            Refused::one(
                Code::AdminState,
                origin,
                "state",
                format!(
                    "the change was not made: it could not be saved to the state file ({e}), and a restart would have undone it. Fix the state file's directory (permissions, free space) and retry"
                ),
            )
        })
    }
}

/// What readers load: the route table in force and the extensions built from it, published
/// together. Derefs to the [`RouteTable`].
pub struct Published {
    table: RouteTable,
    /// By slot; `None` for a removed extension.
    extensions: Box<[Option<AnyExtension>]>,
}

/// The handle of an extension registered with [`LiveTable::extend`]: finds it in any
/// [`Published`] of that table. `Copy`, so a request can use it without a clone.
pub struct Extension<E> {
    slot: usize,
    _type: PhantomData<fn() -> E>,
}

/// The table in force. Readers call [`load`](LiveTable::load) (one atomic load, never blocks);
/// writers build a new table off to the side, validate it against the current one, and publish
/// it with one store, so a reader sees the old table or the new one, never a mix.
pub struct LiveTable {
    current: ArcSwap<Published>,
    writer: Mutex<Writer>,
}

impl std::fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTable")
            .field("generation", &self.generation())
            .finish()
    }
}

impl LiveTable {
    /// Starts serving a table (generation 1). The table should have passed [`validate`].
    pub fn new(mut table: RouteTable) -> Self {
        table.generation = 1;
        LiveTable {
            current: ArcSwap::from_pointee(Published {
                table,
                extensions: Box::default(),
            }),
            writer: Mutex::new(Writer {
                generation: 1,
                state: AdminState::default(),
                persist: None,
                builders: Vec::new(),
            }),
        }
    }

    /// Validates sources with a saved admin state re-applied (see [`crate::state`]) and starts
    /// serving them. The state never stops a valid config from being served: a part of it
    /// that cannot be applied is dropped (latches are kept) and reported in the findings.
    pub fn from_sources_with_state(
        sources: &[ConfigSource],
        state: AdminState,
    ) -> Result<(Self, Findings), Refused> {
        let mut applied = state.clone();
        let mut notes = Vec::new();
        let compiled = validate_adjusted(sources, None, GuardOptions::default(), |table| {
            applied.apply(table, &mut notes)
        });
        let (table, mut findings, state) = match compiled.table {
            Some(table) if !compiled.findings.has_errors() => (table, compiled.findings, applied),
            _ => {
                // The file alone, with the latches only.
                let plain = validate(sources, None, GuardOptions::default());
                match plain.table {
                    Some(table) if !plain.findings.has_errors() => {
                        notes.push(Finding::warning(
                            Code::AdminState,
                            Location::origin(state::ORIGIN, ""),
                            format!(
                                "the admin state's weights are refused by the guard, so the config's are served (rollback latches kept):\n{}",
                                compiled.findings
                            ),
                        ));
                        let mut latches_only = state;
                        latches_only.virtual_services.retain(|_, s| s.latched);
                        for s in latches_only.virtual_services.values_mut() {
                            s.rules = s.file.clone();
                        }
                        (table, plain.findings, latches_only)
                    }
                    _ => {
                        return Err(Refused {
                            findings: plain.findings,
                        });
                    }
                }
            }
        };
        findings.0.extend(notes);
        findings.sort();
        let table = apply_latches(table, &state.latched());
        let live = LiveTable::new(table);
        live.lock().state = state;
        Ok((live, findings))
    }

    /// Saves the admin state with `persist` from now on: before every weight change,
    /// release and promotion is published (a failure refuses it), and right after every
    /// rollback (which is never held back; a failure is a warning of the rollback). Also
    /// after a reload that dropped admin weights.
    pub fn persist_with(&self, persist: Persist) {
        self.lock().persist = Some(persist);
    }

    /// What admin writes changed on top of the config (latches, weights, promotions).
    pub fn admin_state(&self) -> AdminState {
        self.lock().state.clone()
    }

    /// Validates sources and starts serving them; refuses them on any error finding.
    pub fn from_sources(sources: &[ConfigSource]) -> Result<(Self, Findings), Refused> {
        let compiled = validate(sources, None, GuardOptions::default());
        match compiled.table {
            Some(table) if !compiled.findings.has_errors() => {
                Ok((LiveTable::new(table), compiled.findings))
            }
            _ => Err(Refused {
                findings: compiled.findings,
            }),
        }
    }

    /// The table in force and its extensions: one atomic load. Keep the guard for the whole
    /// request so that the request is routed, forwarded and counted under one generation.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Published>> {
        self.current.load()
    }

    /// The table in force as an owned `Arc` (for work that outlives a request).
    pub fn load_full(&self) -> Arc<Published> {
        self.current.load_full()
    }

    /// Registers an extension: state the caller keeps beside every table, built by `build`
    /// from the new table and the previous table's extension (`None` the first time), so that
    /// state meant to survive a swap (round-robin cursors, in-flight counts) is carried over.
    ///
    /// `build` runs now for the table in force (which is republished under the same
    /// generation), then inside the writer's critical section on every publish (replace,
    /// weight change, rollback, promote): never on a request. It must be quick and must not
    /// call back into this `LiveTable`.
    pub fn extend<E, F>(&self, build: F) -> Extension<E>
    where
        E: Send + Sync + 'static,
        F: Fn(&RouteTable, Option<&E>) -> E + Send + Sync + 'static,
    {
        let builder: Builder = Box::new(move |table, previous| {
            let previous = previous.and_then(|p| p.downcast_ref::<E>());
            Box::new(build(table, previous))
        });
        let mut w = self.lock();
        let current = self.current.load_full();
        let slot = w.builders.len();
        let mut extensions: Vec<Option<AnyExtension>> = Vec::with_capacity(slot + 1);
        for (i, b) in w.builders.iter().enumerate() {
            extensions.push(
                b.as_ref()
                    .map(|b| b(&current.table, current.extension_any(i))),
            );
        }
        extensions.push(Some(builder(&current.table, None)));
        w.builders.push(Some(builder));
        self.current.store(Arc::new(Published {
            table: current.table.clone(),
            extensions: extensions.into_boxed_slice(),
        }));
        Extension {
            slot,
            _type: PhantomData,
        }
    }

    /// Stops building an extension (its owner is gone). Tables published afterwards do not
    /// carry it; [`Published::extension`] answers `None` for it from then on.
    pub fn remove_extension<E>(&self, extension: Extension<E>) {
        let mut w = self.lock();
        if let Some(b) = w.builders.get_mut(extension.slot) {
            *b = None;
        }
        let current = self.current.load_full();
        let table = current.table.clone();
        drop(current);
        let generation = w.generation;
        self.store(&w, table, generation);
    }

    /// The generation in force.
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Whether a rollback latch holds a VirtualService's canaries at 0%.
    pub fn is_latched(&self, virtual_service: &str) -> bool {
        let table = self.load();
        let Some(vs) = table.virtual_service(virtual_service) else {
            return false;
        };
        self.lock()
            .state
            .virtual_services
            .get(&vs.key())
            .is_some_and(|s| s.latched)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, w: &mut Writer, table: RouteTable) -> u64 {
        w.generation += 1;
        self.store(w, table, w.generation);
        w.generation
    }

    /// Builds every extension for `table` and publishes both with one store.
    fn store(&self, w: &Writer, mut table: RouteTable, generation: u64) {
        table.generation = generation;
        let extensions = {
            let previous = self.current.load();
            w.builders
                .iter()
                .enumerate()
                .map(|(i, b)| b.as_ref().map(|b| b(&table, previous.extension_any(i))))
                .collect()
        };
        self.current
            .store(Arc::new(Published { table, extensions }));
    }

    /// Replaces the whole config (a file reload, `POST /reload`). The new config is validated,
    /// including the step guard against the table in force; on any error the running table
    /// stays. Rollback latches survive: a latched VirtualService keeps its canaries at 0%.
    pub fn replace(
        &self,
        sources: &[ConfigSource],
        options: GuardOptions,
    ) -> Result<Applied, Refused> {
        // Parsing and compiling (bounded, but the bulk of the work) happen before the writer
        // lock: a rollback or a weight change never waits behind a config parse.
        let compiled = compile_with(sources, options.hosts);
        let mut w = self.lock();
        let state = w.state.clone();
        self.replace_with(&mut w, compiled, options, state)
    }

    /// [`replace`](LiveTable::replace) of a config already compiled, with `state` as the
    /// admin state to re-apply.
    fn replace_with(
        &self,
        w: &mut Writer,
        compiled: Compiled,
        options: GuardOptions,
        mut state: AdminState,
    ) -> Result<Applied, Refused> {
        let current = self.current.load_full();
        let mut notes = Vec::new();
        let compiled = guard_compiled(compiled, Some(&current.table), options, |table| {
            state.apply(table, &mut notes)
        });
        let table = match compiled.table {
            Some(t) if !compiled.findings.has_errors() => t,
            _ => {
                return Err(Refused {
                    findings: compiled.findings,
                });
            }
        };
        let mut findings = compiled.findings;
        let table = apply_latches(table, &state.latched());
        if state != w.state {
            if let Err(e) = w.save(&state) {
                notes.push(not_saved(&e, "the reload"));
            }
            w.state = state;
        }
        let generation = self.publish(w, table);
        findings.0.extend(notes);
        findings.sort();
        Ok(Applied {
            generation,
            findings,
        })
    }

    /// Makes the config the truth again for a VirtualService (or all, with `None`): drops the
    /// admin weights and promotions kept over it and serves the config's, in one swap. A
    /// rollback latch stays (release it on its own). The config passed the guards when it
    /// was read; going back to it is deliberate, so the direction and step guards are not
    /// run against the table in force (the structural checks are).
    pub fn discard_admin_weights(&self, virtual_service: Option<&str>) -> Result<Applied, Refused> {
        let mut w = self.lock();
        let current = self.current.load_full();
        let keys = target_keys(&current, virtual_service)?;
        let mut state = w.state.clone();
        for key in &keys {
            match state.virtual_services.get_mut(key) {
                Some(entry) if entry.latched => {
                    entry.rules = entry.file.clone();
                    entry.stable_subset = None;
                }
                _ => {
                    state.virtual_services.remove(key);
                }
            }
        }
        if state == w.state {
            return Ok(Applied {
                generation: w.generation,
                findings: Findings::default(),
            });
        }
        let sources = current.table.sources().to_vec();
        drop(current);
        w.save_or_refuse(&state, "discard")?;
        let options = GuardOptions {
            force: true,
            ..GuardOptions::default()
        };
        let compiled = compile_with(&sources, options.hosts);
        self.replace_with(&mut w, compiled, options, state)
    }

    /// Changes one rule's weights through the same guards as a file.
    pub fn set_weights(&self, change: &WeightChange) -> Result<Applied, Refused> {
        let origin = if change.origin.is_empty() {
            "weight change"
        } else {
            change.origin.as_str()
        };
        let mut w = self.lock();
        let current = self.current.load_full();
        let mut next = current.table.clone();
        let vs_index = next
            .virtual_service_index(&change.virtual_service)
            .ok_or_else(|| {
                Refused::one(
                    Code::InvalidValue,
                    origin,
                    "virtual_service",
                    format!("no VirtualService named {:?}", change.virtual_service),
                )
            })?;
        let vs = &mut next.virtual_services[vs_index];
        let rule_index = match &change.rule {
            Some(r) => vs.rule(r).map(|r| r.index),
            None => vs.split_rule().map(|r| r.index),
        }
        .ok_or_else(|| {
            Refused::one(
                Code::InvalidValue,
                origin,
                "rule",
                format!(
                    "VirtualService {} has no rule {:?}",
                    vs.name,
                    change.rule.as_deref().unwrap_or("")
                ),
            )
        })?;
        let latched = w
            .state
            .virtual_services
            .get(&vs.key())
            .is_some_and(|s| s.latched);
        let vs_name = vs.name.clone();
        let is_canary: Vec<bool> = vs.rules[rule_index]
            .destinations
            .iter()
            .map(|d| vs.is_canary(d.subset.as_deref()))
            .collect();
        let rule = &mut vs.rules[rule_index];
        for (subset, weight) in &change.weights {
            let mut found = false;
            for (d, canary) in rule.destinations.iter_mut().zip(&is_canary) {
                if d.subset.as_deref() == Some(subset.as_str()) {
                    if latched && *canary && *weight > 0 {
                        return Err(Refused::one(
                            Code::RollbackLatched,
                            origin,
                            "weights",
                            format!(
                                "VirtualService {vs_name} was rolled back: its canary {subset} stays at 0% until the rollback is released (`weir rollback --release`, or DELETE /rollback on the admin API)"
                            ),
                        ));
                    }
                    d.weight = *weight;
                    d.location = Location::origin(
                        origin,
                        format!("{vs_name} rule {rule_index} {subset} weight"),
                    );
                    found = true;
                }
            }
            if !found {
                let known: Vec<&str> = rule
                    .destinations
                    .iter()
                    .filter_map(|d| d.subset.as_deref())
                    .collect();
                return Err(Refused::one(
                    Code::UndefinedSubset,
                    origin,
                    "weights",
                    format!(
                        "{} of VirtualService {vs_name} has no destination with subset {subset:?}; its subsets are {}",
                        rule.label(),
                        known.join(", ")
                    ),
                ));
            }
        }
        recompute_total(rule);
        let options = GuardOptions {
            force: change.force,
            promotion: change.promotion,
            ..GuardOptions::default()
        };
        let findings = check_weights(Some(&current.table), &next, options);
        if findings.has_errors() {
            return Err(Refused { findings });
        }
        let before = &current.table.virtual_services[vs_index];
        let after = &next.virtual_services[vs_index];
        if state::rules_of(before) == state::rules_of(after) {
            // Nothing changes: no new generation, nothing to save.
            return Ok(Applied {
                generation: w.generation,
                findings,
            });
        }
        let mut saved = w.state.clone();
        saved.record(before, after, latched);
        w.save_or_refuse(&saved, origin)?;
        w.state = saved;
        let generation = self.publish(&mut w, next);
        Ok(Applied {
            generation,
            findings,
        })
    }

    /// Puts every canary subset of a VirtualService (or of all, with `None`) at 0% in one swap
    /// and latches: later reloads and weight changes cannot give the canary traffic until
    /// [`release`](LiveTable::release).
    pub fn rollback(&self, virtual_service: Option<&str>) -> Result<Applied, Refused> {
        let mut w = self.lock();
        let current = self.current.load_full();
        let keys = target_keys(&current, virtual_service)?;
        let mut latched = w.latched();
        latched.extend(keys.iter().cloned());
        let next = apply_latches(current.table.clone(), &latched);
        let mut saved = w.state.clone();
        record_all(&mut saved, &current, &next, &keys, true);
        // Never held back by the save: the canary leaves first, then the state is written.
        let generation = self.publish(&mut w, next);
        let mut findings = Findings::default();
        if let Err(e) = w.save(&saved) {
            findings.0.push(not_saved(&e, "the rollback"));
        }
        w.state = saved;
        Ok(Applied {
            generation,
            findings,
        })
    }

    /// Releases a rollback latch. The weights stay as they are (canaries at 0%); later changes
    /// may raise them again.
    pub fn release(&self, virtual_service: Option<&str>) -> Result<Applied, Refused> {
        let mut w = self.lock();
        let current = self.current.load_full();
        let keys = target_keys(&current, virtual_service)?;
        let mut saved = w.state.clone();
        record_all(&mut saved, &current, &current, &keys, false);
        if saved != w.state {
            w.save_or_refuse(&saved, "release")?;
            w.state = saved;
        }
        Ok(Applied {
            generation: w.generation,
            findings: Findings::default(),
        })
    }

    /// Promotes a subset: every weighted rule of the VirtualService sends 100% to it, and it
    /// becomes the stable subset. Rules that route by request (a dark launch) are left as they
    /// are. Releases any latch on the VirtualService.
    pub fn promote(&self, virtual_service: &str, subset: &str) -> Result<Applied, Refused> {
        let mut w = self.lock();
        let current = self.current.load_full();
        let mut next = current.table.clone();
        let vs_index = next.virtual_service_index(virtual_service).ok_or_else(|| {
            Refused::one(
                Code::InvalidValue,
                "promote",
                "virtual_service",
                format!("no VirtualService named {virtual_service:?}"),
            )
        })?;
        let vs = &mut next.virtual_services[vs_index];
        let has_subset = vs
            .rules
            .iter()
            .flat_map(|r| &r.destinations)
            .any(|d| d.subset.as_deref() == Some(subset));
        if !has_subset {
            return Err(Refused::one(
                Code::UndefinedSubset,
                "promote",
                "subset",
                format!("VirtualService {} routes to no subset {subset:?}", vs.name),
            ));
        }
        let clusters = &next.clusters;
        for rule in vs.rules.iter_mut().filter(|r| r.is_weighted()) {
            if let Some(pos) = rule
                .destinations
                .iter()
                .position(|d| d.subset.as_deref() == Some(subset))
            {
                let mut d = rule.destinations.swap_remove(pos);
                d.weight = 100;
                rule.destinations = vec![d];
            } else if let Some(d) = rule.destinations.first_mut() {
                let host = d.host.clone();
                if let Some(c) = find_cluster(clusters, &host, Some(subset)) {
                    d.subset = Some(subset.to_string());
                    d.cluster = c;
                    d.weight = 100;
                    rule.destinations.truncate(1);
                }
            }
            recompute_total(rule);
        }
        vs.stable_subset = Some(subset.to_string());
        let findings = check_weights(
            Some(&current.table),
            &next,
            GuardOptions {
                force: true,
                promotion: true,
                ..GuardOptions::default()
            },
        );
        if findings.has_errors() {
            return Err(Refused { findings });
        }
        let mut saved = w.state.clone();
        saved.record(
            &current.table.virtual_services[vs_index],
            &next.virtual_services[vs_index],
            false,
        );
        w.save_or_refuse(&saved, "promote")?;
        w.state = saved;
        let generation = self.publish(&mut w, next);
        Ok(Applied {
            generation,
            findings,
        })
    }
}

/// Records the VirtualServices `keys` of `after` in `state`, latched or not.
fn record_all(
    state: &mut AdminState,
    before: &RouteTable,
    after: &RouteTable,
    keys: &[String],
    latched: bool,
) {
    for key in keys {
        let find = |t: &RouteTable| {
            t.virtual_services()
                .iter()
                .find(|v| &v.key() == key)
                .cloned()
        };
        if let (Some(b), Some(a)) = (find(before), find(after)) {
            state.record(&b, &a, latched);
        }
    }
}

/// A warning: a change made but not saved.
fn not_saved(error: &str, what: &str) -> Finding {
    Finding::warning(
        Code::AdminState,
        Location::origin(state::ORIGIN, "state"),
        format!(
            "{what} is in force but could not be saved to the state file ({error}): a restart would serve the config's weights again. Fix the state file's directory (permissions, free space)"
        ),
    )
}

// === impl Published ===

impl Published {
    /// The route table.
    #[inline]
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The extension registered as `extension`, built for this table; `None` if it was
    /// removed (or belongs to another `LiveTable`).
    #[inline]
    pub fn extension<E: 'static>(&self, extension: Extension<E>) -> Option<&E> {
        self.extension_any(extension.slot)?.downcast_ref()
    }

    fn extension_any(&self, slot: usize) -> Option<&(dyn Any + Send + Sync)> {
        self.extensions.get(slot)?.as_deref()
    }
}

impl Deref for Published {
    type Target = RouteTable;

    #[inline]
    fn deref(&self) -> &RouteTable {
        &self.table
    }
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("generation", &self.table.generation)
            .field("extensions", &self.extensions.len())
            .finish()
    }
}

// === impl Extension ===

impl<E> Clone for Extension<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Extension<E> {}

impl<E> std::fmt::Debug for Extension<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Extension({} #{})",
            std::any::type_name::<E>(),
            self.slot
        )
    }
}

fn target_keys(table: &RouteTable, virtual_service: Option<&str>) -> Result<Vec<String>, Refused> {
    match virtual_service {
        None => Ok(table
            .virtual_services()
            .iter()
            .map(VirtualService::key)
            .collect()),
        Some(name) => table
            .virtual_service(name)
            .map(|vs| vec![vs.key()])
            .ok_or_else(|| {
                Refused::one(
                    Code::InvalidValue,
                    "rollback",
                    "virtual_service",
                    format!("no VirtualService named {name:?}"),
                )
            }),
    }
}

fn recompute_total(rule: &mut Rule) {
    rule.total_weight = rule.destinations.iter().map(|d| u64::from(d.weight)).sum();
}

/// Moves every canary's weight to the stable subset in latched VirtualServices. A rule that
/// routes only to a canary (a dark launch) is pointed at the stable subset instead.
fn apply_latches(mut table: RouteTable, latched: &BTreeSet<String>) -> RouteTable {
    if latched.is_empty() {
        return table;
    }
    let clusters = &table.clusters;
    for vs in table.virtual_services.iter_mut() {
        if !latched.contains(&vs.key()) {
            continue;
        }
        let Some(stable) = vs.stable_subset.clone() else {
            continue;
        };
        for rule in vs.rules.iter_mut() {
            let canary_weight: u32 = rule
                .destinations
                .iter()
                .filter(|d| d.subset.as_deref().is_some_and(|s| s != stable))
                .map(|d| d.weight)
                .sum();
            let has_canary = rule
                .destinations
                .iter()
                .any(|d| d.subset.as_deref().is_some_and(|s| s != stable));
            if !has_canary {
                continue;
            }
            if let Some(s) = rule
                .destinations
                .iter_mut()
                .find(|d| d.subset.as_deref() == Some(stable.as_str()))
            {
                s.weight += canary_weight;
            } else if let Some(d) = rule.destinations.first_mut() {
                let host = d.host.clone();
                match find_cluster(clusters, &host, Some(stable.as_str())) {
                    Some(c) => {
                        // Retarget the first canary destination at the stable cluster.
                        d.subset = Some(stable.clone());
                        d.cluster = c;
                        d.weight = canary_weight.max(1);
                    }
                    None => continue,
                }
            }
            for d in rule.destinations.iter_mut() {
                if d.subset.as_deref().is_some_and(|s| s != stable) {
                    d.weight = 0;
                }
            }
            recompute_total(rule);
        }
    }
    table
}
