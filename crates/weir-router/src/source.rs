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
