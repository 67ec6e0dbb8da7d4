use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Activation used in the feed-forward block (`hidden_act` in HF configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HiddenAct {
    /// Exact GELU, `x * Φ(x)` with erf (HF `"gelu"`).
    #[serde(rename = "gelu")]
    Gelu,
    /// Tanh approximation of GELU (HF `"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`).
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluApproximate,
    #[serde(rename = "relu")]
    Relu,
}

/// Configuration of a BERT encoder, read from a Hugging Face `config.json`
/// (`BertConfig`, or the `text_config` of an `AlignConfig`). Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: HiddenAct,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

fn default_hidden_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".to_string()
}

impl BertConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = checkpoint::read_to_string(path)?;
        let config: Self = serde_json::from_str(&text).map_err(|source| Error::Config {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks the values that the model cannot run with. `origin` is only used in messages.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let fail = |message: String| {
            Err(Error::UnsupportedConfig {
                path: origin.to_path_buf(),
                message,
            })
        };
        if self.position_embedding_type != "absolute" {
            return fail(format!(
                "position_embedding_type `{}` (only `absolute` is implemented)",
                self.position_embedding_type
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return fail(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 || self.type_vocab_size == 0 {
            return fail(
                "vocab_size, max_position_embeddings and type_vocab_size must be > 0".into(),
            );
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
