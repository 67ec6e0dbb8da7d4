//! Image collections for ALIGN: what `align index` reads and writes.
//!
//! - [`input`]: folders (walked in sorted order, `NAME.txt` / `NAME.json` sidecars), single
//!   images and webdataset tar shards (as img2dataset writes them);
//! - [`layout`]: the output folder in clip-retrieval's layout (`img_emb/*.npy`,
//!   `text_emb/*.npy`, `metadata/*.parquet`), plus failures and per-partition manifests;
//! - [`index()`]: the resumable, incremental, shardable pipeline (listing, decoding and
//!   embedding overlapped through bounded channels), model-agnostic through [`Embedder`];
//! - [`pipeline`]: the stages every pass over a collection shares (`align eval` too).

mod error;
pub mod index;
pub mod input;
pub mod layout;
pub mod metadata;
pub mod pipeline;
pub mod shard;

pub use error::{Error, IoError, Result, io};
pub use index::{IndexOptions, Summary, index};
pub use input::{ListOptions, Listed, Location, Sample};
pub use layout::{EmbDtype, Layout, Settings};
pub use pipeline::{Embedder, Progress};
pub use shard::Shard;
