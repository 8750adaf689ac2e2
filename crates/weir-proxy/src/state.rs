//! The state file: the [`AdminState`] (weights, rollback latches, promotions set through the
//! admin API) kept across restarts. Written atomically before a write is acknowledged: the
//! JSON goes to a temporary file in the same directory, is fsynced, renamed over the state
//! file, and the directory is fsynced, so that a crash leaves the old state or the new one,
//! never half of one.
//!
//! Default path: next to the first config file, `<config>.weir-state.json` (in Kubernetes,
//! point `--state` at an `emptyDir` volume: it survives container restarts).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use weir_router::LiveTable;
use weir_router::state::{AdminState, STATE_VERSION};

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a state this version of weir wrote.
    #[error("state file {path} is corrupt: {message}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong, with the line and column.
        message: String,
    },
}

/// The state file of one sidecar.
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }

    /// The default state file of a config file: `<config>.weir-state.json`.
    pub fn next_to(config: &Path) -> Self {
        let mut name = config.as_os_str().to_owned();
        name.push(".weir-state.json");
        StateFile::new(name)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state; `None` when there is no file yet.
    pub fn load(&self) -> Result<Option<AdminState>, StateError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let state: AdminState = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Corrupt {
                path: self.path.clone(),
                message: format!(
                    "version {} (this weir reads version {STATE_VERSION})",
                    state.version
                ),
            });
        }
        Ok(Some(state))
    }

    /// Writes `state` atomically: temporary file, fsync, rename, fsync of the directory.
    pub fn save(&self, state: &AdminState) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let mut text =
            serde_json::to_string_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
        text.push('\n');
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(&dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)
    }

    /// Moves a corrupt file aside to `<path>.corrupt` (for the post-mortem), so that the next
    /// save starts afresh; returns where it went.
    pub fn set_aside(&self) -> Result<PathBuf, StateError> {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".corrupt");
        let aside = PathBuf::from(name);
        std::fs::rename(&self.path, &aside).map_err(|source| StateError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(aside)
    }
}

/// What `GET /routes` says about the state file: where it is and what is wrong with it.
#[derive(Debug, Default)]
pub struct StateStatus {
    file: Option<StateFile>,
    problem: Mutex<Option<String>>,
}

impl StateStatus {
    /// The state file, if the sidecar keeps one.
    pub fn file(&self) -> Option<&StateFile> {
        self.file.as_ref()
    }

    /// The last problem with the state file (corrupt at start, a save that failed); `None`
    /// when the last save went through.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }
}

/// Reads the state file (when there is one) and starts serving `sources` with it re-applied.
///
/// A state file that cannot be read is never fatal and never re-enables a canary: it is moved
/// aside to `<path>.corrupt`, reported, and every VirtualService is rolled back (latched)
/// until an operator releases it. From then on every admin write is saved to the file.
pub(crate) fn start_live(
    sources: &[weir_router::ConfigSource],
    file: Option<StateFile>,
) -> Result<(LiveTable, weir_router::Findings, Arc<StateStatus>), weir_router::Refused> {
    let loaded = file.as_ref().map(StateFile::load);
    let (saved, unreadable) = match loaded {
        None | Some(Ok(None)) => (None, None),
        Some(Ok(Some(state))) => (Some(state), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let (live, findings) = match &saved {
        Some(state) => LiveTable::from_sources_with_state(sources, state.clone())?,
        None => LiveTable::from_sources(sources)?,
    };
    let status = Arc::new(StateStatus {
        file: file.clone(),
        problem: Mutex::new(None),
    });
    let Some(file) = file else {
        return Ok((live, findings, status));
    };
    {
        let (file, status) = (file.clone(), Arc::clone(&status));
        live.persist_with(Box::new(move |state| match file.save(state) {
            Ok(()) => {
                status.set_problem(None);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "the admin state could not be saved");
                status.set_problem(Some(format!("not saved: {e}")));
                Err(e.into())
            }
        }));
    }
    if let Some(e) = unreadable {
        let aside = file
            .set_aside()
            .map(|p| format!("moved aside to {}", p.display()))
            .unwrap_or_else(|e| format!("could not be moved aside: {e}"));
        let problem = format!(
            "{e} ({aside}): every VirtualService was rolled back (latched) so that no canary is re-enabled; once the weights are known, release with `weir rollback --release`"
        );
        tracing::error!("{problem}");
        // Saves a fresh state holding the latches.
        if let Err(refused) = live.rollback(None) {
            tracing::error!(
                "the rollback after a corrupt state failed:\n{}",
                refused.findings
            );
        }
        status.set_problem(Some(problem));
    } else if saved.is_some_and(|s| s != live.admin_state()) {
        // Parts of the state no longer apply: save what does.
        if let Err(e) = file.save(&live.admin_state()) {
            status.set_problem(Some(format!("not saved: {e}")));
        }
    }
    Ok((live, findings, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_loads_back_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::next_to(&dir.path().join("config.yaml"));
        assert!(file.path().ends_with("config.yaml.weir-state.json"));
        assert!(file.load().unwrap().is_none(), "no file yet");
        let mut state = AdminState::default();
        state
            .virtual_services
            .insert("ns/a".into(), Default::default());
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn corrupt_and_foreign_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("s.json"));
        for text in [
            "{\"version\": 1, \"virtual_services\": {",
            "",
            "{\"version\": 7}",
            "{\"version\": 1, \"surprise\": true}",
        ] {
            std::fs::write(file.path(), text).unwrap();
            match file.load() {
                Err(e @ StateError::Corrupt { .. }) => {
                    assert!(e.to_string().contains("s.json"), "{e}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let aside = file.set_aside().unwrap();
        assert!(aside.exists() && !file.path().exists());
    }
}
