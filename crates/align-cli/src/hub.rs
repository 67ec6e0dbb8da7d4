//! Where the model comes from: `--model <DIR>` (an HF checkpoint directory or one written by
//! `convert-weights`), or a hub model id resolved through the `hf-hub` crate's cache
//! (downloading into it when the hub is reachable and `HF_HUB_OFFLINE` is not set).

use std::path::PathBuf;

use anyhow::{Context, bail};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};

/// The model used when neither `--model` nor `--model-id` is given.
pub const DEFAULT_MODEL_ID: &str = "kakaobrain/align-base";

/// Files of a hub repository that the model and processor may need; the first group must be
/// present, one file of each later group is enough.
const REQUIRED: &[&str] = &["config.json"];
const WEIGHTS: &[&str] = &["model.safetensors", "pytorch_model.bin"];
const PROCESSOR: &[&str] = &["preprocessor_config.json", "processor_config.json"];
const TOKENIZER: &[&str] = &["tokenizer.json", "vocab.txt"];
const OPTIONAL: &[&str] = &["tokenizer_config.json", "special_tokens_map.json"];

#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Model directory: a Hugging Face checkpoint (config.json + model.safetensors or
    /// pytorch_model.bin + processor files) or a directory written by `convert-weights`.
    #[arg(long, conflicts_with = "model_id")]
    pub model: Option<PathBuf>,
    /// Hugging Face hub model id, taken from the hf-hub cache (HF_HOME / HF_HUB_CACHE) or
    /// downloaded into it. Default when --model is not given: kakaobrain/align-base.
    #[arg(long)]
    pub model_id: Option<String>,
}

impl ModelArgs {
    /// The local directory holding the model files.
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.model {
            if !dir.is_dir() {
                bail!("--model {}: not a directory", dir.display());
            }
            return Ok(dir.clone());
        }
        let id = self.model_id.as_deref().unwrap_or(DEFAULT_MODEL_ID);
        fetch(id)
    }
}

/// A snapshot directory of `id` in the hf-hub cache with every file the model needs, fetching
/// the missing ones from the hub unless `HF_HUB_OFFLINE` is set.
pub fn fetch(id: &str) -> anyhow::Result<PathBuf> {
    let cache = Cache::from_env();
    let cached = cache.repo(Repo::model(id.to_string()));
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v != "0" && !v.is_empty());
    let api = if offline {
        None
    } else {
        Some(
            ApiBuilder::from_cache(cache.clone())
                .with_progress(true)
                .build()
                .context("starting the Hugging Face hub client")?,
        )
    };
    // A file from the cache, else from the hub; `Err` carries why it could not be had.
    let get = |file: &str| -> Result<PathBuf, String> {
        if let Some(path) = cached.get(file) {
            return Ok(path);
        }
        match &api {
            None => Err("not in the cache, and HF_HUB_OFFLINE is set".into()),
            Some(api) => api
                .model(id.to_string())
                .get(file)
                .map_err(|e| e.to_string()),
        }
    };
    let mut dir = None;
    for group in [REQUIRED, WEIGHTS, PROCESSOR, TOKENIZER] {
        let mut errors = Vec::new();
        let found = group.iter().find_map(|file| match get(file) {
            Ok(path) => Some(path),
            Err(e) => {
                errors.push(format!("{file}: {e}"));
                None
            }
        });
        let Some(path) = found else {
            bail!(
                "cannot get {id} from the Hugging Face hub or its cache at {} ({}); \
                 to work offline, pre-fill that cache or pass --model <DIR>",
                cache.path().display(),
                errors.join("; ")
            );
        };
        dir.get_or_insert_with(|| path.parent().map(PathBuf::from).unwrap_or_default());
    }
    for file in OPTIONAL {
        // Best effort: the processor has defaults for what these files hold.
        let _ = get(file);
    }
    dir.context("no files resolved")
}
