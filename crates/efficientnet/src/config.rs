//! `EfficientNetConfig`: HF `AlignVisionConfig` / `EfficientNetConfig` JSON.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Pooling applied to the last hidden state (`pooling_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolingType {
    /// `nn.AvgPool2d(hidden_dim, ceil_mode=True)`: the mean over H, W.
    Mean,
    /// `nn.MaxPool2d(hidden_dim, ceil_mode=True)`: the max over H, W.
    Max,
}

/// Activation named by `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `swish` / `silu`.
    Silu,
    /// `relu`.
    Relu,
    /// `gelu` (exact erf).
    Gelu,
}

/// The architecture of an HF EfficientNet: ALIGN's `vision_config` or a standalone
/// `google/efficientnet-b*` `config.json`. Field names and defaults are transformers'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfficientNetConfig {
    /// `align_vision_model` (no top conv) or `efficientnet` (top 1x1 conv + BN + act).
    #[serde(default = "d_model_type")]
    pub model_type: String,
    /// `architectures` of the checkpoint; `EfficientNetForImageClassification` adds a classifier.
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// Label names; their count is the classifier width.
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default = "d_num_channels")]
    pub num_channels: usize,
    /// Nominal input size (informational: the network runs on any size).
    #[serde(default = "d_image_size")]
    pub image_size: serde_json::Value,
    #[serde(default = "d_width")]
    pub width_coefficient: f64,
    #[serde(default = "d_depth")]
    pub depth_coefficient: f64,
    #[serde(default = "d_divisor")]
    pub depth_divisor: usize,
    #[serde(default = "d_kernel_sizes")]
    pub kernel_sizes: Vec<usize>,
    #[serde(default = "d_in_channels")]
    pub in_channels: Vec<usize>,
    #[serde(default = "d_out_channels")]
    pub out_channels: Vec<usize>,
    /// Block indices whose stride-2 depthwise conv uses symmetric `k // 2` padding.
    #[serde(default)]
    pub depthwise_padding: Vec<usize>,
    #[serde(default = "d_strides")]
    pub strides: Vec<usize>,
    #[serde(default = "d_repeats")]
    pub num_block_repeats: Vec<usize>,
    #[serde(default = "d_expand")]
    pub expand_ratios: Vec<usize>,
    #[serde(default = "d_se")]
    pub squeeze_expansion_ratio: f64,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Kernel of the final pooling (only its size matters; the pooling is global).
    #[serde(default = "d_hidden_dim")]
    pub hidden_dim: usize,
    #[serde(default = "d_pooling")]
    pub pooling_type: PoolingType,
    #[serde(default = "d_eps")]
    pub batch_norm_eps: f64,
}

fn d_model_type() -> String {
    "align_vision_model".into()
}
fn d_num_channels() -> usize {
    3
}
fn d_image_size() -> serde_json::Value {
    600.into()
}
fn d_width() -> f64 {
    2.0
}
fn d_depth() -> f64 {
    3.1
}
fn d_divisor() -> usize {
    8
}
fn d_kernel_sizes() -> Vec<usize> {
    vec![3, 3, 5, 3, 5, 5, 3]
}
fn d_in_channels() -> Vec<usize> {
    vec![32, 16, 24, 40, 80, 112, 192]
}
fn d_out_channels() -> Vec<usize> {
    vec![16, 24, 40, 80, 112, 192, 320]
}
fn d_strides() -> Vec<usize> {
    vec![1, 2, 2, 2, 1, 2, 1]
}
fn d_repeats() -> Vec<usize> {
    vec![1, 2, 2, 3, 3, 4, 1]
}
fn d_expand() -> Vec<usize> {
    vec![1, 6, 6, 6, 6, 6, 6]
}
fn d_se() -> f64 {
    0.25
}
fn d_act() -> String {
    "swish".into()
}
fn d_hidden_dim() -> usize {
    2560
}
fn d_pooling() -> PoolingType {
    PoolingType::Mean
}
fn d_eps() -> f64 {
    1e-3
}

impl Default for EfficientNetConfig {
    /// transformers' `AlignVisionConfig()` (EfficientNet-B7, no top conv).
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

/// One MBConv block, fully resolved from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    /// Index of the block in `encoder.blocks`.
    pub index: usize,
    /// Stage (index into the per-stage config lists).
    pub stage: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    /// Width after expansion (`in_dim` when `expand_ratio == 1`).
    pub expanded_dim: usize,
    /// Squeeze-excite width, from the block input width.
    pub se_dim: usize,
    pub kernel_size: usize,
    pub stride: usize,
    /// Depthwise padding as (top, left, bottom, right).
    pub padding: [usize; 4],
    pub expand: bool,
    /// Residual connection (stride 1 and not the first block of its stage).
    pub residual: bool,
}

impl EfficientNetConfig {
    /// Parses either a vision config or a full ALIGN `config.json` (uses its `vision_config`).
    pub fn from_json_str(json: &str) -> Result<Self> {
        Self::parse(json, None)
    }

    /// Reads a `config.json` (ALIGN, ALIGN vision or EfficientNet).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = checkpoint::read_to_string(path)?;
        Self::parse(&text, Some(path))
    }

    fn parse(json: &str, path: Option<&Path>) -> Result<Self> {
        let err = |source| Error::ConfigJson {
            path: path.map(Path::to_path_buf),
            source,
        };
        let mut value: serde_json::Value = serde_json::from_str(json).map_err(err)?;
        if let Some(vision) = value.get_mut("vision_config") {
            value = vision.take();
        }
        let config: Self = serde_json::from_value(value).map_err(err)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that a network can be built from the config.
    pub fn validate(&self) -> Result<()> {
        let n = self.in_channels.len();
        let lists: [(&'static str, usize); 6] = [
            ("out_channels", self.out_channels.len()),
            ("kernel_sizes", self.kernel_sizes.len()),
            ("strides", self.strides.len()),
            ("num_block_repeats", self.num_block_repeats.len()),
            ("expand_ratios", self.expand_ratios.len()),
            ("in_channels", n),
        ];
        if n == 0 {
            return Err(cfg_err("in_channels", "must not be empty".into()));
        }
        for (field, len) in lists {
            if len != n {
                return Err(cfg_err(
                    field,
                    format!("has {len} entries, in_channels has {n}"),
                ));
            }
        }
        if !(self.width_coefficient > 0.0 && self.width_coefficient.is_finite()) {
            return Err(cfg_err("width_coefficient", "must be > 0".into()));
        }
        if !(self.depth_coefficient > 0.0 && self.depth_coefficient.is_finite()) {
            return Err(cfg_err("depth_coefficient", "must be > 0".into()));
        }
        if self.depth_divisor == 0 {
            return Err(cfg_err("depth_divisor", "must be > 0".into()));
        }
        if self.num_channels == 0 {
            return Err(cfg_err("num_channels", "must be > 0".into()));
        }
        if self.batch_norm_eps.is_nan() || self.batch_norm_eps <= 0.0 {
            return Err(cfg_err("batch_norm_eps", "must be > 0".into()));
        }
        for (s, &k) in self.kernel_sizes.iter().enumerate() {
            if k == 0 {
                return Err(cfg_err("kernel_sizes", format!("entry {s} is 0")));
            }
        }
        for (s, &st) in self.strides.iter().enumerate() {
            if st != 1 && st != 2 {
                return Err(cfg_err(
                    "strides",
                    format!("entry {s} is {st}; the reference supports 1 and 2"),
                ));
            }
            if st == 2 && self.kernel_sizes[s] < 2 {
                return Err(cfg_err(
                    "kernel_sizes",
                    format!("entry {s} is {} at stride 2", self.kernel_sizes[s]),
                ));
            }
        }
        for (s, &r) in self.num_block_repeats.iter().enumerate() {
            if r == 0 {
                return Err(cfg_err("num_block_repeats", format!("entry {s} is 0")));
            }
        }
        for (s, &e) in self.expand_ratios.iter().enumerate() {
            if e == 0 {
                return Err(cfg_err("expand_ratios", format!("entry {s} is 0")));
            }
        }
        self.activation()?;
        if self.has_top_conv() && self.top_dim() != self.hidden_dim {
            return Err(cfg_err(
                "hidden_dim",
                format!(
                    "is {}, but the top conv has round_filters(1280) = {} channels",
                    self.hidden_dim,
                    self.top_dim()
                ),
            ));
        }
        Ok(())
    }

    /// transformers' `round_filters`.
    pub fn round_filters(&self, channels: usize) -> usize {
        let divisor = self.depth_divisor as f64;
        let c = channels as f64 * self.width_coefficient;
        let mut new =
            divisor.max(((c + divisor / 2.0) as i64 / self.depth_divisor as i64) as f64 * divisor);
        if new < 0.9 * c {
            new += divisor;
        }
        new as usize
    }

    /// transformers' `round_repeats`: `ceil(depth_coefficient * repeats)`.
    pub fn round_repeats(&self, repeats: usize) -> usize {
        (self.depth_coefficient * repeats as f64).ceil() as usize
    }

    /// Stem output width (`round_filters(32)`, fixed in the reference).
    pub fn stem_dim(&self) -> usize {
        self.round_filters(32)
    }

    /// Standalone EfficientNet (`model_type == "efficientnet"`): top 1x1 conv + BN + activation.
    pub fn has_top_conv(&self) -> bool {
        self.model_type == "efficientnet"
    }

    /// Width of the top conv, `round_filters(1280)`.
    pub fn top_dim(&self) -> usize {
        self.round_filters(1280)
    }

    /// Number of classifier outputs, when the checkpoint is an `EfficientNetForImageClassification`.
    pub fn num_labels(&self) -> Option<usize> {
        let is_classifier = self
            .architectures
            .as_ref()
            .is_some_and(|a| a.iter().any(|s| s == "EfficientNetForImageClassification"));
        match (is_classifier, &self.id2label) {
            (true, Some(labels)) if !labels.is_empty() => Some(labels.len()),
            (true, None) => Some(2),
            _ => None,
        }
    }

    /// Width of `last_hidden_state` / `pooler_output`.
    pub fn output_dim(&self) -> usize {
        if self.has_top_conv() {
            self.top_dim()
        } else {
            self.round_filters(*self.out_channels.last().expect("validated non-empty"))
        }
    }

    /// The activation named by `hidden_act`.
    pub fn activation(&self) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "swish" | "silu" => Ok(Activation::Silu),
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(cfg_err(
                "hidden_act",
                format!("`{other}` is not supported (swish, silu, relu, gelu)"),
            )),
        }
    }

    /// All MBConv blocks, in checkpoint order.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let mut blocks = Vec::new();
        for stage in 0..self.in_channels.len() {
            let out_dim = self.round_filters(self.out_channels[stage]);
            let k = self.kernel_sizes[stage];
            let e = self.expand_ratios[stage];
            for j in 0..self.round_repeats(self.num_block_repeats[stage]) {
                let index = blocks.len();
                let in_dim = if j == 0 {
                    self.round_filters(self.in_channels[stage])
                } else {
                    out_dim
                };
                let stride = if j == 0 { self.strides[stage] } else { 1 };
                let padding = if stride == 2 {
                    if self.depthwise_padding.contains(&index) {
                        [k / 2; 4]
                    } else {
                        // correct_pad(adjust=True): left/top k//2 - 1, right/bottom k//2
                        [k / 2 - 1, k / 2 - 1, k / 2, k / 2]
                    }
                } else {
                    // padding="same" at stride 1
                    let lo = (k - 1) / 2;
                    [lo, lo, k - 1 - lo, k - 1 - lo]
                };
                blocks.push(BlockSpec {
                    index,
                    stage,
                    in_dim,
                    out_dim,
                    expanded_dim: in_dim * e,
                    se_dim: ((in_dim as f64 * self.squeeze_expansion_ratio) as usize).max(1),
                    kernel_size: k,
                    stride,
                    padding,
                    expand: e != 1,
                    residual: stride == 1 && j > 0,
                });
            }
        }
        blocks
    }

    /// Index of the last block of every stage (where the stage outputs are taken).
    pub fn stage_ends(&self) -> Vec<usize> {
        let mut total = 0;
        self.num_block_repeats
            .iter()
            .map(|&r| {
                total += self.round_repeats(r);
                total - 1
            })
            .collect()
    }
}

fn cfg_err(field: &'static str, message: String) -> Error {
    Error::Config { field, message }
}
