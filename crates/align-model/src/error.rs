use std::path::PathBuf;

/// Errors of the `align-model` crate; each names the file, key or shape at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the converted model's files.
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{dir}: {message}")]
    MissingFile { dir: PathBuf, message: String },
    /// Reading `config.json` or the weights.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::Error),
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("{0}")]
    Mismatch(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("cannot get {id} from the Hugging Face hub or its cache at {}: {message}", cache.display())]
    Hub {
        id: String,
        cache: PathBuf,
        message: String,
    },
    #[error(transparent)]
    Text(#[from] bert::Error),
    #[error(transparent)]
    Vision(#[from] efficientnet::Error),
    #[error(transparent)]
    Processor(#[from] align_processor::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
