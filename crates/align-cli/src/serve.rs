//! `align serve`: clip-back's HTTP API and a search page over indexed collections
//! ([`align_serve`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use align_search::{Collection, OpenOptions};
use anyhow::{Context, bail};

use crate::hub::ModelArgs;

#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A collection to serve under NAME (`indice_name`): NAME=OUT, OUT an `align index` output.
    /// Repeat for several.
    #[arg(long = "index", value_name = "NAME=OUT", required = true)]
    indices: Vec<String>,
    /// Address to listen on (loopback by default: serving beyond this machine is a choice).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port).
    #[arg(long, default_value_t = 1234)]
    port: u16,
    /// Largest request body, in MiB (base64 images included).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_body_mb: u64,
    /// Most results one query may ask for (num_images, num_result_ids; deduplication compares
    /// every pair of them).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_results: u64,
    /// Largest query image, in megapixels.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    max_megapixels: u64,
    /// Let pages from this web origin call the API from a browser (CORS), e.g.
    /// https://rom1504.github.io for clip-retrieval's hosted front-end; `*` for any. Repeat
    /// for several. None by default: other sites cannot read the collection through a browser.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// HNSW candidates kept while searching (ef).
    #[arg(long, default_value_t = align_search::ann::EXPANSION_SEARCH as u64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    ef: u64,
}

const AFTER_HELP: &str = "\
Routes: GET / (search page), GET /indices-list, POST /knn-service, POST /metadata,
GET /image/NAME/ID (JPEG thumbnail), GET /metrics (Prometheus), GET /health.
clip-retrieval's ClipClient works against it: ClipClient(url=\"http://HOST:PORT/knn-service\",
indice_name=NAME). The safety, violence, aesthetic and mclip fields are accepted, not honoured;
image_url is refused (the server fetches nothing). Without --model / --model-id, the model
recorded by the first index's align.json.

Stdout: one JSON line {\"url\": ..., \"indices\": [...]} once listening; logs go to stderr.";

/// Whether `origin` is not `scheme://host[:port]`.
fn origin_invalid(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return true;
    };
    scheme.is_empty() || rest.is_empty() || rest.contains('/') || !origin.is_ascii()
}

pub fn run(args: &Args, device: &burn::tensor::Device) -> anyhow::Result<()> {
    for origin in &args.cors_origins {
        if origin != "*" && origin_invalid(origin) {
            bail!("--cors-origin {origin:?}: expected an origin such as https://example.org, or *");
        }
    }
    let mut indices: Vec<(String, Collection)> = Vec::new();
    for spec in &args.indices {
        let Some((name, out)) = spec.split_once('=') else {
            bail!("--index {spec:?}: expected NAME=OUT");
        };
        if name.is_empty() || indices.iter().any(|(n, _)| n == name) {
            bail!("--index {spec:?}: the name must be non-empty and unique");
        }
        let collection = Collection::open(
            &PathBuf::from(out),
            OpenOptions {
                expansion: args.ef as usize,
            },
        )
        .with_context(|| format!("--index {spec}"))?;
        indices.push((name.to_string(), collection));
    }
    let dims: Vec<usize> = indices.iter().map(|(_, c)| c.settings().dim).collect();
    let recorded = indices[0].1.settings().model.clone();
    for (name, c) in &indices[1..] {
        if c.settings().model != recorded {
            eprintln!(
                "align: --index {name} was embedded by {}, the first by {recorded}: queries use one model",
                c.settings().model
            );
        }
    }
    let align = args.model.or_recorded(&recorded).load(device)?;
    // Both towers' fused copies now, not in the first queries.
    align.model.vision_model.prepare();
    align.prepare_text()?;
    let mut model = crate::query::QueryModel::new(align);
    model.decode.max_pixels = args.max_megapixels * 1_000_000;
    let dim = model.align.config.projection_dim;
    if let Some(d) = dims.iter().find(|&&d| d != dim) {
        bail!("the model's embeddings have {dim} values, an index's have {d}");
    }
    let decode = model.decode;
    let options = align_serve::Options {
        body_bytes: (args.max_body_mb as usize) << 20,
        results: args.max_results as usize,
        cors_origins: args.cors_origins.clone(),
    };
    let names: Vec<String> = indices.iter().map(|(n, _)| n.clone()).collect();
    let state = Arc::new(align_serve::State::new(
        indices,
        Box::new(model),
        options,
        decode,
    ));

    // The blocking pool runs the model (one query at a time) and the searches, all CPU-bound:
    // twice the cores keeps them busy; a fixed set of long-lived threads keeps memory steady.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(2 * cores)
        .thread_keep_alive(std::time::Duration::from_secs(300))
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        let host = if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let url = format!("http://{host}:{}", addr.port());
        eprintln!("align: serving {} at {url}/", names.join(", "));
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "{}",
            serde_json::json!({ "url": url, "indices": names })
        )?;
        stdout.flush()?;
        drop(stdout);
        align_serve::serve(listener, state).await?;
        Ok(())
    })
}
