//! Model directories from the Hugging Face hub, through the `hf-hub` crate's cache (feature
//! `hub`, on by default).
//!
//! The cache is the one Python's `huggingface_hub` uses: `$HF_HUB_CACHE`, else `$HF_HOME/hub`,
//! else `~/.cache/huggingface/hub`. A model whose files are all in the cache is used without
//! touching the network; otherwise the missing files are downloaded into the cache, unless
//! `HF_HUB_OFFLINE` is set (to anything but `0`), in which case the error lists what is missing.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, CacheRepo, Repo};

use crate::error::{Error, Result};

/// The ALIGN checkpoint this crate is built for.
pub const DEFAULT_MODEL_ID: &str = "kakaobrain/align-base";

/// Files a model directory needs: every group must be satisfied by one of its files (the first
/// one the hub has is downloaded).
const NEEDED: &[&[&str]] = &[
    &["config.json"],
    &["model.safetensors", "pytorch_model.bin"],
    &["preprocessor_config.json", "processor_config.json"],
    &["tokenizer.json", "vocab.txt"],
];
/// Fetched alongside a download when the hub has them; the processor has defaults for what
/// they hold.
const OPTIONAL: &[&str] = &["tokenizer_config.json", "special_tokens_map.json"];

/// The hub cache named by the environment (see the module docs).
pub fn cache_from_env() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) if !dir.is_empty() => Cache::new(PathBuf::from(dir)),
        _ => Cache::from_env(),
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The snapshot directory of model `id` (e.g. `kakaobrain/align-base`) in the hub cache,
/// holding every file [`crate::Align::from_dir`] needs; downloads what is missing unless
/// `HF_HUB_OFFLINE` is set.
pub fn snapshot_dir(id: &str) -> Result<PathBuf> {
    let cache = cache_from_env();
    let cached = cache.repo(Repo::model(id.to_string()));
    let in_cache = |group: &[&str]| group.iter().find_map(|f| cached.get(f));
    let missing: Vec<&[&str]> = NEEDED
        .iter()
        .copied()
        .filter(|g| in_cache(g).is_none())
        .collect();
    if missing.is_empty() {
        return snapshot_of(&cached, id, &cache);
    }
    let hub_error = |message: String| Error::Hub {
        id: id.to_string(),
        cache: cache.path().clone(),
        message,
    };
    let describe = |groups: &[&[&str]]| {
        groups
            .iter()
            .map(|g| g.join(" or "))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if offline() {
        return Err(hub_error(format!(
            "missing from the cache: {}; HF_HUB_OFFLINE is set, so nothing is downloaded \
             (pre-fill the cache, or use a local directory)",
            describe(&missing)
        )));
    }
    let api = ApiBuilder::from_cache(cache.clone())
        .with_progress(true)
        .build()
        .map_err(|e| hub_error(format!("starting the hub client: {e}")))?;
    let repo = api.model(id.to_string());
    for group in missing {
        let mut errors = Vec::new();
        let got = group.iter().any(|file| match repo.get(file) {
            Ok(_) => true,
            Err(e) => {
                errors.push(format!("{file}: {e}"));
                false
            }
        });
        if !got {
            return Err(hub_error(format!(
                "cannot download {} ({}); to work offline, pre-fill the cache or use a local \
                 directory",
                describe(&[group]),
                errors.join("; ")
            )));
        }
    }
    for file in OPTIONAL {
        if cached.get(file).is_none() {
            // Best effort: absent from many repositories.
            let _ = repo.get(file);
        }
    }
    snapshot_of(&cached, id, &cache)
}

/// The directory of the snapshot the cache's `main` ref points at.
fn snapshot_of(cached: &CacheRepo, id: &str, cache: &Cache) -> Result<PathBuf> {
    NEEDED[0]
        .iter()
        .find_map(|f| cached.get(f))
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| Error::Hub {
            id: id.to_string(),
            cache: cache.path().clone(),
            message: "config.json vanished from the cache".into(),
        })
}
