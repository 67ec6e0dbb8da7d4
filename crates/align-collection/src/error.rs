use std::path::PathBuf;

/// Everything that can stop an indexing run. Bad samples (unreadable, undecodable) do not stop
/// it: they are recorded in `OUT/failures/` instead. Messages name the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// An input given on the command line does not exist.
    #[error("{}: no such file or directory", path.display())]
    MissingInput { path: PathBuf },
    /// A file in OUT is not what `align index` writes there.
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    /// OUT was made with other settings than this run's.
    #[error("{}: {message}", path.display())]
    Settings { path: PathBuf, message: String },
    /// Another run holds the lock of this shard of OUT.
    #[error("{}: another `align index` is writing this shard of the collection", path.display())]
    Locked { path: PathBuf },
    /// A `--shard` value that is not `I/N` with `I < N`.
    #[error("shard `{0}`: expected I/N with 0 <= I < N (e.g. 0/4)")]
    Shard(String),
    /// The model failed on a batch (not a bad sample: the run stops).
    #[error("model: {0}")]
    Model(String),
    /// Parquet or Arrow refused the metadata of a partition.
    #[error("{}: {message}", path.display())]
    Parquet { path: PathBuf, message: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A file or folder that could not be read or written, and why: the `Io` error of this crate,
/// align-eval and align-search alike.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", path.display())]
pub struct IoError {
    pub path: PathBuf,
    /// Shown in the message, deliberately not the `source()`: one-line output has no repeats.
    pub error: std::io::Error,
}

/// Maps an `io::Error` to an [`IoError`] naming `path` (`?` makes it an `Error::Io`).
pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IoError {
    let path = path.into();
    move |error| IoError { path, error }
}
