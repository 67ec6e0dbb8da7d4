//! `align search`: the rows of an indexed collection nearest to a text, an image or an
//! embedding, as JSON lines (or paths).

use std::io::Write;
use std::path::PathBuf;

use align_search::{Collection, Method, Modality, OpenOptions};
use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use crate::hub::ModelArgs;

#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The collection: an `align index` output folder.
    #[arg(long, value_name = "OUT")]
    index: PathBuf,
    /// Number of results.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    k: u64,
    /// Search by this image file instead of a text.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["query", "embedding"])]
    image: Option<PathBuf>,
    /// Search by a stored embedding: a .npy file of one vector ([dim] or [1, dim]).
    #[arg(long, value_name = "FILE.npy", conflicts_with = "query")]
    embedding: Option<PathBuf>,
    /// Which embeddings to search: the images', or the captions' (indexed with --text).
    #[arg(long, value_enum, default_value_t = ModalityArg::Image)]
    modality: ModalityArg,
    /// Add every metadata column to each result.
    #[arg(long, conflicts_with = "paths")]
    metadata: bool,
    /// Print only the image paths, one a line.
    #[arg(long)]
    paths: bool,
    /// exact: scan every vector; ann: the HNSW index; auto: exact up to 50,000 rows.
    #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
    method: MethodArg,
    /// HNSW candidates kept while searching (ef): higher is slower and more exact.
    #[arg(long, default_value_t = align_search::ann::EXPANSION_SEARCH as u64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    ef: u64,
    /// The query text. Texts in double quotes combine: "beach" + "sunset" - 0.5:"people".
    query: Option<String>,
}

const AFTER_HELP: &str = "\
Without --model / --model-id the query is embedded by the model recorded in OUT/align.json.

Stdout: one JSON object a result, best first:
  {\"rank\":1,\"id\":..,\"similarity\":..,\"image_path\":..,\"caption\":..}
`id` is the row's position in OUT (img_emb files in name order, as clip-retrieval counts).
Similarity is the inner product of L2-normalised embeddings (cosine).";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModalityArg {
    Image,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MethodArg {
    Auto,
    Exact,
    Ann,
}

pub fn run(args: &Args, device: &burn::tensor::Device) -> anyhow::Result<()> {
    let collection = Collection::open(
        &args.index,
        OpenOptions {
            expansion: args.ef as usize,
        },
    )?;
    let modality = match args.modality {
        ModalityArg::Image => Modality::Image,
        ModalityArg::Text => Modality::Text,
    };
    let query = if let Some(path) = &args.embedding {
        let v = read_embedding(path)?;
        align_search::query::normalize(v).with_context(|| path.display().to_string())?
    } else {
        let model = crate::query::QueryModel::new(
            args.model
                .or_recorded(&collection.settings().model)
                .load(device)?,
        );
        match (&args.image, &args.query) {
            (Some(path), _) => {
                let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
                model.image(&bytes, &path.display().to_string())?
            }
            (None, Some(text)) => model.text(text)?,
            (None, None) => bail!("no query: give a text, --image FILE or --embedding FILE.npy"),
        }
    };
    let method = match args.method {
        MethodArg::Auto => Method::Auto,
        MethodArg::Exact => Method::Exact,
        MethodArg::Ann => Method::Ann,
    };
    let hits = collection.search(&query, args.k as usize, modality, method)?;
    let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
    let rows = collection.metadata(&ids)?;
    let mut out = std::io::stdout().lock();
    for (rank, (hit, row)) in hits.iter().zip(rows).enumerate() {
        let path = row.get("image_path").cloned().unwrap_or(Value::Null);
        if args.paths {
            writeln!(out, "{}", path.as_str().unwrap_or_default())?;
            continue;
        }
        let mut line = Map::new();
        line.insert("rank".into(), json!(rank + 1));
        line.insert("id".into(), json!(hit.id));
        line.insert("similarity".into(), json!(hit.similarity));
        line.insert("image_path".into(), path);
        line.insert(
            "caption".into(),
            row.get("caption").cloned().unwrap_or(Value::Null),
        );
        if args.metadata {
            for (k, v) in row {
                // The query's similarity wins over the caption-pair score of the same name.
                line.entry(k).or_insert(v);
            }
        }
        writeln!(out, "{}", Value::Object(line))?;
    }
    Ok(())
}

/// One vector from a `.npy` file of shape [dim] or [1, dim] (f32 or f16).
fn read_embedding(path: &PathBuf) -> anyhow::Result<Vec<f32>> {
    let context = || format!("--embedding {}", path.display());
    let bytes = std::fs::read(path).with_context(context)?;
    let npy = npyz::NpyFile::new(&bytes[..]).with_context(context)?;
    let shape = npy.shape().to_vec();
    if !(shape.len() == 1 || (shape.len() == 2 && shape[0] == 1)) {
        bail!(
            "--embedding {}: shape {shape:?}, expected one vector ([dim] or [1, dim])",
            path.display()
        );
    }
    let values: Vec<f32> = match npy.dtype() {
        npyz::DType::Plain(t) if t.to_string() == "<f2" => npy
            .into_vec::<half::f16>()
            .with_context(context)?
            .into_iter()
            .map(half::f16::to_f32)
            .collect(),
        _ => npy.into_vec::<f32>().with_context(context)?,
    };
    Ok(values)
}
