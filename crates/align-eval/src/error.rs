use std::path::PathBuf;

/// Everything that stops an evaluation. Unreadable images do not: they are counted and
/// reported. Messages name the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] align_collection::IoError),
    /// The dataset is not laid out as expected (no classes, a class without images...).
    #[error("{}: {message}", path.display())]
    Dataset { path: PathBuf, message: String },
    /// A class-name or template file is unusable.
    #[error("{}:{line}: {message}", path.display())]
    List {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Reading or writing through the collection layer failed.
    #[error(transparent)]
    Collection(#[from] align_collection::Error),
    /// The model failed on a batch.
    #[error("model: {0}")]
    Model(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
