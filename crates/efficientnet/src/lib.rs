//! EfficientNet on burn, numerically equal to Hugging Face transformers' `EfficientNetModel`
//! and `AlignVisionModel` (the vision tower of ALIGN, `kakaobrain/align-base`).
//!
//! ```no_run
//! use burn::tensor::{Device, Tensor};
//! use efficientnet::EfficientNet;
//!
//! let device = Device::default();
//! // a directory with config.json (ALIGN or EfficientNet) and model.safetensors
//! let model = EfficientNet::from_dir("align-base", &device)?;
//! let pixels = Tensor::<4>::zeros([1, 3, 289, 289], &device);
//! let out = model.forward(pixels)?;
//! assert_eq!(out.pooler_output.dims(), [1, 640]);
//! # Ok::<(), efficientnet::Error>(())
//! ```
//!
//! The network is built from the config alone (`round_filters` / `round_repeats`, kernel sizes,
//! strides, `depthwise_padding`, ...), uses the reference's fixed paddings (stem `(0, 1, 0, 1)`,
//! `correct_pad` on stride-2 depthwise convs) and folds every BatchNorm into the preceding
//! convolution at load time.

mod config;
mod error;
mod folded;
mod fused;
mod in_place;
mod layers;
mod load;
mod model;

pub use checkpoint::Error as CheckpointError;
pub use config::{Activation, BlockSpec, EfficientNetConfig, PoolingType};
pub use error::{Error, Result};
pub use layers::{
    Block, DepthwiseLayer, Embeddings, Encoder, Expansion, Projection, SqueezeExcite,
};
pub use model::{DetailedOutput, EfficientNet, Output};
