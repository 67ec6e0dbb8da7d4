//! BERT (Hugging Face `BertModel`) on burn.
//!
//! * [`BertConfig`] is read straight from an HF `config.json`.
//! * [`BertModel`] mirrors the checkpoint's module tree and loads `model.safetensors` with
//!   [`BertModel::from_safetensors`] (keys with or without a `bert.` / `text_model.` prefix).
//! * The model code names no backend: it runs on whichever burn `Device` it is given.
//!
//! ```no_run
//! use bert::{BertConfig, BertInput, BertModel};
//! # fn main() -> bert::Result<()> {
//! let device = burn::tensor::Device::default();
//! let config = BertConfig::from_file("model/config.json")?;
//! let model = BertModel::from_safetensors("model/model.safetensors", &config, &device)?;
//! let input = BertInput::new(&config, &[vec![101, 7592, 102]], &[vec![1, 1, 1]], None, &device)?;
//! let out = model.forward(input.input_ids, input.attention_mask, input.token_type_ids);
//! println!("{:?}", out.last_hidden_state.dims());
//! # Ok(()) }
//! ```

mod config;
mod error;
mod fused;
mod input;
mod load;
mod model;

pub use checkpoint::Error as CheckpointError;
pub use config::{BertConfig, HiddenAct};
pub use error::{Error, Result};
pub use input::BertInput;
pub use load::{KEY_REMAPS, checkpoint_key};
pub use model::{
    BertAttention, BertEmbeddings, BertEncoder, BertIntermediate, BertLayer, BertModel, BertOutput,
    BertOutputs, BertPooler, BertSelfAttention, BertSelfOutput, mean_pooled_normalized,
};
