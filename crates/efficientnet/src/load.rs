//! Loading HF `model.safetensors` checkpoints.

use std::path::Path;

use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::Device;

use crate::config::EfficientNetConfig;
use crate::error::Result;
use crate::model::EfficientNet;

/// Key prefixes of the vision tower inside bigger checkpoints (`AlignModel`,
/// `EfficientNetForImageClassification`), stripped at load time.
const PREFIXES: &str = r"^(vision_model|efficientnet)\.";

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
        checkpoint::require_file(path)?;
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(PREFIXES, "")
            .allow_partial(true)
            .validate(false);
        let result = self
            .load_from(&mut store)
            .map_err(|e| checkpoint::unreadable(path, e))?;
        checkpoint::check_apply_result(&result, path, checkpoint::torch_key, true)?;
        // Vision tensors the config does not describe (e.g. a top conv, extra blocks).
        if let Some(key) = result.unused.into_iter().find(|k| {
            ["embeddings.", "encoder.", "classifier."]
                .iter()
                .any(|p| k.starts_with(p))
                && !k.ends_with("num_batches_tracked")
        }) {
            return Err(checkpoint::Error::UnexpectedKey {
                path: path.to_path_buf(),
                key,
            }
            .into());
        }
        Ok(())
    }
}
