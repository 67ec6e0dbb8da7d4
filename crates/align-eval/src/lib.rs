//! Zero-shot classification and image-text retrieval benchmarks, with CLIP_benchmark's
//! definitions and key names, streamed through the collection pipeline
//! ([`align_collection::pipeline`]): bounded memory, unreadable images counted, not fatal.
//! Model-agnostic through [`align_collection::Embedder`].

pub mod cache;
pub mod dataset;
mod error;
pub mod metrics;
pub mod prompts;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use align_collection::input::{ListOptions, Listed, list};
use align_collection::layout::{
    EmbDtype, Layout, read_npy, read_parquet, write_npy, write_parquet,
};
use align_collection::{Embedder, Progress, pipeline};
use align_processor::{DecodeOptions, RgbImage};
use arrow_array::builder::{Float32Builder, Int64Builder, ListBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use rayon::prelude::*;

pub use cache::ClassifierCache;
pub use dataset::Classification;
pub use error::{Error, Result};

/// How to run an evaluation.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Images per forward pass.
    pub batch_size: usize,
    pub decode: DecodeOptions,
}

/// One unreadable image or folder: its path and a one-line error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub path: String,
    pub error: String,
}

/// `align eval zero-shot`'s numbers, under CLIP_benchmark's names.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShotReport {
    /// Images evaluated (unreadable ones are not counted here but in `failures`).
    pub n: usize,
    pub classes: usize,
    pub acc1: f64,
    /// None with fewer than 5 classes (CLIP_benchmark reports NaN there).
    pub acc5: Option<f64>,
    pub mean_per_class_recall: f64,
    /// Classes without an image evaluated: they stay classes the classifier can predict, and
    /// count in no recall.
    pub empty_classes: Vec<usize>,
    pub failures: Vec<Failure>,
    /// Seconds spent on the images.
    pub images_seconds: f64,
}

/// Per-image predictions (`--predictions`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Predictions {
    pub image_path: Vec<String>,
    pub label: Vec<usize>,
    /// The 5 (or as many classes as there are) best classes, best first, and their scores
    /// (image embedding . class vector).
    pub top_ids: Vec<Vec<usize>>,
    pub top_scores: Vec<Vec<f32>>,
}

/// L2-normalised image embeddings of a batch, checked for shape.
fn embed(embedder: &dyn Embedder, images: &[RgbImage]) -> Result<Vec<f32>> {
    let rows = embedder.embed_images(images).map_err(Error::Model)?;
    if rows.len() != images.len() * embedder.dim() {
        return Err(Error::Model(format!(
            "expected {} x {} embedding values, got {}",
            images.len(),
            embedder.dim(),
            rows.len()
        )));
    }
    Ok(rows)
}

/// Zero-shot classification of `dataset` against `classifier` (`[classes, dim]`, one row per
/// class of `classnames`: [`prompts::classifier`], or a stored one). Returns the report and the
/// per-image predictions.
pub fn zero_shot(
    dataset: &Classification,
    classnames: &[String],
    classifier: &[f32],
    embedder: &dyn Embedder,
    opts: &EvalOptions,
    progress: &Progress,
) -> Result<(ZeroShotReport, Predictions)> {
    let classes = classnames.len();
    let dim = embedder.dim();
    if classifier.len() != classes * dim {
        return Err(Error::Model(format!(
            "a classifier of {} values for {classes} classes of {dim}",
            classifier.len()
        )));
    }
    let start = Instant::now();
    let folder_class: HashMap<PathBuf, usize> = match dataset {
        Classification::ImageFolder { root, classes } => classes
            .iter()
            .enumerate()
            .map(|(i, c)| (root.join(c), i))
            .collect(),
        Classification::Shards { .. } => HashMap::new(),
    };
    let inputs = dataset.inputs();
    let mut preds = Predictions::default();
    let mut failures = Vec::new();
    let (mut hits1, mut hits5) = (0usize, 0usize);
    let k = classes.min(5);
    let mut fail = |path: String, error: String| {
        progress.failed.fetch_add(1, Ordering::Relaxed);
        failures.push(Failure { path, error });
    };
    // Hidden files included, as torchvision takes them.
    let listing = ListOptions {
        include_hidden: true,
    };
    pipeline::run(
        |emit| list(&inputs, &listing, emit),
        |over| count(&inputs, &listing, progress, over),
        opts.batch_size,
        &opts.decode,
        |batch| -> Result<()> {
            let mut images = Vec::new();
            let mut labelled = Vec::new();
            for (item, decoded) in batch {
                match (item, decoded) {
                    (Listed::Sample(s), Some(Ok(d))) => {
                        let label = match dataset {
                            Classification::ImageFolder { .. } => Path::new(&s.image_path)
                                .ancestors()
                                .find_map(|a| folder_class.get(a).copied())
                                .ok_or_else(|| "not under a class folder".to_string()),
                            Classification::Shards { .. } => shard_label(d.cls.as_deref(), classes),
                        };
                        match label {
                            Ok(label) => {
                                images.push(d.image);
                                labelled.push((s.image_path, label));
                            }
                            Err(e) => fail(s.image_path.clone(), format!("{}: {e}", s.image_path)),
                        }
                    }
                    (Listed::Sample(s), decoded) => {
                        let error = decoded.and_then(|r| r.err()).unwrap_or_default();
                        fail(s.image_path, error);
                    }
                    (Listed::Unreadable { path, error }, _) => {
                        fail(path.clone(), format!("{path}: {error}"))
                    }
                }
            }
            if images.is_empty() {
                return Ok(());
            }
            let rows = embed(embedder, &images)?;
            for (row, (path, label)) in rows.chunks_exact(dim).zip(labelled) {
                let logits: Vec<f32> = classifier
                    .chunks_exact(dim)
                    .map(|c| c.iter().zip(row).map(|(a, b)| a * b).sum())
                    .collect();
                let top = metrics::top_k(&logits, k);
                hits1 += usize::from(top[0] == label);
                hits5 += usize::from(top.contains(&label));
                preds
                    .top_scores
                    .push(top.iter().map(|&i| logits[i]).collect());
                preds.top_ids.push(top);
                preds.label.push(label);
                preds.image_path.push(path);
                progress.embedded.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        },
    )?;
    let n = preds.label.len();
    let argmax: Vec<usize> = preds.top_ids.iter().map(|t| t[0]).collect();
    let report = ZeroShotReport {
        n,
        classes,
        acc1: hits1 as f64 / n as f64,
        acc5: (classes >= 5).then_some(hits5 as f64 / n as f64),
        mean_per_class_recall: metrics::mean_per_class_recall(&preds.label, &argmax, classes),
        empty_classes: (0..classes).filter(|c| !preds.label.contains(c)).collect(),
        failures,
        images_seconds: start.elapsed().as_secs_f64(),
    };
    Ok((report, preds))
}

/// The class index in a shard sample's `cls` member.
fn shard_label(cls: Option<&str>, classes: usize) -> std::result::Result<usize, String> {
    let cls = cls.ok_or("no cls member (the class index)")?;
    let label: usize = cls
        .parse()
        .map_err(|_| format!("cls `{cls}` is not a class index"))?;
    if label >= classes {
        return Err(format!("cls {label} but there are {classes} class names"));
    }
    Ok(label)
}

/// Counts the items of `inputs` into `progress.total`, by a listing of its own.
fn count(inputs: &[PathBuf], opts: &ListOptions, progress: &Progress, over: &AtomicBool) {
    list(inputs, opts, &mut |_| {
        progress.total.fetch_add(1, Ordering::Relaxed);
        !over.load(Ordering::Relaxed)
    });
    progress.total_known.store(true, Ordering::Relaxed);
}

/// Writes the per-image predictions as parquet: `image_path`, `label`, `top_ids`
/// (list<int64>), `top_scores` (list<float>).
pub fn write_predictions(path: &Path, p: &Predictions) -> Result<()> {
    let mut ids = ListBuilder::new(Int64Builder::new());
    let mut scores = ListBuilder::new(Float32Builder::new());
    for (i, s) in p.top_ids.iter().zip(&p.top_scores) {
        ids.values()
            .append_slice(&i.iter().map(|&v| v as i64).collect::<Vec<_>>());
        ids.append(true);
        scores.values().append_slice(s);
        scores.append(true);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "image_path",
            Arc::new(StringArray::from_iter_values(&p.image_path)),
        ),
        (
            "label",
            Arc::new(Int64Array::from_iter_values(
                p.label.iter().map(|&l| l as i64),
            )),
        ),
        ("top_ids", Arc::new(ids.finish())),
        ("top_scores", Arc::new(scores.finish())),
    ];
    let batch = RecordBatch::try_from_iter(columns).map_err(|e| Error::Dataset {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(write_parquet(path, &batch)?)
}

/// Writes the classifier `[classes, dim]` as an f32 `.npy` file (CLIP_benchmark's
/// `--save_clf`, as numpy).
pub fn write_classifier(path: &Path, classifier: &[f32], dim: usize) -> Result<()> {
    Ok(write_npy(path, classifier, dim, EmbDtype::F32)?)
}

/// `align eval retrieval`'s numbers, under CLIP_benchmark's names.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalReport {
    pub n_images: usize,
    pub n_texts: usize,
    /// `(k, image_retrieval_recall@k, text_retrieval_recall@k)`.
    pub recalls: Vec<(usize, f64, f64)>,
    /// Images left out because they have no caption.
    pub skipped: Vec<String>,
    pub failures: Vec<Failure>,
}

/// Image and caption embeddings gathered for retrieval.
struct Gallery {
    dim: usize,
    images: Vec<f32>,
    texts: Vec<f32>,
    /// The image of each text.
    text_image: Vec<usize>,
}

impl Gallery {
    fn report(
        &self,
        recall_k: &[usize],
        skipped: Vec<String>,
        failures: Vec<Failure>,
    ) -> RetrievalReport {
        let n_images = self.images.len() / self.dim;
        let image_of_text: Vec<Vec<usize>> = self.text_image.iter().map(|&i| vec![i]).collect();
        let mut texts_of_image = vec![Vec::new(); n_images];
        for (t, &i) in self.text_image.iter().enumerate() {
            texts_of_image[i].push(t);
        }
        let image_r = recalls(
            &self.texts,
            &self.images,
            self.dim,
            &image_of_text,
            recall_k,
        );
        let text_r = recalls(
            &self.images,
            &self.texts,
            self.dim,
            &texts_of_image,
            recall_k,
        );
        RetrievalReport {
            n_images,
            n_texts: self.text_image.len(),
            recalls: recall_k
                .iter()
                .zip(image_r.iter().zip(text_r))
                .map(|(&k, (&i, t))| (k, i, t))
                .collect(),
            skipped,
            failures,
        }
    }
}

/// Recall@k of each `k` for `queries` against `items` (row-major, `dim` wide), the score of a
/// pair being their dot product; one query's scores at a time, queries in parallel.
fn recalls(
    queries: &[f32],
    items: &[f32],
    dim: usize,
    positives: &[Vec<usize>],
    ks: &[usize],
) -> Vec<f64> {
    let n_items = items.len() / dim;
    let hits: Vec<Vec<f64>> = queries
        .par_chunks_exact(dim)
        .zip(positives)
        .map(|(q, pos)| {
            let scores: Vec<f32> = items
                .chunks_exact(dim)
                .map(|i| i.iter().zip(q).map(|(a, b)| a * b).sum())
                .collect();
            ks.iter()
                .map(|&k| metrics::recall_at_k(&scores, n_items, std::slice::from_ref(pos), k))
                .collect()
        })
        .collect();
    (0..ks.len())
        .map(|j| hits.iter().map(|h| h[j]).sum::<f64>() / hits.len() as f64)
        .collect()
}

/// Image-text retrieval over images with captions (`NAME.txt` beside a folder's images, or a
/// shard's `txt`; one caption per line): every caption queries the images, every image the
/// captions. Images without a caption are skipped (listed in the report).
pub fn retrieval(
    inputs: &[PathBuf],
    recall_k: &[usize],
    embedder: &dyn Embedder,
    opts: &EvalOptions,
    progress: &Progress,
) -> Result<RetrievalReport> {
    let dim = embedder.dim();
    let mut gallery = Gallery {
        dim,
        images: Vec::new(),
        texts: Vec::new(),
        text_image: Vec::new(),
    };
    let mut captions: Vec<String> = Vec::new();
    let (mut skipped, mut failures) = (Vec::new(), Vec::new());
    let listing = ListOptions::default();
    pipeline::run(
        |emit| list(inputs, &listing, emit),
        |over| count(inputs, &listing, progress, over),
        opts.batch_size,
        &opts.decode,
        |batch| -> Result<()> {
            let mut images = Vec::new();
            for (item, decoded) in batch {
                match (item, decoded) {
                    (Listed::Sample(s), Some(Ok(d))) => {
                        let lines: Vec<String> = d
                            .caption
                            .as_deref()
                            .unwrap_or("")
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_string)
                            .collect();
                        if lines.is_empty() {
                            skipped.push(s.image_path);
                            continue;
                        }
                        let index = gallery.images.len() / dim + images.len();
                        gallery
                            .text_image
                            .extend(std::iter::repeat_n(index, lines.len()));
                        captions.extend(lines);
                        images.push(d.image);
                    }
                    (Listed::Sample(s), decoded) => {
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                        let error = decoded.and_then(|r| r.err()).unwrap_or_default();
                        failures.push(Failure {
                            path: s.image_path,
                            error,
                        });
                    }
                    (Listed::Unreadable { path, error }, _) => {
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                        failures.push(Failure {
                            error: format!("{path}: {error}"),
                            path,
                        });
                    }
                }
            }
            if !images.is_empty() {
                gallery.images.extend(embed(embedder, &images)?);
                progress
                    .embedded
                    .fetch_add(images.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        },
    )?;
    for chunk in captions.chunks(4096) {
        let rows = embedder.embed_texts(chunk).map_err(Error::Model)?;
        if rows.len() != chunk.len() * dim {
            return Err(Error::Model(format!(
                "expected {} x {dim} caption embedding values, got {}",
                chunk.len(),
                rows.len()
            )));
        }
        gallery.texts.extend(rows);
    }
    Ok(gallery.report(recall_k, skipped, failures))
}

/// Retrieval over an `align index --text` output, without embedding anything: each row with a
/// caption is one image and one text (its caption's embedding); rows without one are skipped.
pub fn retrieval_from_index(out: &Path, recall_k: &[usize]) -> Result<RetrievalReport> {
    let layout = Layout::new(out);
    let settings = layout.read_settings()?.ok_or_else(|| Error::Dataset {
        path: layout.settings(),
        message: "no align.json: not an `align index` output".into(),
    })?;
    if !settings.text {
        return Err(Error::Dataset {
            path: layout.settings(),
            message: "indexed without --text: there are no caption embeddings".into(),
        });
    }
    let mut gallery = Gallery {
        dim: settings.dim,
        images: Vec::new(),
        texts: Vec::new(),
        text_image: Vec::new(),
    };
    let mut skipped = Vec::new();
    for p in layout.partitions()? {
        let manifest = layout.read_manifest(&p)?;
        if manifest.rows.is_empty() {
            continue;
        }
        let (img, _) = read_npy(&layout.img_emb(&p))?;
        let (txt, _) = read_npy(&layout.text_emb(&p))?;
        let meta = read_parquet(&layout.metadata(&p))?;
        let caption = meta
            .column_by_name("caption")
            .ok_or_else(|| Error::Dataset {
                path: layout.metadata(&p),
                message: "no caption column".into(),
            })?;
        let dim = settings.dim;
        for (row, entry) in manifest.rows.iter().enumerate() {
            if caption.is_null(row) {
                skipped.push(entry.image_path.clone());
                continue;
            }
            gallery.text_image.push(gallery.images.len() / dim);
            gallery
                .images
                .extend_from_slice(&img[row * dim..(row + 1) * dim]);
            gallery
                .texts
                .extend_from_slice(&txt[row * dim..(row + 1) * dim]);
        }
    }
    Ok(gallery.report(recall_k, skipped, Vec::new()))
}
