use std::path::Path;

use bert::BertConfig;
use efficientnet::EfficientNetConfig;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// `AlignConfig` from an HF `config.json`: the two towers' configs, the projection width and
/// the initial temperature. Fields that an older `save_pretrained` left out of the nested
/// configs (it wrote only the values that differ from the class defaults) take transformers'
/// `AlignTextConfig` / `AlignVisionConfig` defaults, as transformers itself does.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignConfig {
    pub text_config: BertConfig,
    pub vision_config: EfficientNetConfig,
    pub projection_dim: usize,
    pub temperature_init_value: f64,
}

#[derive(Deserialize)]
struct RawAlignConfig {
    #[serde(default)]
    text_config: Map<String, Value>,
    #[serde(default)]
    vision_config: Map<String, Value>,
    #[serde(default = "default_projection_dim")]
    projection_dim: usize,
    #[serde(default = "default_temperature")]
    temperature_init_value: f64,
}

fn default_projection_dim() -> usize {
    640
}
fn default_temperature() -> f64 {
    1.0
}

/// transformers' `AlignTextConfig()` defaults (BERT-base, uncased vocabulary).
fn text_defaults() -> Map<String, Value> {
    let Value::Object(map) = json!({
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute"
    }) else {
        unreachable!("a JSON object literal")
    };
    map
}

impl AlignConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = checkpoint::read_to_string(path)?;
        Self::from_json_str(&text, path)
    }

    /// Parses the text of a `config.json`; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Self> {
        let config_error = |message: String| Error::Config {
            path: origin.to_path_buf(),
            message,
        };
        let raw: RawAlignConfig =
            serde_json::from_str(text).map_err(|e| config_error(e.to_string()))?;
        let mut text_map = text_defaults();
        text_map.extend(raw.text_config);
        let text_config: BertConfig = serde_json::from_value(Value::Object(text_map))
            .map_err(|e| config_error(format!("text_config: {e}")))?;
        text_config
            .validate(origin)
            .map_err(|e| config_error(format!("text_config: {e}")))?;
        let vision_config: EfficientNetConfig =
            serde_json::from_value(Value::Object(raw.vision_config))
                .map_err(|e| config_error(format!("vision_config: {e}")))?;
        vision_config
            .validate()
            .map_err(|e| config_error(format!("vision_config: {e}")))?;
        if raw.projection_dim == 0 {
            return Err(config_error("projection_dim must be > 0".into()));
        }
        Ok(Self {
            text_config,
            vision_config,
            projection_dim: raw.projection_dim,
            temperature_init_value: raw.temperature_init_value,
        })
    }
}
