//! Where the model comes from: `--model <DIR>` (an HF checkpoint directory or one written by
//! `convert-weights`), or a hub model id resolved through the hub cache
//! ([`align_model::hub`]: downloading into it when the hub is reachable and `HF_HUB_OFFLINE`
//! is not set).

use std::path::{Path, PathBuf};

use align_model::Align;
use align_model::hub::{DEFAULT_MODEL_ID, snapshot_dir};
use anyhow::bail;
use burn::tensor::{Device, FloatDType};

#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Model directory: a Hugging Face checkpoint (config.json + model.safetensors or
    /// pytorch_model.bin + processor files) or a directory written by `convert-weights`.
    #[arg(long, conflicts_with = "model_id")]
    pub model: Option<PathBuf>,
    /// Hugging Face hub model id, taken from the hub cache (HF_HUB_CACHE, else HF_HOME/hub,
    /// else ~/.cache/huggingface/hub) or downloaded into it. Default when --model is not
    /// given: kakaobrain/align-base.
    #[arg(long)]
    pub model_id: Option<String>,
    /// Precision of the weights and of the computation: f16 halves the weights' memory on GPUs
    /// (wgpu); embeddings are f32 either way. On random align-base weights f16 moved image
    /// embeddings far more than text ones and was no faster (see docs/performance.md). flex's
    /// fused vision path is f32 only.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    F32,
    F16,
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
        Ok(snapshot_dir(id)?)
    }

    /// The model as output files record it: `--model`'s absolute path, or the hub id.
    pub fn name(&self) -> anyhow::Result<String> {
        Ok(match &self.model {
            Some(dir) => std::fs::canonicalize(dir)
                .map_err(|e| anyhow::anyhow!("--model {}: {e}", dir.display()))?
                .to_string_lossy()
                .into_owned(),
            None => self
                .model_id
                .clone()
                .unwrap_or_else(|| DEFAULT_MODEL_ID.to_string()),
        })
    }

    /// These arguments, or, when neither `--model` nor `--model-id` is given, the model a
    /// collection recorded (`align.json`: a directory's absolute path or a hub id).
    pub fn or_recorded(&self, recorded: &str) -> Self {
        if self.model.is_some() || self.model_id.is_some() {
            return self.clone();
        }
        let mut args = self.clone();
        if Path::new(recorded).is_absolute() {
            args.model = Some(PathBuf::from(recorded));
        } else {
            args.model_id = Some(recorded.to_string());
        }
        args
    }

    /// The model and its processor on `device`, in the precision of `--dtype`.
    pub fn load(&self, device: &Device) -> anyhow::Result<Align> {
        let align = Align::from_dir(self.resolve()?, device)?;
        Ok(match self.dtype {
            Precision::F32 => align,
            Precision::F16 => align.with_float_dtype(FloatDType::F16)?,
        })
    }
}
