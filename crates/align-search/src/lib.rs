//! Nearest-neighbour search over a collection written by `align index` (clip-retrieval's
//! layout): exact scans of the memory-mapped embeddings for small collections, a usearch HNSW
//! index above [`EXACT_MAX_ROWS`] rows.
//!
//! ```no_run
//! use align_search::{Collection, Method, Modality, OpenOptions};
//! # fn main() -> align_search::Result<()> {
//! let collection = Collection::open("photos-index".as_ref(), OpenOptions::default())?;
//! let query = collection.vector(0, Modality::Image)?; // or a text or image embedding
//! for hit in collection.search(&query, 10, Modality::Image, Method::Auto)? {
//!     println!("{} {:.3}", hit.id, hit.similarity);
//! }
//! # Ok(()) }
//! ```

pub mod ann;
mod collection;
pub mod dedup;
mod error;
pub mod exact;
pub mod query;
pub mod vectors;

use std::path::PathBuf;

use align_collection::Layout;

pub use collection::{Collection, EXACT_MAX_ROWS, OpenOptions};
pub use error::{Error, Result};

/// Which embeddings to search: the images', or the captions' (`align index --text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    Image,
    Text,
}

impl Modality {
    /// `image` or `text`, as clip-back's `modality` field spells them.
    pub fn name(self) -> &'static str {
        match self {
            Modality::Image => "image",
            Modality::Text => "text",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "image" => Some(Modality::Image),
            "text" => Some(Modality::Text),
            _ => None,
        }
    }

    /// The embedding file of partition `p`.
    pub fn file(self, layout: &Layout, p: &str) -> PathBuf {
        match self {
            Modality::Image => layout.img_emb(p),
            Modality::Text => layout.text_emb(p),
        }
    }
}

/// How to find the nearest rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Exact up to [`EXACT_MAX_ROWS`] rows or without an HNSW index; HNSW above.
    Auto,
    /// Scan every vector.
    Exact,
    /// The HNSW index (an error if there is none).
    Ann,
}

/// A row of the collection and its similarity (inner product of L2-normalised embeddings)
/// to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: u64,
    pub similarity: f32,
}
