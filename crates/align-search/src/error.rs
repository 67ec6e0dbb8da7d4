use std::path::PathBuf;

/// Everything that can go wrong opening or searching a collection. Messages name the file or
/// the input at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error(transparent)]
    Io(#[from] align_collection::IoError),
    /// The collection's own files (settings, manifests, metadata).
    #[error(transparent)]
    Collection(#[from] align_collection::Error),
    /// A file in the collection is not what `align index` writes there.
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    /// usearch refused an operation on the HNSW index file.
    #[error("{}: {message}", path.display())]
    Ann { path: PathBuf, message: String },
    /// A query that cannot be run (wrong width, no vectors, unknown id, bad expression).
    #[error("{0}")]
    Query(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
