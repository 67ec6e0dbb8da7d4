use std::path::PathBuf;

/// Errors returned by the `bert` crate. Every variant names the file, key or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported config value in {path}: {message}")]
    UnsupportedConfig { path: PathBuf, message: String },
    #[error("cannot read checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("checkpoint {path} is missing tensor(s): {}", keys.join(", "))]
    MissingKeys { path: PathBuf, keys: Vec<String> },
    #[error("checkpoint {path}: tensor `{key}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("invalid input: {0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, Error>;
