use std::path::PathBuf;

/// Everything that can go wrong when configuring, loading or running an [`crate::EfficientNet`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    /// Reading `config.json` or the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::Error),
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
