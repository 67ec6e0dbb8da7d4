//! Loading Hugging Face checkpoints (`model.safetensors`) into [`BertModel`].

use std::path::Path;

use burn::store::{
    ApplyError, ApplyResult, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::Device;

use crate::config::BertConfig;
use crate::error::{Error, Result};
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
    /// tensor or a tensor of the wrong shape is an error naming the checkpoint key.
    pub fn from_safetensors(
        path: impl AsRef<Path>,
        config: &BertConfig,
        device: &Device,
    ) -> Result<Self> {
        let path = path.as_ref();
        let checkpoint_error = |message: String| Error::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        std::fs::metadata(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .allow_partial(true)
            .validate(false);
        let keys = store_keys(&mut store).map_err(checkpoint_error)?;
        let prefix = PREFIXES
            .iter()
            .copied()
            .find(|p| {
                keys.iter()
                    .any(|k| k.starts_with(&format!("{p}embeddings.")))
            })
            .unwrap_or("");
        if !prefix.is_empty() {
            store = store.with_key_remapping(format!("^{}", regex_escape(prefix)), "");
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
            .map_err(|e| checkpoint_error(e.to_string()))?;
        check_apply_result(&result, path, prefix)?;
        Ok(model)
    }
}

fn store_keys(store: &mut SafetensorsStore) -> std::result::Result<Vec<String>, String> {
    use burn::store::ModuleStore;
    store.keys().map_err(|e| e.to_string())
}

fn regex_escape(s: &str) -> String {
    s.replace('.', r"\.")
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

/// What a burn-store [`ApplyResult`] says is wrong with a checkpoint, with tensors named by
/// their checkpoint keys and shapes in the checkpoint's own layout (see [`apply_problem`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyProblem {
    Shape {
        key: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    Missing(Vec<String>),
    Other(String),
}

/// The first problem of `result`: a load error, else the missing tensors. `key` maps a burn
/// module path to its checkpoint key. With `torch_layout`, 2-d Linear weight shapes are
/// reported as PyTorch stores them (`[out, in]`; burn holds `[in, out]`).
pub fn apply_problem(
    result: &ApplyResult,
    key: impl Fn(&str) -> String,
    torch_layout: bool,
) -> Option<ApplyProblem> {
    if let Some(error) = result.errors.first() {
        return Some(match error {
            ApplyError::ShapeMismatch {
                path: module_path,
                expected,
                found,
            } => {
                let mut expected = expected.to_vec();
                let mut actual = found.to_vec();
                if torch_layout
                    && module_path.ends_with(".weight")
                    && !module_path.contains("embeddings")
                    && expected.len() == 2
                {
                    expected.reverse();
                    actual.reverse();
                }
                ApplyProblem::Shape {
                    key: key(module_path),
                    expected,
                    actual,
                }
            }
            other => ApplyProblem::Other(other.to_string()),
        });
    }
    (!result.missing.is_empty())
        .then(|| ApplyProblem::Missing(result.missing.iter().map(|(p, _)| key(p)).collect()))
}

/// Turns the missing tensors and load errors of `result` into an [`Error`] naming checkpoint
/// keys and shapes in the checkpoint's own layout.
pub fn check_apply_result(result: &ApplyResult, path: &Path, prefix: &str) -> Result<()> {
    let path = path.to_path_buf();
    match apply_problem(result, |p| checkpoint_key(p, prefix), true) {
        None => Ok(()),
        Some(ApplyProblem::Shape {
            key,
            expected,
            actual,
        }) => Err(Error::ShapeMismatch {
            path,
            key,
            expected,
            actual,
        }),
        Some(ApplyProblem::Missing(keys)) => Err(Error::MissingKeys { path, keys }),
        Some(ApplyProblem::Other(message)) => Err(Error::Checkpoint { path, message }),
    }
}
