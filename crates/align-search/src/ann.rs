//! The HNSW index of a collection (usearch), kept beside the embeddings:
//!
//! ```text
//! OUT/ann/image.json            which partitions the index holds, under which key slot
//! OUT/ann/image-G.usearch       the index itself (generation G); memory-mapped when searched
//! OUT/ann/text.json, text-G.usearch    the same for caption embeddings (`--text`)
//! ```
//!
//! A key is `slot << 32 | row`: a partition keeps its slot for life, so adding partitions or
//! dropping one never renumbers the others. [`update`] runs at the end of every `align index`
//! (under `OUT/ann/.lock`, so shards finishing together take turns): it removes the keys of
//! partitions that are gone and adds the rows of new ones. It writes the next generation under
//! a temporary name, renames it, then commits by rewriting the JSON; a search reads the JSON
//! first, and ignores keys of partitions that are no longer committed (scanning exactly the
//! committed ones the index does not hold yet), so results always match the committed rows.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use align_collection::layout::write_json;
use align_collection::{IoError, Layout, io};
use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::Modality;
use crate::error::{Error, Result};
use crate::vectors::Vectors;

/// HNSW graph degree (usearch's `connectivity`, HNSW's M).
pub const CONNECTIVITY: usize = 16;
/// Candidates kept while inserting (HNSW's efConstruction).
pub const EXPANSION_ADD: usize = 128;
/// Candidates kept while searching (HNSW's ef), when the caller gives none.
pub const EXPANSION_SEARCH: usize = 64;

/// `OUT/ann/MODALITY.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The index file in `OUT/ann/`.
    pub file: String,
    pub generation: u64,
    pub dim: usize,
    pub next_slot: u32,
    pub partitions: Vec<Slot>,
    /// Keys removed since the index was last built from scratch.
    pub removed: u64,
}

/// A partition held by the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub name: String,
    pub slot: u32,
    pub rows: usize,
}

pub fn key(slot: u32, row: usize) -> u64 {
    (u64::from(slot) << 32) | row as u64
}

pub fn slot_of(key: u64) -> u32 {
    (key >> 32) as u32
}

pub fn row_of(key: u64) -> usize {
    (key & 0xffff_ffff) as usize
}

pub fn dir(layout: &Layout) -> PathBuf {
    layout.root.join("ann")
}

fn state_path(layout: &Layout, modality: Modality) -> PathBuf {
    dir(layout).join(format!("{}.json", modality.name()))
}

/// Reads `OUT/ann/MODALITY.json`, if present.
pub fn read_state(layout: &Layout, modality: Modality) -> Result<Option<State>> {
    let path = state_path(layout, modality);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path,
                message: format!("not an index state written by `align index`: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IoError { path, error: e }.into()),
    }
}

fn options(dim: usize) -> IndexOptions {
    IndexOptions {
        dimensions: dim,
        metric: MetricKind::IP,
        quantization: ScalarKind::F16,
        connectivity: CONNECTIVITY,
        expansion_add: EXPANSION_ADD,
        expansion_search: EXPANSION_SEARCH,
        multi: false,
    }
}

fn ann_err<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Ann {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// What [`update`] did for one modality.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub added: u64,
    pub removed: u64,
    /// The vectors the index holds now.
    pub size: u64,
}

/// The committed partitions that have rows of `modality`, with their vectors.
pub fn committed(layout: &Layout, modality: Modality) -> Result<Vec<(String, Vectors)>> {
    let mut parts = Vec::new();
    for p in layout.partitions()? {
        let path = modality.file(layout, &p);
        if path.is_file() {
            parts.push((p, Vectors::open(&path)?));
        }
    }
    Ok(parts)
}

/// Brings the indices of `out` up to date with its committed partitions (see the module docs),
/// adding with `threads` threads.
pub fn update(out: &Path, threads: usize) -> Result<Vec<(Modality, Update)>> {
    let layout = Layout::new(out);
    let settings = layout
        .read_settings()?
        .ok_or_else(|| Error::Query(format!("{}: no align.json", out.display())))?;
    let dir = dir(&layout);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let lock_path = dir.join(".lock");
    let lock = File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    let mut done = vec![(
        Modality::Image,
        update_one(&layout, Modality::Image, settings.dim, threads)?,
    )];
    if settings.text {
        done.push((
            Modality::Text,
            update_one(&layout, Modality::Text, settings.dim, threads)?,
        ));
    }
    Ok(done)
}

fn update_one(layout: &Layout, modality: Modality, dim: usize, threads: usize) -> Result<Update> {
    let dir = dir(layout);
    let parts = committed(layout, modality)?;
    let old = read_state(layout, modality)?.filter(|s| s.dim == dim);
    let names: HashSet<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();

    // Start over when nothing usable exists or tombstones outnumber live vectors.
    let mut state = old.clone().unwrap_or_default();
    let held: usize = state.partitions.iter().map(|s| s.rows).sum();
    let gone: Vec<Slot> = state
        .partitions
        .iter()
        .filter(|s| !names.contains(s.name.as_str()))
        .cloned()
        .collect();
    let gone_rows: u64 = gone.iter().map(|s| s.rows as u64).sum();
    let rebuild = old.is_none() || (state.removed + gone_rows) as usize > held.max(1);
    let opts = options(dim);
    let index = Index::new(&opts).map_err(ann_err(&dir))?;
    let mut update = Update::default();
    if rebuild {
        state = State {
            dim,
            generation: state.generation,
            ..State::default()
        };
    } else {
        let path = dir.join(&state.file);
        index
            .load(&path.to_string_lossy())
            .map_err(ann_err(&path))?;
        for s in &gone {
            for r in 0..s.rows {
                update.removed += index.remove(key(s.slot, r)).map_err(ann_err(&path))? as u64;
            }
        }
        state.partitions.retain(|s| names.contains(s.name.as_str()));
        state.removed += gone_rows;
    }
    let have: HashSet<String> = state.partitions.iter().map(|s| s.name.clone()).collect();
    let new: Vec<&(String, Vectors)> = parts.iter().filter(|(n, _)| !have.contains(n)).collect();
    if old.is_some() && !rebuild && new.is_empty() && gone.is_empty() {
        update.size = index.size() as u64;
        return Ok(update);
    }
    let incoming: usize = new.iter().map(|(_, v)| v.rows()).sum();
    let threads = threads.max(1);
    index
        .reserve_capacity_and_threads(index.size() + incoming, threads)
        .map_err(ann_err(&dir))?;
    for (name, vectors) in new {
        let slot = state.next_slot;
        state.next_slot += 1;
        update.added += add_rows(&index, slot, vectors, threads)?;
        state.partitions.push(Slot {
            name: name.clone(),
            slot,
            rows: vectors.rows(),
        });
    }
    update.size = index.size() as u64;

    // Write the next generation, then commit it by rewriting the state.
    state.generation += 1;
    state.file = format!("{}-{:06}.usearch", modality.name(), state.generation);
    let path = dir.join(&state.file);
    let tmp = dir.join(format!(".{}.tmp", state.file));
    index.save(&tmp.to_string_lossy()).map_err(ann_err(&tmp))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    write_json(&state_path(layout, modality), &state)?;
    remove_unreferenced(&dir, modality, &state.file)?;
    Ok(update)
}

/// Adds every row of `vectors` (all-zero rows, captions that were missing, excepted) under
/// `slot`, spread over `threads` threads; returns how many were added.
fn add_rows(index: &Index, slot: u32, vectors: &Vectors, threads: usize) -> Result<u64> {
    let rows = vectors.rows();
    let per = rows.div_ceil(threads).max(1);
    let results: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..rows)
            .step_by(per)
            .map(|start| {
                s.spawn(move || {
                    let mut row = vec![0.0f32; vectors.dim()];
                    let mut added = 0;
                    for r in start..(start + per).min(rows) {
                        vectors.read(r, &mut row);
                        if row.iter().all(|&x| x == 0.0) {
                            continue;
                        }
                        index
                            .add(key(slot, r), &row)
                            .map_err(ann_err(vectors.path()))?;
                        added += 1;
                    }
                    Ok(added)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an indexing thread panicked"))
            .collect()
    });
    results.into_iter().sum()
}

/// Removes index files of `modality` other than `keep` (older generations, temporaries).
fn remove_unreferenced(dir: &Path, modality: Modality, keep: &str) -> Result<()> {
    let prefix = format!("{}-", modality.name());
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = entry.map_err(io(dir))?.file_name();
        let name = name.to_string_lossy();
        let bare = name.trim_start_matches('.');
        if bare.starts_with(&prefix) && name != keep {
            let path = dir.join(&*name);
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// An index opened for searching (memory-mapped).
pub struct Ann {
    pub state: State,
    index: Index,
    path: PathBuf,
}

impl Ann {
    /// Opens the index of `modality`, if `align index` built one, to search with `expansion`
    /// candidates (HNSW's ef; at least the number of results asked for is used).
    pub fn open(layout: &Layout, modality: Modality, expansion: usize) -> Result<Option<Self>> {
        let Some(state) = read_state(layout, modality)? else {
            return Ok(None);
        };
        let path = dir(layout).join(&state.file);
        let index = Index::new(&options(state.dim)).map_err(ann_err(&path))?;
        index
            .view(&path.to_string_lossy())
            .map_err(ann_err(&path))?;
        index.change_expansion_search(expansion.max(1));
        Ok(Some(Self { state, index, path }))
    }

    /// The `count` nearest keys for which `keep` holds, with usearch's inner-product distance
    /// (1 - similarity, on f16 vectors), nearest first.
    pub fn search(
        &self,
        query: &[f32],
        count: usize,
        keep: impl Fn(u64) -> bool,
    ) -> Result<Vec<(u64, f32)>> {
        let found = self
            .index
            .filtered_search(query, count, keep)
            .map_err(ann_err(&self.path))?;
        Ok(found.keys.into_iter().zip(found.distances).collect())
    }

    pub fn size(&self) -> usize {
        self.index.size()
    }
}
