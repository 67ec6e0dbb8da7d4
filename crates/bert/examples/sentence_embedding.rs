//! Sentence embeddings with a BERT checkpoint (sentence-transformers semantics: mean over the
//! non-padding tokens of the last hidden state, L2-normalised).
//!
//! ```text
//! cargo run --release -p bert --example sentence_embedding -- --model <HF model dir> <TEXT>...
//! ```
//!
//! The directory holds `config.json`, `model.safetensors` and a tokenizer: `tokenizer.json`, or
//! `vocab.txt` (+ `tokenizer_config.json` for `do_lower_case`) when there is no tokenizer.json.
//! Any padding/truncation baked into tokenizer.json is replaced: texts are padded to the longest
//! one and truncated to the model's `max_position_embeddings`. Prints one JSON object per text,
//! in input order: `{"text": "...", "embedding": [...]}`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bert::{BertConfig, BertInput, BertModel, mean_pooled_normalized};
use burn::tensor::Device;
use clap::Parser;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Model, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

#[derive(Parser)]
struct Args {
    /// Hugging Face model directory.
    #[arg(long)]
    model: PathBuf,
    /// Backend: flex, ndarray or wgpu (those compiled in). Default: burn's default device,
    /// which honours BURN_DEVICE.
    #[arg(long)]
    device: Option<String>,
    /// Texts to embed, processed as one padded batch.
    #[arg(required = true)]
    texts: Vec<String>,
}

fn device(name: Option<&str>) -> Result<Device> {
    match name {
        None => Ok(Device::default()),
        #[cfg(feature = "flex")]
        Some("flex") => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        Some("ndarray") => Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        Some("wgpu") => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        Some(other) => {
            let compiled: Vec<&str> = [
                cfg!(feature = "flex").then_some("flex"),
                cfg!(feature = "ndarray").then_some("ndarray"),
                cfg!(feature = "wgpu").then_some("wgpu"),
            ]
            .into_iter()
            .flatten()
            .collect();
            bail!(
                "device `{other}` is not available; compiled backends: {}",
                compiled.join(", ")
            )
        }
    }
}

fn load_tokenizer(dir: &Path, max_len: usize) -> Result<Tokenizer> {
    let json = dir.join("tokenizer.json");
    let mut tokenizer = if json.is_file() {
        Tokenizer::from_file(&json).map_err(|e| anyhow::anyhow!("{}: {e}", json.display()))?
    } else {
        let vocab = dir.join("vocab.txt");
        let lowercase = match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("{}", dir.join("tokenizer_config.json").display()))?
                .get("do_lower_case")
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
            Err(_) => true,
        };
        let model = WordPiece::from_file(&vocab.to_string_lossy())
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| anyhow::anyhow!("{}: {e}", vocab.display()))?;
        let id = |t: &str| {
            model
                .get_vocab()
                .get(t)
                .copied()
                .with_context(|| format!("{} has no {t}", vocab.display()))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let mut tokenizer = Tokenizer::new(model);
        tokenizer
            .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new(
                ("[SEP]".into(), sep),
                ("[CLS]".into(), cls),
            )));
        tokenizer
    };
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        pad_id: 0,
        pad_token: "[PAD]".into(),
        ..Default::default()
    }));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..Default::default()
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(tokenizer)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = device(args.device.as_deref())?;
    let config = BertConfig::from_file(args.model.join("config.json"))?;
    let model =
        BertModel::from_safetensors(args.model.join("model.safetensors"), &config, &device)?;
    let tokenizer = load_tokenizer(&args.model, config.max_position_embeddings)?;

    let encodings = tokenizer
        .encode_batch(args.texts.clone(), true)
        .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
    let ids: Vec<Vec<u32>> = encodings.iter().map(|e| e.get_ids().to_vec()).collect();
    let mask: Vec<Vec<u32>> = encodings
        .iter()
        .map(|e| e.get_attention_mask().to_vec())
        .collect();
    let input = BertInput::new(&config, &ids, &mask, None, &device)?;
    let out = model.forward(
        input.input_ids,
        input.attention_mask.clone(),
        input.token_type_ids,
    );
    let embeddings = mean_pooled_normalized(out.last_hidden_state, input.attention_mask);
    let [batch, dim] = embeddings.dims();
    let values = embeddings
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for (i, text) in args.texts.iter().enumerate().take(batch) {
        let line = serde_json::json!({
            "text": text,
            "embedding": &values[i * dim..(i + 1) * dim],
        });
        println!("{line}");
    }
    Ok(())
}
