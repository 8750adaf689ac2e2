//! Hot reload: the sidecar's [`ConfigFeed`] read again and published on the [`LiveTable`] when
//! the validator accepts it, on SIGHUP, on `POST /reload`, and when the feed reports a change.
//!
//! A refused config is reported (logged with its findings, counted as a failed reload) and the
//! running table stays. The feed remembers what was read, so a refused config is not tried
//! again until it changes.

use std::sync::{Arc, Mutex};

use weir_router::{Applied, GuardOptions, LiveTable, Refused};

use crate::feed::{ConfigFeed, FeedError};
use crate::metrics::Metrics;

/// What asked for a reload; it appears in the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// The feed reported a change (a file changed on disk).
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
#[non_exhaustive]
pub enum ReloadError {
    /// The feed could not read the config.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// The validator or a guard refused the new config.
    #[error("config refused by the validator:\n{}", .0.findings)]
    Refused(#[from] Refused),
}

/// Reads the feed into a [`LiveTable`], counting every attempt in the metrics.
pub struct Reloader {
    feed: Arc<dyn ConfigFeed>,
    live: Arc<LiveTable>,
    metrics: Arc<Metrics>,
    /// One reload at a time, so that the feed's last read is the table in force (or the
    /// last refusal).
    serial: Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("feed", &self.feed.describe())
            .field("generation", &self.live.generation())
            .finish_non_exhaustive()
    }
}

// === impl Reloader ===

impl Reloader {
    /// A reloader of `feed` into `live`; the table in force was built from the feed's last
    /// read.
    pub fn new(feed: Arc<dyn ConfigFeed>, live: Arc<LiveTable>, metrics: Arc<Metrics>) -> Self {
        Reloader {
            feed,
            live,
            metrics,
            serial: Mutex::new(()),
        }
    }

    /// The feed the config comes from.
    pub fn feed(&self) -> &Arc<dyn ConfigFeed> {
        &self.feed
    }

    /// Reads the feed and publishes what it gives if the validator accepts it. Blocking
    /// (reads and validation): call it from a blocking context.
    pub fn reload(&self, trigger: Trigger) -> Result<Applied, ReloadError> {
        let _serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let result = self
            .feed
            .read()
            .map_err(ReloadError::from)
            .and_then(|sources| {
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

    /// Reloads on every change the feed reports until `shutdown` completes.
    pub async fn watch(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = self.feed.changed() => {}
            }
            let this = Arc::clone(&self);
            // The outcome is logged and counted by `reload`.
            if let Err(e) =
                tokio::task::spawn_blocking(move || this.reload(Trigger::FileChange)).await
            {
                tracing::error!(error = %e, "config reload failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::feed::FileFeed;

    const LESSON: &str = include_str!("../../../config/payment-svc.yaml");

    fn lesson(v1: u32, v2: u32) -> String {
        LESSON
            .replace("weight: 90", &format!("weight: {v1}"))
            .replace("weight: 10", &format!("weight: {v2}"))
    }

    struct Fixture {
        live: Arc<LiveTable>,
        feed: FileFeed,
        reloader: Reloader,
    }

    impl Fixture {
        fn new(dir: &Path) -> Self {
            let path: PathBuf = dir.join("config.yaml");
            std::fs::write(&path, lesson(90, 10)).unwrap();
            let feed = FileFeed::new(vec![path], None);
            let (live, _) = LiveTable::from_sources(&feed.read().unwrap()).unwrap();
            let live = Arc::new(live);
            let metrics = Arc::new(Metrics::new("test"));
            let reloader = Reloader::new(Arc::new(feed.clone()), Arc::clone(&live), metrics);
            Fixture {
                live,
                feed,
                reloader,
            }
        }

        /// One poll of the feed, and the reload it asks for (what `watch` does).
        fn poll(&self) -> Option<Result<Applied, ReloadError>> {
            self.feed
                .poll()
                .then(|| self.reloader.reload(Trigger::FileChange))
        }
    }

    #[test]
    fn a_change_is_applied_once_it_holds_for_two_polls_and_a_refusal_is_tried_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture::new(dir.path());
        assert!(f.poll().is_none(), "nothing changed");

        std::fs::write(dir.path().join("config.yaml"), lesson(50, 50)).unwrap();
        assert!(
            f.poll().is_none(),
            "a change seen once waits for the next poll"
        );
        assert_eq!(f.live.generation(), 1);
        let applied = f.poll().expect("reloaded").expect("accepted");
        assert_eq!(applied.generation, 2);
        assert!(f.poll().is_none(), "the same file is not reloaded again");

        std::fs::write(dir.path().join("config.yaml"), lesson(1, 99)).unwrap();
        assert!(f.poll().is_none());
        match f.poll() {
            Some(Err(ReloadError::Refused(refused))) => {
                assert!(refused.findings.contains(weir_router::Code::CanaryMajority))
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(
            f.poll().is_none(),
            "a refused file is not tried on every poll"
        );
        assert_eq!(f.live.generation(), 2);

        // An explicit reload tries it again.
        assert!(matches!(
            f.reloader.reload(Trigger::Signal),
            Err(ReloadError::Refused(_))
        ));
    }

    #[test]
    fn a_file_that_changes_between_polls_waits_until_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture::new(dir.path());
        let path = dir.path().join("config.yaml");
        // Half written, then complete: never reloaded half written.
        let full = lesson(50, 50);
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        assert!(f.poll().is_none());
        std::fs::write(&path, &full).unwrap();
        assert!(f.poll().is_none());
        assert!(matches!(f.poll(), Some(Ok(_))));
        assert_eq!(f.live.generation(), 2);
    }

    #[test]
    fn an_unreadable_file_is_a_refused_reload() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture::new(dir.path());
        std::fs::remove_file(dir.path().join("config.yaml")).unwrap();
        assert!(matches!(
            f.reloader.reload(Trigger::Admin),
            Err(ReloadError::Feed(FeedError::Read { .. }))
        ));
        assert_eq!(f.live.generation(), 1);
    }
}
