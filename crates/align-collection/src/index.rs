//! [`index`]: embeds a collection into an output folder ([`crate::layout`]), resumably and
//! incrementally.
//!
//! How a run goes:
//! 1. Leftovers of an interrupted run of the same shard (temporary files, data files of a
//!    partition whose manifest was never written) are removed; the manifests say which samples
//!    OUT holds and with which fingerprint (sizes and modification times of their files).
//! 2. A listing thread walks the inputs and passes on the samples of this shard that OUT does
//!    not hold with the same fingerprint; a decoding thread reads and decodes them a batch at a
//!    time (the images of a batch in parallel) while the model embeds the batch before.
//!    Channels between the stages are bounded, so memory does not grow with the collection.
//! 3. Embedded rows are collected into a partition, which is committed (data files, then its
//!    manifest) every `checkpoint_every` or `partition_rows` rows: a kill loses at most the
//!    partition being filled, and the next run picks up where this one stopped.
//! 4. At the end, partitions holding rows that are gone (files deleted, or changed and embedded
//!    again) are rewritten without them under a new name, then removed.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use align_processor::{DecodeOptions, RgbImage};
use arrow_array::BooleanArray;

use crate::error::{Error, IoError, Result, io};
use crate::input::{ListOptions, Listed, check_inputs, list};
use crate::layout::{
    EmbDtype, Entry, Failure, Layout, Manifest, Settings, create_json, read_npy, read_parquet,
    write_atomic, write_json, write_npy, write_parquet,
};
use crate::metadata::{MetaRow, to_batch};
use crate::pipeline::{self, Embedder, Item, Progress};
use crate::shard::Shard;

/// What to index and how.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Folders, image files and webdataset `.tar` shards.
    pub inputs: Vec<PathBuf>,
    pub list: ListOptions,
    pub shard: Shard,
    /// The model's name, recorded in `align.json`.
    pub model: String,
    /// Embed captions too (`text_emb/`, `similarity`).
    pub text: bool,
    pub emb_dtype: EmbDtype,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Commit the partition being filled at least this often.
    pub checkpoint_every: Duration,
    /// Most rows (and failures) in one partition.
    pub partition_rows: usize,
    pub decode: DecodeOptions,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub embedded: u64,
    pub present: u64,
    pub failed: u64,
    /// Rows and failures dropped because their files are gone or were embedded again.
    pub removed: u64,
    /// Partitions written (new and rewritten).
    pub partitions: u64,
    /// False when a folder or archive could not be listed: rows under it are then kept.
    pub listing_complete: bool,
}

/// Embeds the samples of `opts.inputs` that `out` does not hold yet (see the module docs).
pub fn index(
    out: &Path,
    opts: &IndexOptions,
    embedder: &dyn Embedder,
    progress: &Progress,
) -> Result<Summary> {
    check_inputs(&opts.inputs)?;
    let layout = Layout::new(out);
    layout.create()?;
    let settings = Settings {
        model: opts.model.clone(),
        dim: embedder.dim(),
        emb_dtype: opts.emb_dtype,
        text: opts.text,
        shards: opts.shard.count,
    };
    check_settings(&layout, &settings)?;
    let tag = opts.shard.tag();
    let _lock = lock(&layout, &tag)?;
    remove_leftovers(&layout, &tag)?;

    let mut writer = Writer::new(&layout, &settings, &tag)?;
    let known = writer.known()?;
    let batch_size = opts.batch_size.max(1);

    let (seen, listing_complete) = pipeline::run(
        |emit| list_work(opts, &known, progress, emit),
        |over| count_work(opts, &known, progress, over),
        batch_size,
        &opts.decode,
        |batch| embed_batch(batch, opts, embedder, progress, &mut writer),
    )?;
    writer.commit()?;

    let removed = writer.drop_stale(&seen, &opts.inputs, listing_complete)?;
    Ok(Summary {
        embedded: progress.embedded.load(Ordering::Relaxed),
        present: progress.present.load(Ordering::Relaxed),
        failed: progress.failed.load(Ordering::Relaxed),
        removed,
        partitions: writer.written,
        listing_complete,
    })
}

/// Compares this run's settings with `align.json` (writing it on the first run).
fn check_settings(layout: &Layout, settings: &Settings) -> Result<()> {
    let old = match layout.read_settings()? {
        Some(old) => old,
        // Shards starting together race to create it: the losers compare against the winner's.
        None if create_json(&layout.settings(), settings)? => return Ok(()),
        None => layout.read_settings()?.ok_or_else(|| IoError {
            path: layout.settings(),
            error: std::io::ErrorKind::NotFound.into(),
        })?,
    };
    let name = |s: &Settings| {
        [
            format!("model {}", s.model),
            format!("embedding width {}", s.dim),
            format!(
                "--emb-dtype {}",
                if s.emb_dtype == EmbDtype::F16 {
                    "f16"
                } else {
                    "f32"
                }
            ),
            if s.text { "--text" } else { "no --text" }.to_string(),
            format!("--shard _/{}", s.shards),
        ]
    };
    if let Some((old, new)) = name(&old)
        .into_iter()
        .zip(name(settings))
        .find(|(o, n)| o != n)
    {
        return Err(Error::Settings {
            path: layout.settings(),
            message: format!(
                "this collection was indexed with {old}, this run has {new}; \
                 use the same settings or another --out"
            ),
        });
    }
    Ok(())
}

/// Takes this shard's lock (held until the returned file is dropped).
fn lock(layout: &Layout, tag: &str) -> Result<File> {
    let path = layout
        .root
        .join(crate::layout::MANIFEST)
        .join(format!(".lock{tag}"));
    let file = File::create(&path).map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(IoError { path, error: e }.into()),
    }
}

/// Whether partition name `p` belongs to the shard of `tag`.
fn is_own(p: &str, tag: &str) -> bool {
    p.strip_prefix(tag)
        .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

/// The partition a file of OUT belongs to (`img_emb_P.npy` -> `P`), temporary names included.
fn partition_of(dir: &str, file: &str) -> Option<String> {
    let file = file
        .strip_prefix('.')
        .and_then(|f| f.strip_suffix(".tmp"))
        .unwrap_or(file);
    let (prefix, suffix) = match dir {
        crate::layout::IMG_EMB => ("img_emb_", ".npy"),
        crate::layout::TEXT_EMB => ("text_emb_", ".npy"),
        crate::layout::METADATA => ("metadata_", ".parquet"),
        crate::layout::FAILURES => ("failures_", ".jsonl"),
        _ => ("", ".json"),
    };
    Some(file.strip_prefix(prefix)?.strip_suffix(suffix)?.to_string())
}

/// Removes this shard's temporary files and the data files of uncommitted partitions.
fn remove_leftovers(layout: &Layout, tag: &str) -> Result<()> {
    let committed: HashSet<String> = layout.partitions()?.into_iter().collect();
    for dir in [
        crate::layout::IMG_EMB,
        crate::layout::TEXT_EMB,
        crate::layout::METADATA,
        crate::layout::FAILURES,
        crate::layout::MANIFEST,
    ] {
        let folder = layout.root.join(dir);
        for entry in std::fs::read_dir(&folder).map_err(io(&folder))? {
            let entry = entry.map_err(io(&folder))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(p) = partition_of(dir, &name) else {
                continue;
            };
            let temporary = name.starts_with('.') && name.ends_with(".tmp");
            if is_own(&p, tag) && (temporary || !committed.contains(&p)) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io(path))?;
            }
        }
    }
    Ok(())
}

/// What a listed item is to this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Another shard's sample, or one listed already.
    Skip,
    /// In OUT with the same fingerprint.
    Present,
    /// To embed (or to record as unreadable).
    ToDo,
}

/// Sorts listed items into [`Verdict`]s.
struct Triage<'a> {
    shard: Shard,
    known: &'a HashMap<String, String>,
    /// Paths of the samples and unreadable folders of this shard listed so far.
    seen: HashSet<String>,
}

impl<'a> Triage<'a> {
    fn new(shard: Shard, known: &'a HashMap<String, String>) -> Self {
        Self {
            shard,
            known,
            seen: HashSet::new(),
        }
    }

    fn verdict(&mut self, item: &Listed) -> Verdict {
        let (path, fingerprint) = match item {
            Listed::Sample(s) if !self.shard.contains(&s.key) => return Verdict::Skip,
            Listed::Sample(s) => (&s.image_path, s.fingerprint.as_str()),
            Listed::Unreadable { path, .. } => (path, ""),
        };
        if !self.seen.insert(path.clone()) {
            Verdict::Skip
        } else if self.known.get(path).map(String::as_str) == Some(fingerprint) {
            Verdict::Present
        } else {
            Verdict::ToDo
        }
    }
}

/// The listing stage: passes on the samples to embed; returns the paths of every sample and
/// unreadable folder of this shard seen, and whether the listing was complete.
fn list_work(
    opts: &IndexOptions,
    known: &HashMap<String, String>,
    progress: &Progress,
    emit: &mut dyn FnMut(Listed) -> bool,
) -> (HashSet<String>, bool) {
    let mut triage = Triage::new(opts.shard, known);
    let mut complete = true;
    list(&opts.inputs, &opts.list, &mut |item| {
        complete &= !matches!(item, Listed::Unreadable { .. });
        match triage.verdict(&item) {
            Verdict::Skip => true,
            Verdict::Present => {
                progress.present.fetch_add(1, Ordering::Relaxed);
                true
            }
            Verdict::ToDo => emit(item),
        }
    });
    (triage.seen, complete)
}

/// Counts the samples to embed into `progress.total`, by a listing of its own.
fn count_work(
    opts: &IndexOptions,
    known: &HashMap<String, String>,
    progress: &Progress,
    over: &AtomicBool,
) {
    let mut triage = Triage::new(opts.shard, known);
    list(&opts.inputs, &opts.list, &mut |item| {
        if triage.verdict(&item) == Verdict::ToDo {
            progress.total.fetch_add(1, Ordering::Relaxed);
        }
        !over.load(Ordering::Relaxed)
    });
    progress.total_known.store(true, Ordering::Relaxed);
}

/// The model stage: embeds a decoded batch into the partition being filled.
fn embed_batch(
    batch: Vec<Item>,
    opts: &IndexOptions,
    embedder: &dyn Embedder,
    progress: &Progress,
    writer: &mut Writer,
) -> Result<()> {
    let dim = embedder.dim();
    let mut samples = Vec::new();
    let mut decoded = Vec::new();
    for (work, result) in batch {
        match (work, result) {
            (Listed::Sample(s), Some(Ok(d))) => {
                samples.push(s);
                decoded.push(d);
            }
            (Listed::Sample(s), result) => {
                let error = result.and_then(|r| r.err());
                writer.fail(Failure {
                    image_path: s.image_path,
                    key: s.key,
                    error: error.unwrap_or_default().replace('\n', " "),
                    fingerprint: s.fingerprint,
                });
                progress.failed.fetch_add(1, Ordering::Relaxed);
                writer.commit_if_full(opts.partition_rows)?;
            }
            (Listed::Unreadable { path, error }, _) => {
                writer.fail(Failure {
                    key: String::new(),
                    error: format!("{path}: {error}"),
                    image_path: path,
                    fingerprint: String::new(),
                });
                progress.failed.fetch_add(1, Ordering::Relaxed);
                writer.commit_if_full(opts.partition_rows)?;
            }
        }
    }
    if !samples.is_empty() {
        let (images, rest): (Vec<RgbImage>, Vec<_>) = decoded
            .into_iter()
            .map(|d| {
                let size = (d.image.width as i64, d.image.height as i64);
                (d.image, (size, d.caption, d.json))
            })
            .unzip();
        let img = embedder.embed_images(&images).map_err(Error::Model)?;
        check_rows(&img, images.len(), dim)?;
        drop(images);
        let text = if opts.text {
            embed_captions(embedder, rest.iter().map(|(_, c, _)| c.as_deref()), dim)?
        } else {
            Vec::new()
        };
        for (i, (s, ((width, height), caption, json))) in samples.into_iter().zip(rest).enumerate()
        {
            let rows = i * dim..(i + 1) * dim;
            let text_row = text.get(rows.clone()).unwrap_or_default();
            let similarity = caption.as_ref().filter(|_| opts.text).map(|_| {
                img[rows.clone()]
                    .iter()
                    .zip(text_row)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
            });
            writer.add(
                Entry {
                    image_path: s.image_path.clone(),
                    fingerprint: s.fingerprint,
                },
                MetaRow {
                    image_path: s.image_path,
                    key: s.key,
                    caption,
                    similarity,
                    width,
                    height,
                    json,
                },
                &img[rows],
                text_row,
            );
            progress.embedded.fetch_add(1, Ordering::Relaxed);
            writer.commit_if_full(opts.partition_rows)?;
        }
    }
    if writer.since_commit() >= opts.checkpoint_every {
        writer.commit()?;
    }
    Ok(())
}

/// Caption embeddings row-aligned with the samples: a zero row where there is no caption.
fn embed_captions<'a>(
    embedder: &dyn Embedder,
    captions: impl Iterator<Item = Option<&'a str>> + Clone,
    dim: usize,
) -> Result<Vec<f32>> {
    let texts: Vec<String> = captions.clone().flatten().map(str::to_string).collect();
    let embedded = if texts.is_empty() {
        Vec::new()
    } else {
        embedder.embed_texts(&texts).map_err(Error::Model)?
    };
    check_rows(&embedded, texts.len(), dim)?;
    let mut rows = embedded.chunks_exact(dim);
    let mut out = Vec::new();
    for caption in captions {
        match caption {
            Some(_) => out.extend_from_slice(rows.next().unwrap_or_default()),
            None => out.extend(std::iter::repeat_n(0.0, dim)),
        }
    }
    Ok(out)
}

fn check_rows(values: &[f32], rows: usize, dim: usize) -> Result<()> {
    if values.len() != rows * dim {
        return Err(Error::Model(format!(
            "expected {rows} x {dim} embedding values, got {}",
            values.len()
        )));
    }
    Ok(())
}

/// Fills partitions and commits them; rewrites partitions holding stale rows.
struct Writer<'a> {
    layout: &'a Layout,
    settings: &'a Settings,
    tag: String,
    next_seq: u64,
    entries: Vec<Entry>,
    meta: Vec<MetaRow>,
    img: Vec<f32>,
    text: Vec<f32>,
    failures: Vec<Failure>,
    last_commit: Instant,
    /// Partitions written so far.
    written: u64,
}

impl<'a> Writer<'a> {
    fn new(layout: &'a Layout, settings: &'a Settings, tag: &str) -> Result<Self> {
        let next_seq = own_partitions(layout, tag)?
            .last()
            .map_or(0, |(seq, _)| seq + 1);
        Ok(Self {
            layout,
            settings,
            tag: tag.to_string(),
            next_seq,
            entries: Vec::new(),
            meta: Vec::new(),
            img: Vec::new(),
            text: Vec::new(),
            failures: Vec::new(),
            last_commit: Instant::now(),
            written: 0,
        })
    }

    /// Image path -> fingerprint of every row and failure this shard holds (the newest
    /// partition's where a path is in several, as after an interrupted rewrite).
    fn known(&self) -> Result<HashMap<String, String>> {
        let mut known = HashMap::new();
        for (_, p) in own_partitions(self.layout, &self.tag)? {
            let m = self.layout.read_manifest(&p)?;
            for e in m.rows {
                known.insert(e.image_path, e.fingerprint);
            }
            for f in m.failures {
                known.insert(f.image_path, f.fingerprint);
            }
        }
        Ok(known)
    }

    fn add(&mut self, entry: Entry, meta: MetaRow, img: &[f32], text: &[f32]) {
        self.entries.push(entry);
        self.meta.push(meta);
        self.img.extend_from_slice(img);
        self.text.extend_from_slice(text);
    }

    fn fail(&mut self, failure: Failure) {
        self.failures.push(failure);
    }

    fn pending(&self) -> usize {
        self.entries.len() + self.failures.len()
    }

    /// Commits the partition being filled once it holds `limit` rows and failures.
    fn commit_if_full(&mut self, limit: usize) -> Result<()> {
        if self.pending() >= limit {
            self.commit()?;
        }
        Ok(())
    }

    fn since_commit(&self) -> Duration {
        self.last_commit.elapsed()
    }

    /// Commits the partition being filled, if it holds anything.
    fn commit(&mut self) -> Result<()> {
        self.last_commit = Instant::now();
        if self.pending() == 0 {
            return Ok(());
        }
        let manifest = Manifest {
            rows: std::mem::take(&mut self.entries),
            failures: std::mem::take(&mut self.failures),
        };
        let meta = std::mem::take(&mut self.meta);
        let img = std::mem::take(&mut self.img);
        let text = std::mem::take(&mut self.text);
        let name = self.next_name();
        let path = self.layout.metadata(&name);
        let batch = to_batch(&meta, self.settings.text)
            .map_err(|message| Error::Parquet { path, message })?;
        self.write_partition(&name, &manifest, &batch, &img, &text)
    }

    fn next_name(&mut self) -> String {
        let name = format!("{}{:06}", self.tag, self.next_seq);
        self.next_seq += 1;
        name
    }

    /// Writes partition `p`'s data files, then its manifest (the commit).
    fn write_partition(
        &mut self,
        p: &str,
        manifest: &Manifest,
        metadata: &arrow_array::RecordBatch,
        img: &[f32],
        text: &[f32],
    ) -> Result<()> {
        let (layout, settings) = (self.layout, self.settings);
        if !manifest.rows.is_empty() {
            write_npy(&layout.img_emb(p), img, settings.dim, settings.emb_dtype)?;
            if settings.text {
                write_npy(&layout.text_emb(p), text, settings.dim, settings.emb_dtype)?;
            }
            write_parquet(&layout.metadata(p), metadata)?;
        }
        if !manifest.failures.is_empty() {
            let path = layout.failures(p);
            write_atomic(&path, |w| {
                for f in &manifest.failures {
                    let line = serde_json::json!({
                        "image_path": f.image_path, "key": f.key, "error": f.error,
                    });
                    writeln!(w, "{line}").map_err(io(&path))?;
                }
                Ok(())
            })?;
        }
        write_json(&layout.manifest(p), manifest)?;
        self.written += 1;
        Ok(())
    }

    /// Drops the rows and failures whose sample is gone (not seen by this run's listing
    /// although it lies under one of its inputs) or held by a newer partition: each partition
    /// concerned is rewritten without them under a new name, then removed. With an incomplete
    /// listing, only the rows held twice go. Returns how many rows and failures went.
    fn drop_stale(
        &mut self,
        seen: &HashSet<String>,
        inputs: &[PathBuf],
        listing_complete: bool,
    ) -> Result<u64> {
        let partitions = own_partitions(self.layout, &self.tag)?;
        let manifests = partitions
            .iter()
            .map(|(_, p)| self.layout.read_manifest(p))
            .collect::<Result<Vec<_>>>()?;
        let mut owner: HashMap<&str, usize> = HashMap::new();
        for (i, m) in manifests.iter().enumerate() {
            let paths = m.rows.iter().map(|e| &e.image_path);
            for path in paths.chain(m.failures.iter().map(|f| &f.image_path)) {
                owner.insert(path, i);
            }
        }
        let live = |i: usize, path: &str| {
            owner.get(path) == Some(&i)
                && (!listing_complete
                    || seen.contains(path)
                    || !inputs
                        .iter()
                        .any(|input| Path::new(path).starts_with(input)))
        };
        let mut removed = 0;
        for (i, ((_, p), m)) in partitions.iter().zip(&manifests).enumerate() {
            let rows: Vec<bool> = m.rows.iter().map(|e| live(i, &e.image_path)).collect();
            let failures: Vec<bool> = m.failures.iter().map(|f| live(i, &f.image_path)).collect();
            let dropped = rows.iter().chain(&failures).filter(|&&keep| !keep).count();
            if dropped == 0 {
                continue;
            }
            removed += dropped as u64;
            if rows.contains(&true) || failures.contains(&true) {
                self.rewrite(p, m, &rows, &failures)?;
            }
            self.remove_partition(p)?;
        }
        Ok(removed)
    }

    /// Writes the kept rows and failures of partition `p` as a new partition.
    fn rewrite(&mut self, p: &str, m: &Manifest, rows: &[bool], failures: &[bool]) -> Result<()> {
        let pick = |values: &[f32], dim: usize| -> Vec<f32> {
            values
                .chunks_exact(dim.max(1))
                .zip(rows)
                .filter(|(_, keep)| **keep)
                .flat_map(|(row, _)| row.iter().copied())
                .collect()
        };
        let layout = self.layout;
        let read_rows = |path: &Path| -> Result<Vec<f32>> {
            let (values, dim) = read_npy(path)?;
            if dim != self.settings.dim || values.len() != m.rows.len() * dim {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    message: format!(
                        "expected {} rows of {} values (its manifest's)",
                        m.rows.len(),
                        self.settings.dim
                    ),
                });
            }
            Ok(pick(&values, dim))
        };
        let kept = Manifest {
            rows: masked(&m.rows, rows),
            failures: masked(&m.failures, failures),
        };
        let (img, text, metadata) = if kept.rows.is_empty() {
            (
                Vec::new(),
                Vec::new(),
                to_batch(&[], false).expect("an empty table"),
            )
        } else {
            let img = read_rows(&layout.img_emb(p))?;
            let text = if self.settings.text {
                read_rows(&layout.text_emb(p))?
            } else {
                Vec::new()
            };
            let path = layout.metadata(p);
            let batch = read_parquet(&path)?;
            if batch.num_rows() != m.rows.len() {
                return Err(Error::Corrupt {
                    path,
                    message: format!("expected {} rows (its manifest's)", m.rows.len()),
                });
            }
            let mask = BooleanArray::from(rows.to_vec());
            let batch = arrow_select::filter::filter_record_batch(&batch, &mask).map_err(|e| {
                Error::Parquet {
                    path,
                    message: e.to_string(),
                }
            })?;
            (img, text, batch)
        };
        let name = self.next_name();
        self.write_partition(&name, &kept, &metadata, &img, &text)
    }

    /// Removes partition `p`: its manifest first (so that it is no longer committed), then
    /// its data files.
    fn remove_partition(&self, p: &str) -> Result<()> {
        let manifest = self.layout.manifest(p);
        std::fs::remove_file(&manifest).map_err(io(&manifest))?;
        for path in self.layout.data_files(p) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(IoError { path, error: e }.into()),
            }
        }
        Ok(())
    }
}

/// The items of `items` whose `keep` is true.
fn masked<T: Clone>(items: &[T], keep: &[bool]) -> Vec<T> {
    items
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(item, _)| item.clone())
        .collect()
}

/// This shard's committed partitions, ordered by sequence number.
fn own_partitions(layout: &Layout, tag: &str) -> Result<Vec<(u64, String)>> {
    let mut own: Vec<(u64, String)> = layout
        .partitions()?
        .into_iter()
        .filter(|p| is_own(p, tag))
        .filter_map(|p| Some((p[tag.len()..].parse().ok()?, p)))
        .collect();
    own.sort();
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::{is_own, partition_of};

    #[test]
    fn partition_names_are_recognised() {
        assert_eq!(
            partition_of("img_emb", "img_emb_000003.npy").as_deref(),
            Some("000003")
        );
        assert_eq!(
            partition_of("metadata", ".metadata_s001of003-000001.parquet.tmp").as_deref(),
            Some("s001of003-000001")
        );
        assert_eq!(
            partition_of("manifest", "000002.json").as_deref(),
            Some("000002")
        );
        assert_eq!(partition_of("img_emb", "other.npy"), None);
        assert!(is_own("000003", ""));
        assert!(!is_own("s001of003-000001", ""));
        assert!(is_own("s001of003-000001", "s001of003-"));
        assert!(!is_own("s002of003-000001", "s001of003-"));
    }
}
