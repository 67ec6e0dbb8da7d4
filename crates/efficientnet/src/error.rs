use std::path::PathBuf;

/// Everything that can go wrong when configuring, loading or running an [`crate::EfficientNet`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config JSON does not parse.
    #[error("invalid EfficientNet config JSON{}: {source}", origin(.path))]
    ConfigJson {
        path: Option<PathBuf>,
        #[source]
        source: serde_json::Error,
    },
    /// A config field holds a value the model cannot be built from.
    #[error("invalid config field `{field}`: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    /// The checkpoint file could not be opened or parsed.
    #[error("cannot load checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// A tensor the model needs is not in the checkpoint.
    #[error("checkpoint {path}: missing key `{key}` (expected shape {expected:?})")]
    MissingKey {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
    },
    /// A tensor of the checkpoint has another shape than the model built from the config.
    #[error(
        "checkpoint {path}: key `{key}` has shape {actual:?}, the config expects {expected:?} \
         (checkpoint of another EfficientNet variant?)"
    )]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    /// A tensor of the checkpoint could not be converted (dtype, adapter, read error).
    #[error("checkpoint {path}: key `{key}`: {message}")]
    Tensor {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// The checkpoint holds vision tensors the config does not describe.
    #[error(
        "checkpoint {path}: unexpected key `{key}` (not part of the model described by the config; \
         checkpoint of another EfficientNet variant?)"
    )]
    UnexpectedKey { path: PathBuf, key: String },
    /// `pixel_values` has the wrong number of channels.
    #[error(
        "pixel_values has {actual} channels, the model expects {expected} ([batch, channels, height, width])"
    )]
    InputChannels { expected: usize, actual: usize },
    /// `pixel_values` has a zero-sized dimension or is too small for the strided convolutions.
    #[error("pixel_values of shape {shape:?} is too small: {message}")]
    InputSize { shape: [usize; 4], message: String },
}

fn origin(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
