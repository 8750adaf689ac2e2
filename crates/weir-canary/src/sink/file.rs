//! The VirtualService file, rewritten in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use weir_router::yaml::{Document, parse_stream};

use super::{AdminSink, Confirmation, Drift, SinkError, Split, WeightSink};
use crate::spec::Target;

/// The annotation naming a VirtualService's stable subset.
const STABLE_ANNOTATION: &str = "weir.dev/stable-subset";

/// A [`WeightSink`] that rewrites the weights of the split rule in a VirtualService YAML file
/// (a ConfigMap's source, or the file a sidecar watches).
///
/// Only the weight numbers change (and, on promotion, the `weir.dev/stable-subset`
/// annotation); comments, order and formatting stay byte for byte. The new text is parsed
/// again and checked before it replaces the file, through a temporary file and a rename, so
/// a reader never sees half a file.
///
/// A written file is not in force until the sidecars reload it. With the sidecars' admin
/// APIs ([`confirmed_by`](FileSink::confirmed_by)) the sink reads their `/routes`: a change
/// they do not serve yet comes back in [`Confirmation::pending`] ("written, not yet
/// confirmed"), [`verify`](WeightSink::verify) reports it as [`Drift::Pending`] until they
/// do (for up to [`confirm_within`](FileSink::confirm_within), a plain drift after that),
/// and a promotion waits for them. A rollback also latches every sidecar through its admin
/// API (`POST /rollback`): 0% is in force at once rather than at the next reload, and the
/// latch points a dark-launch rule at the stable subset too, which a weight in the file
/// cannot do. [`release`](WeightSink::release) releases that latch. Without admin APIs a
/// write is all the sink can do and know.
pub struct FileSink {
    path: PathBuf,
    readers: Option<AdminSink>,
    confirm_within: Duration,
    /// The split last written and when, for [`Drift::Pending`].
    written: Option<(Split, Instant)>,
}

/// How long sidecars may take to load a written file before it counts as a drift: two
/// polls of the default 1 s file watch, and room for a loaded machine.
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);
/// How often a promotion looks for the sidecars to serve it.
const CONFIRM_POLL: Duration = Duration::from_millis(50);

#[derive(Deserialize)]
struct MiniVirtualService {
    #[serde(default)]
    metadata: MiniMetadata,
    #[serde(default)]
    spec: MiniSpec,
}

#[derive(Default, Deserialize)]
struct MiniMetadata {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
struct MiniSpec {
    #[serde(default)]
    http: Vec<MiniRule>,
}

#[derive(Deserialize)]
struct MiniRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    route: Vec<MiniRoute>,
}

#[derive(Deserialize)]
struct MiniRoute {
    #[serde(default)]
    destination: MiniDestination,
    #[serde(default)]
    weight: Option<i64>,
}

#[derive(Default, Deserialize)]
struct MiniDestination {
    #[serde(default)]
    subset: Option<String>,
}

/// A replacement of `text[start..end]`.
struct Edit {
    start: usize,
    end: usize,
    with: String,
}

impl FileSink {
    /// A sink rewriting the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSink {
            path: path.into(),
            readers: None,
            confirm_within: CONFIRM_WITHIN,
            written: None,
        }
    }

    /// Confirms every write on these sidecars' `/routes` and latches them on a rollback.
    pub fn confirmed_by(mut self, readers: AdminSink) -> Self {
        self.readers = Some(readers);
        self
    }

    /// How long the sidecars may take to load a write (10 s by default).
    pub fn confirm_within(mut self, within: Duration) -> Self {
        self.confirm_within = within;
        self
    }

    /// The sidecars that do not serve `split` yet.
    fn pending(&self, target: &Target, split: Split, promoted: bool) -> Vec<String> {
        self.readers
            .as_ref()
            .map_or_else(Vec::new, |r| r.not_serving(target, split, promoted))
    }

    fn fail(&self, reason: impl Into<String>) -> SinkError {
        SinkError::Failed {
            by: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// Rewrites the split to `split`, and the stable annotation to `stable` when given.
    fn rewrite(
        &self,
        target: &Target,
        split: Split,
        stable: Option<&str>,
    ) -> Result<Confirmation, SinkError> {
        let started = Instant::now();
        // Write where the data is: a ConfigMap mount is a chain of symlinks.
        let path = std::fs::canonicalize(&self.path).map_err(|e| self.fail(e.to_string()))?;
        let text = std::fs::read_to_string(&path).map_err(|e| self.fail(e.to_string()))?;
        let edits = self.edits(&text, target, split, stable)?;
        let mut new = text.clone();
        for e in edits.iter().rev() {
            new.replace_range(e.start..e.end, &e.with);
        }
        // The same search on the new text must find exactly what was meant.
        let check = self.edits(&new, target, split, stable)?;
        if check.iter().any(|e| new[e.start..e.end] != e.with) {
            return Err(
                self.fail("the rewritten file does not read back as written; left unchanged")
            );
        }
        // An unchanged file is not written again: the sidecars would see nothing new.
        if new != text {
            write_atomically(&path, &new).map_err(|e| self.fail(e.to_string()))?;
        }
        Ok(Confirmation {
            took: started.elapsed(),
            generations: Vec::new(),
            pending: Vec::new(),
        })
    }

    /// The edits that set the split (and the annotation) in `text`, sorted by position.
    fn edits(
        &self,
        text: &str,
        target: &Target,
        split: Split,
        stable: Option<&str>,
    ) -> Result<Vec<Edit>, SinkError> {
        let file: Arc<str> = self.path.display().to_string().into();
        let docs = parse_stream(&file, text).map_err(|f| self.fail(f.to_string()))?;
        let doc = docs
            .iter()
            .flat_map(|d| {
                if d.str_field("kind") == Some("List") {
                    d.list_items()
                } else {
                    vec![d.clone()]
                }
            })
            .find(|d| {
                d.str_field("kind") == Some("VirtualService")
                    && d.nested_str("metadata", "name") == Some(target.virtual_service.as_str())
            })
            .ok_or_else(|| {
                self.fail(format!(
                    "no VirtualService named {:?} in the file",
                    target.virtual_service
                ))
            })?;
        let vs: MiniVirtualService = doc
            .deserialize(&mut |_| {})
            .map_err(|f| self.fail(f.to_string()))?;
        let index = vs
            .spec
            .http
            .iter()
            .position(|rule| match &target.rule {
                Some(name) => rule.name.as_deref() == Some(name),
                None => {
                    let has = |s: &str| {
                        rule.route
                            .iter()
                            .any(|r| r.destination.subset.as_deref() == Some(s))
                    };
                    has(&target.stable_subset) && has(&target.canary_subset)
                }
            })
            .ok_or_else(|| {
                self.fail(match &target.rule {
                    Some(name) => format!(
                        "VirtualService {:?} has no http rule named {name:?}",
                        target.virtual_service
                    ),
                    None => format!(
                        "VirtualService {:?} has no http rule routing to both {:?} and {:?}",
                        target.virtual_service, target.stable_subset, target.canary_subset
                    ),
                })
            })?;
        let lines = LineIndex::new(text);
        let mut edits = Vec::new();
        for (i, route) in vs.spec.http[index].route.iter().enumerate() {
            let weight = match route.destination.subset.as_deref() {
                Some(s) if s == target.stable_subset => split.stable,
                Some(s) if s == target.canary_subset => split.canary,
                // A third destination would make the sum wrong: refuse rather than guess.
                _ if route.weight.unwrap_or(0) != 0 => {
                    return Err(self.fail(format!(
                        "http[{index}].route[{i}] is neither the stable nor the canary subset and has a weight: set it to 0 or name the rule"
                    )));
                }
                _ => continue,
            };
            let path = format!("spec.http[{index}].route[{i}].weight");
            let span = lines.value_after_key(&doc, &path, "weight", text).ok_or_else(|| {
                self.fail(format!(
                    "spec.http[{index}].route[{i}] has no `weight:` to rewrite: write the weights explicitly"
                ))
            })?;
            edits.push(Edit {
                start: span.0,
                end: span.1,
                with: weight.to_string(),
            });
        }
        if let Some(stable) = stable {
            edits.push(self.annotation_edit(&doc, &vs.metadata, &lines, text, stable)?);
        }
        edits.sort_by_key(|e| e.start);
        Ok(edits)
    }

    /// Sets `weir.dev/stable-subset` to `stable`: rewrites its value, or inserts it as the
    /// first annotation (and the `annotations:` block itself when there is none).
    fn annotation_edit(
        &self,
        doc: &Document,
        meta: &MiniMetadata,
        lines: &LineIndex,
        text: &str,
        stable: &str,
    ) -> Result<Edit, SinkError> {
        let key_path = format!("metadata.annotations.{STABLE_ANNOTATION}");
        if meta.annotations.contains_key(STABLE_ANNOTATION) {
            let span = lines
                .value_after_key(doc, &key_path, STABLE_ANNOTATION, text)
                .ok_or_else(|| {
                    self.fail("cannot find the value of the stable-subset annotation")
                })?;
            return Ok(Edit {
                start: span.0,
                end: span.1,
                with: stable.to_string(),
            });
        }
        let block_style =
            "write metadata in block style (one key per line) so that the annotation can be added";
        let (parent, first_child, prefix) = match meta.annotations.keys().next() {
            Some(_) => {
                let first = meta
                    .annotations
                    .keys()
                    .map(|k| doc.location(&format!("metadata.annotations.{k}")))
                    .min_by_key(|l| (l.line, l.column))
                    .expect("non-empty");
                (doc.location("metadata.annotations"), first, String::new())
            }
            None => {
                let parent = doc.location("metadata");
                // A missing key falls back to its parent's position: skip those.
                let first = ["name", "namespace", "labels"]
                    .iter()
                    .map(|k| doc.location(&format!("metadata.{k}")))
                    .filter(|l| (l.line, l.column) != (parent.line, parent.column))
                    .min_by_key(|l| (l.line, l.column))
                    .ok_or_else(|| self.fail(block_style))?;
                (parent, first, "annotations:\n".to_string())
            }
        };
        if first_child.line <= parent.line || first_child.column == 0 {
            return Err(self.fail(block_style));
        }
        let indent = " ".repeat(first_child.column as usize - 1);
        let with = if prefix.is_empty() {
            format!("{indent}{STABLE_ANNOTATION}: {stable}\n")
        } else {
            format!("{indent}annotations:\n{indent}  {STABLE_ANNOTATION}: {stable}\n")
        };
        let at = lines.start_of(first_child.line as usize);
        Ok(Edit {
            start: at,
            end: at,
            with,
        })
    }
}

/// Byte offsets of line starts, to turn the parser's 1-based (line, column) into offsets.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn start_of(&self, line: usize) -> usize {
        self.starts[line.saturating_sub(1).min(self.starts.len() - 1)]
    }

    /// The byte span of the scalar after `key:` where `path`'s key stands; `None` when the key
    /// is not written there (the parser fell back to a parent) or the value is not a plain
    /// scalar on the same line.
    fn value_after_key(
        &self,
        doc: &Document,
        path: &str,
        key: &str,
        text: &str,
    ) -> Option<(usize, usize)> {
        let loc = doc.location(path);
        if loc.line == 0 || loc.column == 0 {
            return None;
        }
        let line_start = self.start_of(loc.line as usize);
        let line_end = text[line_start..]
            .find('\n')
            .map_or(text.len(), |i| line_start + i);
        let line = &text[line_start..line_end];
        let col = line.char_indices().nth(loc.column as usize - 1)?.0;
        let rest = line[col..]
            .strip_prefix(['"', '\''])
            .unwrap_or(&line[col..]);
        let after_key = rest.strip_prefix(key)?;
        let after_quote = after_key.strip_prefix(['"', '\'']).unwrap_or(after_key);
        let value = after_quote.trim_start().strip_prefix(':')?;
        let value_trimmed = value.trim_start();
        // Every slice above is a suffix of the line.
        let start = line_start + (line.len() - value_trimmed.len());
        let len = value_trimmed
            .find(|c: char| c.is_whitespace() || c == ',' || c == '}' || c == '#')
            .unwrap_or(value_trimmed.len());
        (len > 0).then_some((start, start + len))
    }
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.weir-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl WeightSink for FileSink {
    fn set_weights(&mut self, target: &Target, split: Split) -> Result<Confirmation, SinkError> {
        let mut c = self.rewrite(target, split, None)?;
        if self.written.is_none_or(|(s, _)| s != split) {
            self.written = Some((split, Instant::now()));
        }
        c.pending = self.pending(target, split, false);
        Ok(c)
    }

    fn rollback(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        let started = Instant::now();
        // The latch first: 0% in force now, the dark launch on the stable subset too. The
        // file follows, so that it says what is served.
        let latched = self.readers.as_mut().map(|r| r.rollback(target));
        let written = self.rewrite(target, Split::canary(0), None);
        self.written = Some((Split::canary(0), Instant::now()));
        match (latched, written) {
            (Some(Err(e)), _) => Err(e),
            (None, Err(e)) => Err(e),
            (Some(Ok(c)), written) => Ok(Confirmation {
                took: started.elapsed(),
                generations: c.generations,
                // In force through the latch; a file left unwritten is still worth a line.
                pending: written
                    .err()
                    .map(|e| format!("the file still says otherwise: {e}"))
                    .into_iter()
                    .collect(),
            }),
            (None, Ok(c)) => Ok(c),
        }
    }

    fn promote(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        let started = Instant::now();
        let mut c = self.rewrite(target, Split::canary(100), Some(&target.canary_subset))?;
        self.written = Some((Split::canary(100), Instant::now()));
        // The end of the run: nothing left to guard, so wait for the sidecars to serve it.
        loop {
            c.pending = self.pending(target, Split::canary(100), true);
            if c.pending.is_empty() || started.elapsed() >= self.confirm_within {
                break;
            }
            std::thread::sleep(CONFIRM_POLL);
        }
        c.took = started.elapsed();
        Ok(c)
    }

    fn release(&mut self, target: &Target) -> Result<Confirmation, SinkError> {
        match self.readers.as_mut() {
            Some(r) => r.release(target),
            None => Ok(Confirmation::default()),
        }
    }

    fn describe(&self) -> String {
        match &self.readers {
            None => format!("file {}", self.path.display()),
            Some(r) => format!(
                "file {}, confirmed on the {}",
                self.path.display(),
                r.describe()
            ),
        }
    }

    fn preflight(&mut self, target: &Target) -> Result<(), SinkError> {
        match self.readers.as_mut() {
            Some(r) => r.preflight(target),
            None => Ok(()),
        }
    }

    fn verify(&mut self, target: &Target, expected: Split) -> Vec<Drift> {
        let Some(r) = self.readers.as_mut() else {
            return Vec::new();
        };
        let loading = self
            .written
            .is_some_and(|(s, at)| s == expected && at.elapsed() < self.confirm_within);
        r.verify(target, expected)
            .into_iter()
            .map(|d| match d {
                Drift::Weights {
                    replica,
                    in_force,
                    expected,
                } if loading => Drift::Pending {
                    replica,
                    in_force,
                    expected,
                },
                d => d,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
