//! `align index`: embeds a whole collection (folders, image files, webdataset shards) into an
//! output folder in clip-retrieval's layout, resumably and incrementally
//! ([`align_collection::index`]).

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use align_collection::{EmbDtype, IndexOptions, ListOptions, Shard};
use anyhow::{Context, bail};

use crate::hub::ModelArgs;

#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Output folder: img_emb/*.npy, text_emb/*.npy, metadata/*.parquet, failures/*.jsonl
    /// (clip-retrieval's layout), plus align.json and manifest/ (what is done).
    #[arg(long)]
    out: PathBuf,
    /// Embed each image's caption too (NAME.txt beside it, or KEY.txt in a shard): text_emb/
    /// and a `similarity` column (cosine of image and caption).
    #[arg(long)]
    text: bool,
    /// Element type of the embedding files.
    #[arg(long, value_enum, default_value_t = Dtype::F16)]
    emb_dtype: Dtype,
    /// Take only the samples whose key hashes to I modulo N (xxh3_64 of the key): N runs with
    /// 0/N .. N-1/N, in any order or at once, make exactly the rows of one run without it.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Read more inputs from FILE, one per line (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    files_from: Option<PathBuf>,
    /// Take files and folders whose name starts with `.` (skipped by default).
    #[arg(long)]
    include_hidden: bool,
    /// Images per forward pass [default: 8; 1 on ndarray].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
    /// Commit what is embedded at least this often (seconds): a kill loses at most this much.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    checkpoint_secs: u64,
    /// Most samples in one partition (one img_emb_P.npy + metadata_P.parquet).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    partition_rows: u64,
    /// Folders (walked recursively), image files, or webdataset shards (*.tar).
    inputs: Vec<PathBuf>,
}

const AFTER_HELP: &str = "\
Inputs: a folder is walked recursively in sorted order for jpg/jpeg/png/webp/bmp/gif/tif/tiff
files (any letter case), with NAME.txt (caption) and NAME.json (metadata) beside NAME.jpg; a
*.tar file is a webdataset shard (KEY.jpg|png|webp + KEY.txt + KEY.json, as img2dataset writes).

Output rows: metadata_P.parquet row i describes row i of img_emb_P.npy (and text_emb_P.npy):
image_path, key, caption, similarity (with --text), width, height, then the JSON's fields.
Unreadable or undecodable samples go to failures/ and never stop the run. OUT/ann/ holds the
HNSW indices of `align search` and `align serve`, brought up to date at the end of each run.

Resume and update: run the same command again. Work is committed every --checkpoint-secs
(a partition's files are written under temporary names, then renamed; its manifest last), so
after a kill the next run removes the unfinished partition and embeds only what is missing.
Files added or changed (size or mtime) since the last run are embedded; rows of files that are
gone from the inputs are dropped. Several machines: run --shard I/N on each, into one folder
or into several folders copied together afterwards.

Stdout: one JSON object summing up the run; progress and errors go to stderr.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Dtype {
    F16,
    F32,
}

pub fn run(args: &Args, device: &burn::tensor::Device) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut inputs = args.inputs.clone();
    if let Some(list) = &args.files_from {
        inputs.extend(read_list(list)?);
    }
    if inputs.is_empty() {
        bail!("no inputs: give folders, images or .tar shards, or --files-from FILE");
    }
    align_collection::input::check_inputs(&inputs)?;
    let model_name = args.model.name()?;
    let align = args.model.load(device)?;
    align.model.vision_model.prepare();
    let opts = IndexOptions {
        inputs,
        list: ListOptions {
            include_hidden: args.include_hidden,
        },
        shard: args.shard.unwrap_or(Shard::ALL),
        model: model_name,
        text: args.text,
        emb_dtype: match args.emb_dtype {
            Dtype::F16 => EmbDtype::F16,
            Dtype::F32 => EmbDtype::F32,
        },
        batch_size: args
            .batch_size
            .unwrap_or_else(|| crate::device::default_image_batch(device))
            as usize,
        checkpoint_every: Duration::from_secs(args.checkpoint_secs),
        partition_rows: args.partition_rows as usize,
        decode: *align.images.decode_options(),
    };
    let loaded = Instant::now();
    let summary = crate::progress::with_progress(|progress| {
        let model = crate::embedder::AlignEmbedder { align: &align };
        align_collection::index(&args.out, &opts, &model, progress)
    })?;
    let seconds = loaded.elapsed().as_secs_f64();
    let rate = summary.embedded as f64 / seconds.max(1e-9);
    // The HNSW indices follow the committed partitions (for `align search` / `align serve`).
    let ann_start = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ann = align_search::ann::update(&args.out, threads)?;
    let ann_seconds = ann_start.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} embedded, {} already present, {} failed, {} removed; {seconds:.1} s ({rate:.2} images/s), \
         model load {:.2} s, search index {ann_seconds:.2} s",
        args.out.display(),
        summary.embedded,
        summary.present,
        summary.failed,
        summary.removed,
        (loaded - start).as_secs_f64(),
    );
    if !summary.listing_complete {
        eprintln!(
            "align: some folders or archives could not be read (see {}): rows under them were kept",
            args.out.join("failures").display()
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "out": args.out.to_string_lossy(),
            "embedded": summary.embedded,
            "present": summary.present,
            "failed": summary.failed,
            "removed": summary.removed,
            "partitions_written": summary.partitions,
            "listing_complete": summary.listing_complete,
            "seconds": seconds,
            "images_per_second": rate,
            "search_index": ann.iter().map(|(m, u)| (m.name().to_string(), serde_json::json!({
                "vectors": u.size, "added": u.added, "removed": u.removed,
            }))).collect::<serde_json::Map<_, _>>(),
        })
    );
    Ok(())
}

/// The lines of `path` (`-`: standard input), empty ones skipped.
fn read_list(path: &PathBuf) -> anyhow::Result<Vec<PathBuf>> {
    let context = || format!("--files-from {}", path.display());
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(context)?,
        ))
    };
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line.with_context(context)?;
        if !line.trim().is_empty() {
            out.push(PathBuf::from(line.trim_end_matches(['\r', '\n'])));
        }
    }
    Ok(out)
}
