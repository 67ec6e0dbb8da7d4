//! Loading HF `model.safetensors` checkpoints.

use std::collections::HashMap;
use std::path::Path;

use burn::store::{ApplyError, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::Device;

use crate::config::EfficientNetConfig;
use crate::error::{Error, Result};
use crate::model::EfficientNet;

/// Key prefixes of the vision tower inside bigger checkpoints (`AlignModel`,
/// `EfficientNetForImageClassification`), stripped at load time.
const PREFIXES: &str = r"^(vision_model|efficientnet)\.";

/// HF name of a burn parameter path (BatchNorm `gamma`/`beta` are `weight`/`bias` there).
fn hf_key(path: &str) -> String {
    if let Some(p) = path.strip_suffix(".gamma") {
        format!("{p}.weight")
    } else if let Some(p) = path.strip_suffix(".beta") {
        format!("{p}.bias")
    } else {
        path.to_string()
    }
}

impl EfficientNet {
    /// Reads `dir/config.json` and `dir/model.safetensors` and returns the inference form.
    pub fn from_dir(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = EfficientNetConfig::from_file(dir.join("config.json"))?;
        Self::from_safetensors(dir.join("model.safetensors"), &config, device)
    }

    /// Builds the network for `config`, loads `path` and returns its inference form
    /// ([`EfficientNet::for_inference`]: BatchNorms folded into the convs).
    pub fn from_safetensors(
        path: impl AsRef<Path>,
        config: &EfficientNetConfig,
        device: &Device,
    ) -> Result<Self> {
        let mut model = Self::new(config, device)?;
        model.load_safetensors(path)?;
        Ok(model.for_inference())
    }

    /// Loads an HF checkpoint (keys with or without `vision_model.` / `efficientnet.`) into
    /// this (unfolded) network. Every tensor of the network must be present with the right
    /// shape; `num_batches_tracked` and tensors of other towers are ignored.
    pub fn load_safetensors(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Err(source) = std::fs::metadata(path) {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        let expected: HashMap<String, Vec<usize>> = self
            .collect(None, None, false)
            .into_iter()
            .map(|t| (t.name.clone(), t.shape.to_vec()))
            .collect();
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(PREFIXES, "")
            .allow_partial(true)
            .validate(false);
        let result = self.load_from(&mut store).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if let Some(error) = result.errors.into_iter().next() {
            let message = error.to_string();
            return Err(match error {
                ApplyError::ShapeMismatch {
                    path: key,
                    expected,
                    found,
                } => Error::ShapeMismatch {
                    path: path.to_path_buf(),
                    key: hf_key(&key),
                    expected: expected.to_vec(),
                    actual: found.to_vec(),
                },
                ApplyError::DTypeMismatch { path: key, .. }
                | ApplyError::AdapterError { path: key, .. }
                | ApplyError::LoadError { path: key, .. } => Error::Tensor {
                    path: path.to_path_buf(),
                    key: hf_key(&key),
                    message,
                },
            });
        }
        if let Some((key, _)) = result.missing.into_iter().next() {
            return Err(Error::MissingKey {
                path: path.to_path_buf(),
                expected: expected.get(&key).cloned().unwrap_or_default(),
                key: hf_key(&key),
            });
        }
        // Vision tensors the config does not describe (e.g. a top conv, extra blocks).
        if let Some(key) = result.unused.into_iter().find(|k| {
            ["embeddings.", "encoder.", "classifier."]
                .iter()
                .any(|p| k.starts_with(p))
                && !k.ends_with("num_batches_tracked")
        }) {
            return Err(Error::UnexpectedKey {
                path: path.to_path_buf(),
                key,
            });
        }
        Ok(())
    }
}
