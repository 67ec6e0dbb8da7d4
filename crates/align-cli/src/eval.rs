//! `align eval zero-shot` / `align eval retrieval`: CLIP_benchmark's zero-shot classification
//! and image-text retrieval tasks ([`align_eval`]), one JSON object on stdout.

use std::path::PathBuf;

use align_collection::Embedder;
use align_eval::{Classification, ClassifierCache, EvalOptions, Failure, prompts};
use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use crate::embedder::AlignEmbedder;
use crate::hub::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, clap::Subcommand)]
enum Task {
    /// Zero-shot classification: an ImageFolder directory (one sub-folder per class, numbered in
    /// sorted order as torchvision does) or webdataset shards with a `cls` field; prints
    /// {"dataset","task","model","n","acc1","acc5","mean_per_class_recall","failed"}.
    ZeroShot(ZeroShotArgs),
    /// Image-text retrieval: images with captions (NAME.txt beside each image, or a shard's
    /// txt; one caption per line), or an `align index --text` output; prints the
    /// image_retrieval_recall@k and text_retrieval_recall@k of CLIP_benchmark.
    Retrieval(RetrievalArgs),
}

#[derive(Debug, clap::Args)]
struct ZeroShotArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The dataset: an ImageFolder directory, a directory of webdataset shards (directly or
    /// under test/, with classnames.txt), or .tar files.
    #[arg(long, required = true, num_args = 1..)]
    dataset: Vec<PathBuf>,
    /// Class names, one per line in class order [default: the folder names with `_` as
    /// spaces; for shards, classnames.txt beside them].
    #[arg(long, value_name = "FILE")]
    classnames: Option<PathBuf>,
    /// Prompt templates: `imagenet` (CLIP's 80 ImageNet prompts), `simple` ("a photo of a
    /// {c}."), or a file with one template per line, each with {c} for the class name.
    #[arg(long, default_value = "imagenet", value_name = "NAME|FILE")]
    templates: String,
    /// Write per-image predictions here (parquet: image_path, label, top_ids, top_scores).
    #[arg(long, value_name = "FILE.parquet")]
    predictions: Option<PathBuf>,
    /// Write the classifier (one L2-normalised row per class) here, as an f32 .npy file.
    #[arg(long, value_name = "FILE.npy")]
    save_classifier: Option<PathBuf>,
    /// Use this classifier ([classes, dim] .npy, as --save-classifier writes it) instead of
    /// embedding the prompts.
    #[arg(long, value_name = "FILE.npy", conflicts_with = "templates")]
    classifier: Option<PathBuf>,
    /// Neither read nor store the classifier in the cache (ALIGN_CACHE_DIR, else
    /// XDG_CACHE_HOME/align, else ~/.cache/align: classifiers/), where a later run with the
    /// same model, class names and templates finds it.
    #[arg(long)]
    no_cache: bool,
    /// Images per forward pass [default: 8; 1 on ndarray].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
}

#[derive(Debug, clap::Args)]
struct RetrievalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folders of images with NAME.txt captions, or webdataset shards with txt.
    #[arg(long, num_args = 1.., required_unless_present = "from_index", conflicts_with = "from_index")]
    dataset: Vec<PathBuf>,
    /// Use the embeddings of an `align index --text` output instead (each image with its
    /// caption; nothing is embedded).
    #[arg(long, value_name = "OUT")]
    from_index: Option<PathBuf>,
    /// The k of recall@k.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10", value_parser = clap::value_parser!(u32).range(1..))]
    recall_k: Vec<u32>,
    /// Images per forward pass [default: 8; 1 on ndarray].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
}

pub fn run(args: &Args, device: &burn::tensor::Device) -> anyhow::Result<()> {
    match &args.task {
        Task::ZeroShot(a) => zero_shot(a, device),
        Task::Retrieval(a) => retrieval(a, device),
    }
}

fn options(
    batch_size: Option<u32>,
    align: &align_model::Align,
    device: &burn::tensor::Device,
) -> EvalOptions {
    EvalOptions {
        batch_size: batch_size.unwrap_or_else(|| crate::device::default_image_batch(device))
            as usize,
        decode: *align.images.decode_options(),
    }
}

fn report_failures(failures: &[Failure]) {
    for f in failures {
        eprintln!("align: skipped {}", f.error);
    }
}

fn zero_shot(args: &ZeroShotArgs, device: &burn::tensor::Device) -> anyhow::Result<()> {
    let dataset = Classification::open(&args.dataset)?;
    let classnames = dataset.classnames(args.classnames.as_deref())?;
    let templates = prompts::templates(&args.templates)?;
    let model = args.model.name()?;
    let align = args.model.load(device)?;
    align.model.vision_model.prepare();
    let embedder = AlignEmbedder { align: &align };
    let opts = options(args.batch_size, &align, device);
    let dim = embedder.dim();
    let start = std::time::Instant::now();
    let (classifier, source) = match &args.classifier {
        Some(path) => (
            align_eval::cache::read_classifier(path, classnames.len(), dim)?,
            "file",
        ),
        None => {
            let cache = (!args.no_cache)
                .then(ClassifierCache::default_dir)
                .flatten()
                .map(ClassifierCache::new);
            let key = ClassifierCache::key(
                &model_identity(&args.model, device)?,
                &classnames,
                &templates,
            );
            match cache
                .as_ref()
                .and_then(|c| c.load(&key, classnames.len(), dim))
            {
                Some(classifier) => (classifier, "cache"),
                None => {
                    let classifier = prompts::classifier(&embedder, &classnames, &templates)?;
                    if let Some(cache) = &cache
                        && let Err(e) = cache.store(&key, &classifier, dim)
                    {
                        eprintln!("align: classifier not cached: {e}");
                    }
                    (classifier, "prompts")
                }
            }
        }
    };
    let classifier_seconds = start.elapsed().as_secs_f64();
    let (report, predictions) = crate::progress::with_progress(|progress| {
        align_eval::zero_shot(
            &dataset,
            &classnames,
            &classifier,
            &embedder,
            &opts,
            progress,
        )
    })?;
    report_failures(&report.failures);
    for &c in &report.empty_classes {
        let name = match &dataset {
            Classification::ImageFolder { root, classes } => {
                root.join(&classes[c]).display().to_string()
            }
            Classification::Shards { .. } => classnames[c].clone(),
        };
        eprintln!(
            "align: class {c} ({name}) has no readable image; it stays a class the classifier can predict"
        );
    }
    if report.n == 0 {
        bail!("{}: no readable images", args.dataset[0].display());
    }
    let built = match source {
        "prompts" => format!("{} templates embedded", templates.len()),
        "cache" => "read from the cache".into(),
        _ => "read from --classifier".into(),
    };
    eprintln!(
        "classifier: {} classes, {built} in {classifier_seconds:.2} s; {} images in {:.2} s ({:.2} images/s)",
        classnames.len(),
        report.n,
        report.images_seconds,
        report.n as f64 / report.images_seconds.max(1e-9),
    );
    if let Some(path) = &args.save_classifier {
        align_eval::write_classifier(path, &classifier, dim)?;
    }
    if let Some(path) = &args.predictions {
        align_eval::write_predictions(path, &predictions)?;
    }
    println!(
        "{}",
        json!({
            "dataset": args.dataset[0].to_string_lossy(),
            "task": "zeroshot_classification",
            "model": model,
            "n": report.n,
            "acc1": report.acc1,
            "acc5": report.acc5,
            "mean_per_class_recall": report.mean_per_class_recall,
            "failed": report.failures.len(),
        })
    );
    Ok(())
}

/// What a classifier depends on besides its classes and templates: the model (its name, and
/// the size and modification time of each file of its folder), the precision and the backend.
fn model_identity(model: &ModelArgs, device: &burn::tensor::Device) -> anyhow::Result<String> {
    let dir = model.resolve()?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
        let entry = entry.with_context(|| dir.display().to_string())?;
        let meta = entry
            .metadata()
            .with_context(|| entry.path().display().to_string())?;
        if meta.is_file() {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            files.push(format!(
                "{}:{}:{mtime}",
                entry.file_name().to_string_lossy(),
                meta.len()
            ));
        }
    }
    files.sort();
    Ok(format!(
        "{}\n{:?}\n{device:?}\n{}",
        model.name()?,
        model.dtype,
        files.join("\n")
    ))
}

fn retrieval(args: &RetrievalArgs, device: &burn::tensor::Device) -> anyhow::Result<()> {
    let ks: Vec<usize> = args.recall_k.iter().map(|&k| k as usize).collect();
    let (report, model, dataset) = match &args.from_index {
        Some(out) => {
            let settings = align_collection::Layout::new(out).read_settings()?;
            let model = settings.map(|s| s.model).unwrap_or_default();
            (
                align_eval::retrieval_from_index(out, &ks)?,
                model,
                out.clone(),
            )
        }
        None => {
            let model = args.model.name()?;
            let align = args.model.load(device)?;
            align.model.vision_model.prepare();
            let embedder = AlignEmbedder { align: &align };
            let opts = options(args.batch_size, &align, device);
            let report = crate::progress::with_progress(|progress| {
                align_eval::retrieval(&args.dataset, &ks, &embedder, &opts, progress)
            })?;
            (report, model, args.dataset[0].clone())
        }
    };
    report_failures(&report.failures);
    if !report.skipped.is_empty() {
        eprintln!(
            "align: skipped {} images without a caption",
            report.skipped.len()
        );
    }
    if report.n_images == 0 {
        bail!("{}: no readable images with captions", dataset.display());
    }
    let mut out = Map::new();
    out.insert("dataset".into(), json!(dataset.to_string_lossy()));
    out.insert("task".into(), json!("zeroshot_retrieval"));
    out.insert("model".into(), json!(model));
    out.insert("n_images".into(), json!(report.n_images));
    out.insert("n_texts".into(), json!(report.n_texts));
    for (k, image, text) in &report.recalls {
        out.insert(format!("image_retrieval_recall@{k}"), json!(image));
        out.insert(format!("text_retrieval_recall@{k}"), json!(text));
    }
    out.insert("failed".into(), json!(report.failures.len()));
    out.insert("skipped".into(), json!(report.skipped.len()));
    println!("{}", Value::Object(out));
    Ok(())
}
