//! An `align index` output opened for searching: the committed partitions' embeddings
//! (memory-mapped), their metadata (read on first use) and the HNSW indices.
//!
//! A row's id is its position in the concatenation of the partitions in name order, as
//! clip-retrieval numbers the rows of its `img_emb/` files; ids hold for one state of the
//! collection (a later `align index` that rewrites a partition renumbers the rows after it).

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use align_collection::layout::read_parquet;
use align_collection::{Layout, Settings};
use arrow_array::RecordBatch;
use serde_json::{Map, Value};

use crate::ann::{self, Ann};
use crate::error::{Error, Result};
use crate::exact::{Scored, by_score, top_k};
use crate::vectors::{Vectors, dot};
use crate::{Hit, Method, Modality};

/// Up to this many rows, [`Method::Auto`] scans every vector (a few milliseconds).
pub const EXACT_MAX_ROWS: usize = 50_000;

struct Part {
    name: String,
    /// Id of the partition's first row.
    first: u64,
    image: Vectors,
    text: Option<Vectors>,
    metadata: OnceLock<RecordBatch>,
}

impl Part {
    fn vectors(&self, modality: Modality) -> Option<&Vectors> {
        match modality {
            Modality::Image => Some(&self.image),
            Modality::Text => self.text.as_ref(),
        }
    }
}

/// One modality's HNSW index and which of its slots are still committed partitions.
struct Indexed {
    ann: Ann,
    /// Slot -> index into `parts`.
    live: HashMap<u32, usize>,
    /// Committed partitions the index does not hold (yet): scanned exactly.
    missing: Vec<usize>,
}

/// A collection opened for searching.
pub struct Collection {
    layout: Layout,
    settings: Settings,
    parts: Vec<Part>,
    rows: u64,
    image_ann: Option<Indexed>,
    text_ann: Option<Indexed>,
}

/// How [`Collection::open`] sets up searching.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// HNSW's ef: candidates kept while searching.
    pub expansion: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            expansion: ann::EXPANSION_SEARCH,
        }
    }
}

impl Collection {
    pub fn open(out: &Path, options: OpenOptions) -> Result<Self> {
        let layout = Layout::new(out);
        let settings = layout.read_settings()?.ok_or_else(|| Error::Corrupt {
            path: layout.settings(),
            message: "no such file: not an `align index` output".into(),
        })?;
        let mut parts = Vec::new();
        let mut rows = 0u64;
        for (name, image) in ann::committed(&layout, Modality::Image)? {
            if image.dim() != settings.dim {
                return Err(Error::Corrupt {
                    path: image.path().to_path_buf(),
                    message: format!(
                        "rows of {} values, the collection's are {}",
                        image.dim(),
                        settings.dim
                    ),
                });
            }
            let text = if settings.text {
                let t = Vectors::open(&Modality::Text.file(&layout, &name))?;
                if t.rows() != image.rows() || t.dim() != image.dim() {
                    return Err(Error::Corrupt {
                        path: t.path().to_path_buf(),
                        message: format!(
                            "shape [{}, {}] differs from its image embeddings'",
                            t.rows(),
                            t.dim()
                        ),
                    });
                }
                Some(t)
            } else {
                None
            };
            let first = rows;
            rows += image.rows() as u64;
            parts.push(Part {
                name,
                first,
                image,
                text,
                metadata: OnceLock::new(),
            });
        }
        let mut collection = Self {
            layout,
            settings,
            parts,
            rows,
            image_ann: None,
            text_ann: None,
        };
        collection.image_ann = collection.indexed(Modality::Image, options.expansion)?;
        if collection.settings.text {
            collection.text_ann = collection.indexed(Modality::Text, options.expansion)?;
        }
        Ok(collection)
    }

    fn indexed(&self, modality: Modality, expansion: usize) -> Result<Option<Indexed>> {
        let Some(ann) = Ann::open(&self.layout, modality, expansion)? else {
            return Ok(None);
        };
        let by_name: HashMap<&str, usize> = self
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let mut live = HashMap::new();
        for s in &ann.state.partitions {
            if let Some(&i) = by_name.get(s.name.as_str())
                && self.parts[i].image.rows() == s.rows
            {
                live.insert(s.slot, i);
            }
        }
        let held: std::collections::HashSet<usize> = live.values().copied().collect();
        let missing = (0..self.parts.len())
            .filter(|i| !held.contains(i))
            .collect();
        Ok(Some(Indexed { ann, live, missing }))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Rows (images) in the collection.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether `modality` can be searched (text: indexed with `--text`).
    pub fn has(&self, modality: Modality) -> bool {
        modality == Modality::Image || self.settings.text
    }

    /// Whether an HNSW index of `modality` exists.
    pub fn has_ann(&self, modality: Modality) -> bool {
        self.ann(modality).is_some()
    }

    fn ann(&self, modality: Modality) -> Option<&Indexed> {
        match modality {
            Modality::Image => self.image_ann.as_ref(),
            Modality::Text => self.text_ann.as_ref(),
        }
    }

    fn check(&self, modality: Modality) -> Result<()> {
        if self.has(modality) {
            Ok(())
        } else {
            Err(Error::Query(format!(
                "{}: indexed without --text, so there are no caption embeddings to search",
                self.layout.root.display()
            )))
        }
    }

    /// The part holding row `id`, and the row within it.
    fn locate(&self, id: u64) -> Result<(&Part, usize)> {
        let i = self.parts.partition_point(|p| p.first <= id);
        match i.checked_sub(1).map(|i| &self.parts[i]) {
            Some(p) if id < p.first + p.image.rows() as u64 => Ok((p, (id - p.first) as usize)),
            _ => Err(Error::Query(format!(
                "id {id} is not in the collection (it has {} rows)",
                self.rows
            ))),
        }
    }

    /// The stored embedding of row `id`.
    pub fn vector(&self, id: u64, modality: Modality) -> Result<Vec<f32>> {
        self.check(modality)?;
        let (part, row) = self.locate(id)?;
        Ok(part.vectors(modality).expect("checked").row(row))
    }

    /// The `k` rows whose `modality` embeddings have the largest inner product with `query`
    /// (an L2-normalised vector), best first, with that inner product.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        modality: Modality,
        method: Method,
    ) -> Result<Vec<Hit>> {
        self.check(modality)?;
        if query.len() != self.settings.dim {
            return Err(Error::Query(format!(
                "a query of {} values; this collection's embeddings have {}",
                query.len(),
                self.settings.dim
            )));
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Err(Error::Query(
                "the query vector has a NaN or infinite value".into(),
            ));
        }
        let indexed = match method {
            Method::Exact => None,
            Method::Ann => Some(self.ann(modality).ok_or_else(|| {
                Error::Query(format!(
                    "{}: no HNSW index (run `align index` on it again to build one)",
                    self.layout.root.display()
                ))
            })?),
            Method::Auto if self.rows as usize <= EXACT_MAX_ROWS => None,
            Method::Auto => self.ann(modality),
        };
        let scored = match indexed {
            None => self.scan(query, k, modality, 0..self.parts.len()),
            Some(ix) => {
                let found = ix
                    .ann
                    .search(query, k, |key| ix.live.contains_key(&ann::slot_of(key)))?;
                let mut scored: Vec<Scored> = found
                    .into_iter()
                    .filter_map(|(key, _)| {
                        let part = &self.parts[*ix.live.get(&ann::slot_of(key))?];
                        let row = ann::row_of(key);
                        let v = part.vectors(modality)?.row(row);
                        Some(Scored {
                            row: part.first + row as u64,
                            score: dot(&v, query),
                        })
                    })
                    .collect();
                scored.extend(self.scan(query, k, modality, ix.missing.iter().copied()));
                scored.sort_unstable_by(by_score);
                scored.truncate(k);
                scored
            }
        };
        Ok(scored
            .into_iter()
            .map(|s| Hit {
                id: s.row,
                similarity: s.score,
            })
            .collect())
    }

    /// Exact top-k over the given parts.
    fn scan(
        &self,
        query: &[f32],
        k: usize,
        modality: Modality,
        parts: impl Iterator<Item = usize>,
    ) -> Vec<Scored> {
        let mut best: Vec<Scored> = Vec::new();
        let mut scores = Vec::new();
        for i in parts {
            let part = &self.parts[i];
            let Some(vectors) = part.vectors(modality) else {
                continue;
            };
            scores.clear();
            vectors.scores(query, &mut scores);
            // Captions that were missing are stored as zero rows: never a match.
            let skip = |row: u64, score: f32| {
                modality == Modality::Text
                    && score == 0.0
                    && vectors
                        .row((row - part.first) as usize)
                        .iter()
                        .all(|&x| x == 0.0)
            };
            best.extend(top_k(&scores, part.first, k, skip));
            if best.len() > 4 * k.max(16) {
                best.sort_unstable_by(by_score);
                best.truncate(k);
            }
        }
        best.sort_unstable_by(by_score);
        best.truncate(k);
        best
    }

    /// The metadata rows of `ids` as JSON objects (the parquet columns; nulls as `null`).
    pub fn metadata(&self, ids: &[u64]) -> Result<Vec<Map<String, Value>>> {
        ids.iter().map(|&id| self.metadata_row(id)).collect()
    }

    fn metadata_row(&self, id: u64) -> Result<Map<String, Value>> {
        let (part, row) = self.locate(id)?;
        let path = self.layout.metadata(&part.name);
        let batch = match part.metadata.get() {
            Some(b) => b,
            None => {
                let b = read_parquet(&path)?;
                if b.num_rows() != part.image.rows() {
                    return Err(Error::Corrupt {
                        path,
                        message: format!(
                            "{} rows, its embeddings have {}",
                            b.num_rows(),
                            part.image.rows()
                        ),
                    });
                }
                let _ = part.metadata.set(b);
                part.metadata.get().expect("just set")
            }
        };
        let corrupt = |e: arrow_schema::ArrowError| Error::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut writer = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::JsonArray>(Vec::new());
        writer.write(&batch.slice(row, 1)).map_err(corrupt)?;
        writer.finish().map_err(corrupt)?;
        let rows: Vec<Map<String, Value>> =
            serde_json::from_slice(&writer.into_inner()).map_err(|e| Error::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
        rows.into_iter().next().ok_or_else(|| Error::Corrupt {
            path,
            message: format!("no row {row}"),
        })
    }
}
