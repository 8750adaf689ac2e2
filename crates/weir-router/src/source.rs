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
        let text = std::fs::read_to_string(path)?;
        Ok(ConfigSource::new(path.display().to_string(), text))
    }
}
