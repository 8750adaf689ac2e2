//! Hot reload of the config files: on SIGHUP, on `POST /reload`, and when a poll sees a file
//! change.
//!
//! A change is seen by comparing what a path *is*: the text and the file the path resolves to
//! after every symlink. Comparing the resolved target, not a modification time, is what makes a
//! Kubernetes ConfigMap update visible: the kubelet writes the new files into a fresh
//! `..2026_11_24_…` directory and renames a new `..data` symlink over the old one, so
//! `config.yaml -> ..data/config.yaml` suddenly means another file while no mtime of the path
//! itself moves.
//!
//! The poller acts on a change once it has looked the same on two consecutive polls, so an
//! editor that truncates and rewrites a file in place is not caught half-written. A refused
//! file is reported once (logged with its findings, counted as a failed reload) and not tried
//! again until it changes; the running table stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_router::{Applied, ConfigSource, GuardOptions, LiveTable, Refused};

use crate::metrics::Metrics;

/// What asked for a reload; it appears in the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The poller saw a file change.
    FileChange,
    /// SIGHUP.
    Signal,
    /// `POST /reload`.
    Admin,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::FileChange => "file change",
            Trigger::Signal => "SIGHUP",
            Trigger::Admin => "admin API",
        }
    }
}

/// Why a reload did not publish a new table. The running table stays in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A config file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path as given on the command line.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The validator or a guard refused the new config.
    #[error("config refused by the validator:\n{}", .0.findings)]
    Refused(#[from] Refused),
}

/// What one config path is at one moment: the file it resolves to and its text, or the error
/// that reading it gave.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileState {
    target: Option<PathBuf>,
    text: Result<Arc<str>, (std::io::ErrorKind, String)>,
}

/// The state of every config path, in order.
type Fingerprint = Vec<FileState>;

struct Seen {
    /// What the table in force (or the last refused attempt) was read from.
    current: Snapshot,
    /// A change seen once by the poller, acted on when the next poll sees it unchanged.
    pending: Option<Snapshot>,
}

/// Reloads the config files into a [`LiveTable`], counting every attempt in the metrics.
pub struct Reloader {
    paths: Vec<PathBuf>,
    live: Arc<LiveTable>,
    metrics: Arc<Metrics>,
    /// Serializes reloads, so that `seen` always describes the last attempt.
    seen: Mutex<Seen>,
}

// === impl Snapshot ===

/// The config files as read at one moment: what a table is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    state: Fingerprint,
}

impl Snapshot {
    /// Reads every path (never fails: a read error is part of the snapshot).
    pub fn read(paths: &[PathBuf]) -> Self {
        Snapshot {
            state: paths.iter().map(|p| file_state(p)).collect(),
        }
    }

    /// The sources, named as the paths were given; the first unreadable file is an error.
    pub fn sources(&self, paths: &[PathBuf]) -> Result<Vec<ConfigSource>, ReloadError> {
        paths
            .iter()
            .zip(&self.state)
            .map(|(path, file)| match &file.text {
                Ok(text) => Ok(ConfigSource::new(
                    path.display().to_string(),
                    Arc::clone(text),
                )),
                Err((kind, message)) => Err(ReloadError::Read {
                    path: path.clone(),
                    source: std::io::Error::new(*kind, message.clone()),
                }),
            })
            .collect()
    }
}

// === impl Reloader ===

impl Reloader {
    /// A reloader for `paths`; `loaded` is the snapshot the table in force was built from.
    pub fn new(
        paths: Vec<PathBuf>,
        loaded: Snapshot,
        live: Arc<LiveTable>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Reloader {
            paths,
            live,
            metrics,
            seen: Mutex::new(Seen {
                current: loaded,
                pending: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads every config file and publishes it if the validator accepts it. Blocking (file
    /// reads and validation): call it from a blocking context.
    pub fn reload(&self, trigger: Trigger) -> Result<Applied, ReloadError> {
        let mut seen = self.lock();
        let state = Snapshot::read(&self.paths);
        seen.pending = None;
        seen.current = state.clone();
        self.apply(&state, trigger)
    }

    /// One poll: reloads when the files changed and have stayed the same since the previous
    /// poll. Returns the outcome of the reload, if one was attempted. Blocking.
    pub fn poll(&self) -> Option<Result<Applied, ReloadError>> {
        let mut seen = self.lock();
        let state = Snapshot::read(&self.paths);
        if state == seen.current {
            seen.pending = None;
            return None;
        }
        if seen.pending.as_ref() != Some(&state) {
            tracing::debug!(paths = ?self.paths, "config change seen; reloading if it holds until the next poll");
            seen.pending = Some(state);
            return None;
        }
        seen.pending = None;
        seen.current = state.clone();
        Some(self.apply(&state, Trigger::FileChange))
    }

    /// Polls every `every` until `shutdown` completes.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            let this = Arc::clone(&self);
            if let Err(e) = tokio::task::spawn_blocking(move || this.poll()).await {
                tracing::error!(error = %e, "config poll failed");
            }
        }
    }

    fn apply(&self, state: &Snapshot, trigger: Trigger) -> Result<Applied, ReloadError> {
        let result = state.sources(&self.paths).and_then(|sources| {
            self.live
                .replace(&sources, GuardOptions::default())
                .map_err(ReloadError::from)
        });
        self.metrics.record_reload(result.is_ok());
        match &result {
            Ok(applied) => {
                for w in applied.findings.warnings() {
                    tracing::warn!(trigger = trigger.as_str(), "config warning: {w}");
                }
                tracing::info!(
                    trigger = trigger.as_str(),
                    generation = applied.generation,
                    warnings = applied.findings.warnings().count(),
                    "config reloaded"
                );
            }
            Err(e) => tracing::warn!(
                trigger = trigger.as_str(),
                generation = self.live.generation(),
                "config reload refused, the running table stays: {e}"
            ),
        }
        result
    }
}

fn file_state(path: &Path) -> FileState {
    // Read through the resolved target, so that the text belongs to the target recorded.
    let target = std::fs::canonicalize(path).ok();
    let text = std::fs::read_to_string(target.as_deref().unwrap_or(path))
        .map(Arc::from)
        .map_err(|e| (e.kind(), e.to_string()));
    FileState { target, text }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LESSON: &str = include_str!("../../../config/payment-svc.yaml");

    fn lesson(v1: u32, v2: u32) -> String {
        LESSON
            .replace("weight: 90", &format!("weight: {v1}"))
            .replace("weight: 10", &format!("weight: {v2}"))
    }

    fn reloader(dir: &Path) -> (Arc<LiveTable>, Reloader) {
        let path = dir.join("config.yaml");
        std::fs::write(&path, lesson(90, 10)).unwrap();
        let paths = vec![path];
        let snapshot = Snapshot::read(&paths);
        let (live, _) = LiveTable::from_sources(&snapshot.sources(&paths).unwrap()).unwrap();
        let live = Arc::new(live);
        let metrics = Arc::new(Metrics::new("test"));
        let reloader = Reloader::new(paths, snapshot, Arc::clone(&live), metrics);
        (live, reloader)
    }

    #[test]
    fn a_change_is_applied_once_it_holds_for_two_polls_and_a_refusal_is_tried_once() {
        let dir = tempfile::tempdir().unwrap();
        let (live, reloader) = reloader(dir.path());
        assert!(reloader.poll().is_none(), "nothing changed");

        std::fs::write(dir.path().join("config.yaml"), lesson(50, 50)).unwrap();
        assert!(
            reloader.poll().is_none(),
            "a change seen once waits for the next poll"
        );
        assert_eq!(live.generation(), 1);
        let applied = reloader.poll().expect("reloaded").expect("accepted");
        assert_eq!(applied.generation, 2);
        assert!(
            reloader.poll().is_none(),
            "the same file is not reloaded again"
        );

        std::fs::write(dir.path().join("config.yaml"), lesson(1, 99)).unwrap();
        assert!(reloader.poll().is_none());
        match reloader.poll() {
            Some(Err(ReloadError::Refused(refused))) => {
                assert!(refused.findings.contains(weir_router::Code::CanaryMajority))
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(
            reloader.poll().is_none(),
            "a refused file is not tried on every poll"
        );
        assert_eq!(live.generation(), 2);

        // An explicit reload tries it again.
        assert!(matches!(
            reloader.reload(Trigger::Signal),
            Err(ReloadError::Refused(_))
        ));
    }

    #[test]
    fn a_file_that_changes_between_polls_waits_until_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let (live, reloader) = reloader(dir.path());
        let path = dir.path().join("config.yaml");
        // Half written, then complete: never reloaded half written.
        let full = lesson(50, 50);
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        assert!(reloader.poll().is_none());
        std::fs::write(&path, &full).unwrap();
        assert!(reloader.poll().is_none());
        assert!(matches!(reloader.poll(), Some(Ok(_))));
        assert_eq!(live.generation(), 2);
    }

    #[test]
    fn an_unreadable_file_is_a_refused_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (live, reloader) = reloader(dir.path());
        std::fs::remove_file(dir.path().join("config.yaml")).unwrap();
        assert!(matches!(
            reloader.reload(Trigger::Admin),
            Err(ReloadError::Read { .. })
        ));
        assert_eq!(live.generation(), 1);
    }

    #[test]
    fn a_symlink_swap_with_the_same_text_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, "same").unwrap();
        std::fs::write(&b, "same").unwrap();
        let link = dir.path().join("config.yaml");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let before = file_state(&link);
        let tmp = dir.path().join("config.yaml.tmp");
        std::os::unix::fs::symlink(&b, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        let after = file_state(&link);
        assert_eq!(before.text, after.text);
        assert_ne!(before, after);
    }

    #[test]
    fn a_missing_file_is_a_state_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let state = file_state(&dir.path().join("absent.yaml"));
        assert!(state.target.is_none());
        assert!(state.text.is_err());
    }
}
