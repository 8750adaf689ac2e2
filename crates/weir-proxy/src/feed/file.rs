//! Config files as a [`ConfigFeed`]: read on demand, polled for changes.
//!
//! A change is seen by comparing what a path *is*: the text and the file the path resolves to
//! after every symlink. Comparing the resolved target, not a modification time, is what makes a
//! Kubernetes ConfigMap update visible: the kubelet writes the new files into a fresh
//! `..2026_11_24_…` directory and renames a new `..data` symlink over the old one, so
//! `config.yaml -> ..data/config.yaml` suddenly means another file while no mtime of the path
//! itself moves.
//!
//! A change counts once it has looked the same on two consecutive polls, so an editor that
//! truncates and rewrites a file in place is not caught half-written. What was read last
//! (accepted or refused) is the reference: a refused file is not reported again until it
//! changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use weir_router::ConfigSource;

use super::{Changed, ConfigFeed, FeedError};

/// What one config path is at one moment: the file it resolves to and its text, or the error
/// that reading it gave.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileState {
    target: Option<PathBuf>,
    text: Result<Arc<str>, (std::io::ErrorKind, String)>,
}

/// The config files as read at one moment: what a table is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    state: Vec<FileState>,
}

/// What the feed has seen.
#[derive(Debug)]
struct Seen {
    /// What was read last: the table in force, or the last refused attempt.
    current: Option<Snapshot>,
    /// A change seen once by a poll, settled when the next poll sees it unchanged.
    pending: Option<Snapshot>,
    /// A settled change, handed to the next read.
    settled: Option<Snapshot>,
}

/// Config files, read together as one config, polled every `poll` (if set) for changes.
#[derive(Clone, Debug)]
pub struct FileFeed {
    paths: Arc<[PathBuf]>,
    poll: Option<Duration>,
    seen: Arc<Mutex<Seen>>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Reads every path (never fails: a read error is part of the snapshot).
    fn read(paths: &[PathBuf]) -> Self {
        Snapshot {
            state: paths.iter().map(|p| file_state(p)).collect(),
        }
    }

    /// The sources, named as the paths were given; the first unreadable file is an error.
    fn sources(&self, paths: &[PathBuf]) -> Result<Vec<ConfigSource>, FeedError> {
        paths
            .iter()
            .zip(&self.state)
            .map(|(path, file)| match &file.text {
                Ok(text) => Ok(ConfigSource::new(
                    path.display().to_string(),
                    Arc::clone(text),
                )),
                Err((kind, message)) => Err(FeedError::Read {
                    path: path.clone(),
                    source: std::io::Error::new(*kind, message.clone()),
                }),
            })
            .collect()
    }
}

// === impl FileFeed ===

impl FileFeed {
    /// A feed of `paths`, polled every `poll`; `None` never reports a change (reloads then
    /// come from SIGHUP or `POST /reload` only).
    pub fn new(paths: Vec<PathBuf>, poll: Option<Duration>) -> Self {
        FileFeed {
            paths: paths.into(),
            poll,
            seen: Arc::new(Mutex::new(Seen {
                current: None,
                pending: None,
                settled: None,
            })),
        }
    }

    /// The paths, in order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One poll: whether the files changed since the last read and have stayed the same since
    /// the previous poll. Blocking (file reads).
    pub fn poll(&self) -> bool {
        let mut seen = self.lock();
        if seen.settled.is_some() {
            return true;
        }
        let state = Snapshot::read(&self.paths);
        if seen.current.as_ref() == Some(&state) {
            seen.pending = None;
            return false;
        }
        if seen.pending.as_ref() != Some(&state) {
            tracing::debug!(paths = ?self.paths, "config change seen; reloading if it holds until the next poll");
            seen.pending = Some(state);
            return false;
        }
        seen.pending = None;
        seen.settled = Some(state);
        true
    }
}

impl ConfigFeed for FileFeed {
    fn describe(&self) -> String {
        self.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn read(&self) -> Result<Vec<ConfigSource>, FeedError> {
        let mut seen = self.lock();
        // A settled change is read as it was seen twice, not as it may be a moment later.
        let state = seen
            .settled
            .take()
            .unwrap_or_else(|| Snapshot::read(&self.paths));
        seen.pending = None;
        seen.current = Some(state.clone());
        state.sources(&self.paths)
    }

    fn changed(&self) -> Changed<'_> {
        Box::pin(async move {
            let Some(every) = self.poll else {
                return std::future::pending().await;
            };
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let feed = self.clone();
                match tokio::task::spawn_blocking(move || feed.poll()).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "config poll failed"),
                }
            }
        })
    }
}

fn file_state(path: &Path) -> FileState {
    // Read through the resolved target, so that the text belongs to the target recorded.
    let target = std::fs::canonicalize(path).ok();
    let text = ConfigSource::read_text(target.as_deref().unwrap_or(path))
        .map(Arc::from)
        .map_err(|e| (e.kind(), e.to_string()));
    FileState { target, text }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_change_is_reported_once_settled_and_read_as_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "one").unwrap();
        let feed = FileFeed::new(vec![path.clone()], None);
        assert_eq!(&*feed.read().unwrap()[0].text, "one");
        assert!(!feed.poll(), "nothing changed");
        std::fs::write(&path, "two").unwrap();
        assert!(!feed.poll(), "seen once");
        assert!(feed.poll(), "settled");
        // Written again after it settled: the read is what settled.
        std::fs::write(&path, "three").unwrap();
        assert_eq!(&*feed.read().unwrap()[0].text, "two");
        assert!(!feed.poll());
        assert!(feed.poll());
    }
}
