//! Loading Hugging Face checkpoints (`model.safetensors`) into [`BertModel`].

use std::path::Path;

use burn::store::{ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::Device;

use crate::config::BertConfig;
use crate::error::Result;
use crate::model::BertModel;

/// Regex renames from HF BERT key names to this crate's module paths, for use with
/// `SafetensorsStore::with_key_remapping` (also by crates embedding a BERT, such as ALIGN's text
/// tower). They are applied in order to every key.
pub const KEY_REMAPS: &[(&str, &str)] = &[
    (r"\.LayerNorm\.", ".layer_norm."),
    (r"\.attention\.self\.", ".attention.self_attention."),
];

/// Checkpoint prefixes under which a BERT may be stored (`BertForX` models, ALIGN's text tower).
const PREFIXES: &[&str] = &["bert.", "text_model."];

impl BertModel {
    /// Loads a model from a Hugging Face `model.safetensors`, with keys with or without a
    /// `bert.` / `text_model.` prefix. The pooler is loaded when the checkpoint has one.
    /// Integer buffers (`position_ids`) and other unrelated tensors are ignored. A missing
    /// tensor or a tensor of the wrong shape is an error naming the checkpoint key. Returns
    /// the inference form ([`BertModel::for_inference`]).
    pub fn from_safetensors(
        path: impl AsRef<Path>,
        config: &BertConfig,
        device: &Device,
    ) -> Result<Self> {
        let path = path.as_ref();
        checkpoint::require_file(path)?;
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .allow_partial(true)
            .validate(false);
        let keys = store.keys().map_err(|e| checkpoint::unreadable(path, e))?;
        let prefix = PREFIXES
            .iter()
            .copied()
            .find(|p| {
                keys.iter()
                    .any(|k| k.starts_with(&format!("{p}embeddings.")))
            })
            .unwrap_or("");
        if !prefix.is_empty() {
            let (pattern, replacement) = checkpoint::strip_prefix(prefix);
            store = store.with_key_remapping(pattern, replacement);
        }
        for (from, to) in KEY_REMAPS {
            store = store.with_key_remapping(*from, *to);
        }
        let has_pooler = keys
            .iter()
            .any(|k| k == &format!("{prefix}pooler.dense.weight"));

        let mut model = BertModel::new(config, has_pooler, device);
        let result = model
            .load_from(&mut store)
            .map_err(|e| checkpoint::unreadable(path, e))?;
        checkpoint::check_apply_result(&result, path, |p| checkpoint_key(p, prefix), true)?;
        Ok(model.for_inference())
    }
}

/// The checkpoint key a module path was loaded from (inverse of the prefix and [`KEY_REMAPS`]
/// and of the adapter's `weight`/`bias` -> `gamma`/`beta` rename for LayerNorm).
pub fn checkpoint_key(module_path: &str, prefix: &str) -> String {
    let key = module_path
        .replace(".attention.self_attention.", ".attention.self.")
        .replace("layer_norm.gamma", "LayerNorm.weight")
        .replace("layer_norm.beta", "LayerNorm.bias")
        .replace(".layer_norm.", ".LayerNorm.");
    format!("{prefix}{key}")
}
