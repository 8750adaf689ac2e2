//! Config text and where it came from.

use std::path::Path;
use std::sync::Arc;

/// The text of one config file (or another origin, such as `admin API`) with its name, used in
/// every finding's location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSource {
    /// The file's name as the user gave it.
    pub name: Arc<str>,
    /// The whole text.
    pub text: Arc<str>,
}

impl ConfigSource {
    /// A source from a name and text.
    pub fn new(name: impl Into<Arc<str>>, text: impl Into<Arc<str>>) -> Self {
        ConfigSource {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Reads a file.
    pub fn read(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref();
        let text = ConfigSource::read_text(path)?;
        Ok(ConfigSource::new(path.display().to_string(), text))
    }

    /// Reads a config file's text, never more than the size limit
    /// ([`Limits::max_bytes`](crate::yaml::Limits)): a larger file is an error naming the flag
    /// that raises the limit, and is never held in memory whole.
    pub fn read_text(path: &Path) -> std::io::Result<String> {
        use std::io::Read;
        let max = crate::yaml::limits().max_bytes;
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(max as u64 + 1)
            .read_to_string(&mut text)?;
        if text.len() > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "{}: larger than the config size limit of {max} bytes: split the config, or raise the limit with `--max-config-bytes`",
                    path.display()
                ),
            ));
        }
        Ok(text)
    }
}

impl ConfigSource {
    /// Reads config files as `weir validate` and `weir explain` take them: `-` is standard
    /// input; a directory contributes its `*.yaml` and `*.yml` files, recursively, in name
    /// order, skipping hidden entries (Kubernetes' `..data` ConfigMap links among them, so a
    /// mounted ConfigMap is read once). Every error names the path.
    pub fn read_paths(paths: &[impl AsRef<Path>]) -> std::io::Result<Vec<ConfigSource>> {
        use std::io::Read;
        let named = |path: &Path, what: &str, e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!("cannot read {what}{}: {e}", path.display()),
            )
        };
        let mut out = Vec::new();
        for path in paths {
            let path = path.as_ref();
            if path.as_os_str() == "-" {
                let mut text = String::new();
                // One byte over the size limit is enough for the parser to refuse it.
                std::io::stdin()
                    .take(crate::yaml::limits().max_bytes as u64 + 1)
                    .read_to_string(&mut text)
                    .map_err(|e| named(Path::new("standard input"), "", e))?;
                out.push(ConfigSource::new("<stdin>", text));
            } else if path.is_dir() {
                let mut found = Vec::new();
                yaml_files(path, &mut found).map_err(|e| named(path, "directory ", e))?;
                if found.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("directory {} holds no *.yaml or *.yml file", path.display()),
                    ));
                }
                for file in found {
                    out.push(ConfigSource::read(&file).map_err(|e| named(&file, "", e))?);
                }
            } else {
                out.push(ConfigSource::read(path).map_err(|e| named(path, "", e))?);
            }
        }
        Ok(out)
    }
}

/// The YAML files under a directory, recursively, sorted, hidden entries skipped.
fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
        {
            out.push(path);
        }
    }
    Ok(())
}
