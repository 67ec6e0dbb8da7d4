//! ALIGN (kakaobrain/align-base) on burn: transformers' `AlignModel`, equal to it on the same
//! weights and inputs.
//!
//! * [`AlignConfig`] reads an HF `config.json` (nested `text_config` / `vision_config`).
//! * [`AlignModel`] = the [`bert`] text tower + the [`efficientnet`] vision tower +
//!   `text_projection` + the scalar `temperature`; [`AlignModel::from_dir`] loads an HF
//!   directory (`model.safetensors` or `pytorch_model.bin`) or a converted one (`model.bpk`).
//! * [`Align`] bundles the model with its processor (image preprocessing and tokeniser) for
//!   zero-shot classification and embeddings from files and strings;
//!   [`Align::from_pretrained`] takes a directory or a hub model id (feature `hub`, default).
//!
//! The code names no backend: pass any burn `Device` (flex, ndarray, wgpu, ...).

mod config;
mod convert;
mod error;
#[cfg(feature = "hub")]
pub mod hub;
mod load;
mod model;
mod pipeline;

pub use checkpoint::Error as CheckpointError;
pub use config::AlignConfig;
pub use convert::{ConvertReport, convert_weights};
pub use error::{Error, Result};
pub use load::{BURNPACK_FILE, ModelFiles, WeightsFormat, save_burnpack};
pub use model::{AlignModel, AlignOutput, l2_normalize};
pub use pipeline::{Align, PASS_COST_TOKENS, ZeroShot, length_batches, to_vec};
