use std::path::PathBuf;

/// Errors returned by the `bert` crate. Every variant names the file, key or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid config {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported config value in {path}: {message}")]
    UnsupportedConfig { path: PathBuf, message: String },
    /// Reading `config.json` or the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::Error),
    #[error("invalid input: {0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, Error>;
