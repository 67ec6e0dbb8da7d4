use std::path::PathBuf;

/// `std::io::Error` kept as data (see [`Error::Io`]).
#[derive(Debug)]
pub struct IoError(pub std::io::Error);

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<std::io::Error> for IoError {
    fn from(e: std::io::Error) -> Self {
        Self(e)
    }
}

/// `serde_json::Error` kept as data (see [`Error::Io`]).
#[derive(Debug)]
pub struct JsonError(pub serde_json::Error);

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> Self {
        Self(e)
    }
}

/// Everything that can go wrong in `align-processor`. Messages name the file or key involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read. (`error` is shown in the message and deliberately not
    /// the `source()`, so one-line `{:#}` output has no repeats.)
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: IoError },
    /// A config file is not valid JSON or has a field of the wrong type.
    #[error("{path}: invalid JSON: {error}")]
    Json { path: PathBuf, error: JsonError },
    /// A config field has a value we cannot honour.
    #[error("{path}: field `{key}`: expected {expected}, got {actual}")]
    Config {
        path: PathBuf,
        key: &'static str,
        expected: &'static str,
        actual: String,
    },
    /// No usable file was found in a model directory.
    #[error("{dir}: no {what} found (looked for {looked_for})")]
    Missing {
        dir: PathBuf,
        what: &'static str,
        looked_for: &'static str,
    },
    /// An image could not be decoded (corrupt, unsupported, or over the decoding limits).
    #[error("{source_name}: cannot decode image: {message}")]
    Decode {
        source_name: String,
        message: String,
    },
    /// Images of a batch ended up with different sizes (only possible without resize and crop).
    #[error("{source_name}: preprocessed size {actual:?} differs from the batch's {expected:?}")]
    BatchShape {
        source_name: String,
        expected: (usize, usize),
        actual: (usize, usize),
    },
    /// The tokenizer could not be built or failed on an input.
    #[error("{context}: tokenizer error: {message}")]
    Tokenizer { context: String, message: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
