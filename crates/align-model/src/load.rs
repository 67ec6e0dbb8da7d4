//! Finding and loading the files of a model directory: a Hugging Face checkpoint
//! (`model.safetensors` or `pytorch_model.bin`) or a directory written by
//! [`convert_weights`](crate::convert_weights) (`model.bpk`, burn's Burnpack format).

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    ApplyError, ApplyResult, BurnpackStore, ModuleAdapter, ModuleContext, ModuleSnapshot,
    ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use burn::tensor::{AllocationProperty, Bytes, Device, Shape, Tensor};

use crate::config::AlignConfig;
use crate::error::{Error, Result};
use crate::model::AlignModel;

/// File name of the converted weights.
pub const BURNPACK_FILE: &str = "model.bpk";

/// How the weights of a model directory are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// `model.safetensors` (transformers' `save_pretrained`).
    Safetensors,
    /// `pytorch_model.bin` (a torch zip pickle; older hub repositories).
    PytorchBin,
    /// `model.bpk`, written by `convert-weights` (burn's own layout; memory-mapped, its tensors
    /// used in place: read from the file on first use, never copied).
    Burnpack,
}

/// The files of a model directory.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: PathBuf,
    pub format: WeightsFormat,
}

impl ModelFiles {
    /// Finds `config.json` and the weights in `dir`, preferring the converted `model.bpk`,
    /// then `model.safetensors`, then `pytorch_model.bin`.
    pub fn find(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                dir: dir.to_path_buf(),
                message: "not a directory".into(),
            });
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(Error::MissingFile {
                dir: dir.to_path_buf(),
                message: "no config.json".into(),
            });
        }
        let candidates = [
            (BURNPACK_FILE, WeightsFormat::Burnpack),
            ("model.safetensors", WeightsFormat::Safetensors),
            ("pytorch_model.bin", WeightsFormat::PytorchBin),
        ];
        let (weights, format) = candidates
            .iter()
            .map(|(name, format)| (dir.join(name), *format))
            .find(|(path, _)| path.is_file())
            .ok_or_else(|| Error::MissingFile {
                dir: dir.to_path_buf(),
                message: "no weights: expected model.bpk, model.safetensors or pytorch_model.bin"
                    .into(),
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
            format,
        })
    }
}

impl AlignModel {
    /// Loads `config.json` and the weights of `dir` (see [`ModelFiles::find`]) and prepares the
    /// model for inference (BatchNorms folded into the convolutions).
    pub fn from_dir(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let files = ModelFiles::find(dir)?;
        let config = AlignConfig::from_file(&files.config)?;
        Self::from_weights(&files.weights, files.format, &config, device)
    }

    /// Builds the model for `config`, loads `weights` (stored as `format`) and prepares it for
    /// inference ([`Self::prepare_for_inference`]).
    pub fn from_weights(
        weights: &Path,
        format: WeightsFormat,
        config: &AlignConfig,
        device: &Device,
    ) -> Result<Self> {
        let mut model = Self::new(config, device)?;
        model.load_weights(weights, format)?;
        Ok(model.prepare_for_inference())
    }

    /// The towers' inference forms ([`efficientnet::EfficientNet::for_inference`]: on flex
    /// the fused path with BatchNorms folded into its copy of the weights, elsewhere the
    /// BatchNorms folded into the convolutions; [`bert::BertModel::for_inference`]: on flex
    /// the fused path).
    pub fn prepare_for_inference(self) -> Self {
        Self {
            vision_model: self.vision_model.for_inference(),
            text_model: self.text_model.for_inference(),
            ..self
        }
    }

    /// Loads weights into this (unfolded) model. Every parameter must be present with the
    /// expected shape; integer buffers (`num_batches_tracked`, `position_ids`) and the unused
    /// text pooler are ignored.
    pub fn load_weights(&mut self, path: &Path, format: WeightsFormat) -> Result<()> {
        checkpoint::require_file(path)?;
        let checkpoint_error = |message: String| checkpoint::unreadable(path, message);
        let result = match format {
            WeightsFormat::Burnpack => {
                let mut store = BurnpackStore::from_bytes(Some(map_file(path)?))
                    .allow_partial(true)
                    .validate(false);
                self.load_from(&mut store)
                    .map_err(|e| checkpoint_error(e.to_string()))?
            }
            WeightsFormat::Safetensors => {
                let mut store = SafetensorsStore::from_file(path)
                    .with_from_adapter(HfAdapter)
                    .allow_partial(true)
                    .validate(false);
                for (from, to) in bert::KEY_REMAPS {
                    store = store.with_key_remapping(*from, *to);
                }
                self.load_from(&mut store)
                    .map_err(|e| checkpoint_error(e.to_string()))?
            }
            WeightsFormat::PytorchBin => {
                // PytorchStore always applies PyTorchToBurnAdapter and takes no other adapter:
                // the 0-d `temperature` is then a shape error, read separately below.
                let mut store = PytorchStore::from_file(path)
                    .allow_partial(true)
                    .validate(false);
                for (from, to) in bert::KEY_REMAPS {
                    store = store.with_key_remapping(*from, *to);
                }
                let mut result = self
                    .load_from(&mut store)
                    .map_err(|e| checkpoint_error(e.to_string()))?;
                let scalar_temperature = |e: &ApplyError| {
                    matches!(e, ApplyError::ShapeMismatch { path, found, .. }
                        if path == "temperature" && found.num_dims() == 0)
                };
                if result.errors.iter().any(scalar_temperature) {
                    result.errors.retain(|e| !scalar_temperature(e));
                    let tensor = store
                        .get_tensor("temperature")
                        .map_err(|e| checkpoint_error(e.to_string()))?
                        .ok_or_else(|| checkpoint_error("no `temperature`".into()))?;
                    let data = burn::store::bridge::to_data(tensor)
                        .map_err(|e| checkpoint_error(format!("temperature: {e}")))?;
                    let (bytes, _, dtype) = data.into_parts();
                    let data = burn::tensor::TensorData::from_bytes(bytes, [1], dtype);
                    let device = self.temperature.device();
                    self.temperature = Param::from_tensor(Tensor::from_data(data, &device));
                }
                result
            }
        };
        check(&result, path, format)
    }
}

/// `path` memory-mapped, as burn bytes that tensors can share without a copy (Burnpack keeps
/// every tensor 256-byte aligned for this): the weights stay in the page cache, where
/// `BurnpackStore::from_file` reads each tensor into a fresh buffer whose pages the kernel
/// must first zero.
fn map_file(path: &Path) -> Result<Bytes> {
    let io = |source| checkpoint::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: a read-only mapping; the file must not be truncated or rewritten in place while
    // the model lives (as with any memory-mapped checkpoint). `save_burnpack` replaces the
    // file by a rename, so that a model loaded from the old one keeps it.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(Bytes::from_shared(
        bytes::Bytes::from_owner(map),
        AllocationProperty::File,
    ))
}

/// `PyTorchToBurnAdapter` plus the 0-d `temperature` scalar reshaped to `[1]`.
#[derive(Clone)]
struct HfAdapter;

impl ModuleAdapter for HfAdapter {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        if tensor.name == "temperature" && tensor.shape.num_dims() == 0 {
            let name = tensor.name.clone();
            let dtype = tensor.dtype;
            return burn::store::bridge::map_data(tensor, name, dtype, Shape::new([1]), |data| {
                let (bytes, _, dtype) = data.into_parts();
                burn::tensor::TensorData::from_bytes(bytes, [1], dtype)
            });
        }
        PyTorchToBurnAdapter.adapt(tensor, ctx)
    }

    fn get_alternative_param_name(&self, param_name: &str, module_type: &str) -> Option<String> {
        PyTorchToBurnAdapter.get_alternative_param_name(param_name, module_type)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// The checkpoint key a module path comes from (HF names), for error messages.
fn checkpoint_key(module_path: &str, format: WeightsFormat) -> String {
    if format == WeightsFormat::Burnpack {
        return module_path.to_string();
    }
    if let Some(rest) = module_path.strip_prefix("text_model.") {
        return bert::checkpoint_key(rest, "text_model.");
    }
    checkpoint::torch_key(module_path)
}

fn check(result: &ApplyResult, path: &Path, format: WeightsFormat) -> Result<()> {
    let torch_layout = format != WeightsFormat::Burnpack;
    checkpoint::check_apply_result(result, path, |p| checkpoint_key(p, format), torch_layout)?;
    Ok(())
}

/// Writes `model` (unfolded, as loaded from a checkpoint) to `path` in burn's Burnpack format:
/// into `<path>.tmp`, renamed to `path` when complete, so that a process that has the old file
/// memory-mapped keeps reading it and no reader ever sees a partial file.
pub fn save_burnpack(model: &AlignModel, path: &Path) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut store = BurnpackStore::from_file(&tmp)
        .auto_extension(false)
        .overwrite(true);
    model.save_into(&mut store).map_err(|e| Error::Write {
        path: tmp.clone(),
        message: e.to_string(),
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
