//! BERT tokenisation with ALIGN's padding and truncation.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::Value;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use crate::{Error, Result};

/// ALIGN's text length: every text is padded (and, here, truncated) to 64 tokens.
pub const ALIGN_MAX_LENGTH: usize = 64;

/// A batch of tokenised texts, row-major `[batch, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    pub batch: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    /// All zeros (single-segment inputs).
    pub token_type_ids: Vec<i64>,
}

impl TokenBatch {
    fn data(&self, v: &[i64]) -> TensorData {
        TensorData::new(v.to_vec(), [self.batch, self.seq_len])
    }

    pub fn input_ids_data(&self) -> TensorData {
        self.data(&self.input_ids)
    }

    pub fn attention_mask_data(&self) -> TensorData {
        self.data(&self.attention_mask)
    }

    pub fn token_type_ids_data(&self) -> TensorData {
        self.data(&self.token_type_ids)
    }

    /// `(input_ids, attention_mask, token_type_ids)` as `[batch, seq_len]` int tensors.
    pub fn to_tensors(&self, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2, Int>) {
        (
            Tensor::from_data(self.input_ids_data(), device),
            Tensor::from_data(self.attention_mask_data(), device),
            Tensor::from_data(self.token_type_ids_data(), device),
        )
    }

    /// Row `i` of a field.
    pub fn row<'a>(&self, field: &'a [i64], i: usize) -> &'a [i64] {
        &field[i * self.seq_len..(i + 1) * self.seq_len]
    }
}

/// BERT WordPiece tokenizer padding and truncating to a fixed length.
///
/// Texts longer than `max_length` tokens are truncated to `max_length`, keeping `[SEP]` last.
/// (transformers' `AlignProcessor` does not truncate by default and raises on such a batch; the
/// model never saw more than 64 tokens, so we truncate.)
/// The text half of transformers' [`AlignProcessor`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/align/processing_align.py).
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
}

impl TextTokenizer {
    /// From a checkpoint directory: `tokenizer.json` if present, otherwise `vocab.txt` (with
    /// `tokenizer_config.json` when present).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json);
        }
        let vocab = dir.join("vocab.txt");
        if vocab.is_file() {
            let cfg = dir.join("tokenizer_config.json");
            return Self::from_vocab(&vocab, cfg.is_file().then_some(cfg.as_path()));
        }
        Err(Error::Missing {
            dir: dir.to_path_buf(),
            what: "tokenizer",
            looked_for: "tokenizer.json, vocab.txt",
        })
    }

    /// From a `tokenizer.json`; padding and truncation stored in it are replaced by ours.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            error: source.into(),
        })?;
        let tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| Error::Tokenizer {
            context: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::with_tokenizer(tokenizer, &path.display().to_string())
    }

    /// A BERT tokenizer from `vocab.txt` and optionally `tokenizer_config.json`
    /// (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars`, special token names), built
    /// like transformers' `BertTokenizer`.
    pub fn from_vocab(vocab: impl AsRef<Path>, config: Option<&Path>) -> Result<Self> {
        let vocab = vocab.as_ref();
        let cfg = match config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| Error::Io {
                    path: p.to_path_buf(),
                    error: source.into(),
                })?;
                let v: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
                    path: p.to_path_buf(),
                    error: source.into(),
                })?;
                Some((p, v))
            }
            None => None,
        };
        let get_bool = |key: &'static str, default: Option<bool>| -> Result<Option<bool>> {
            let Some((p, v)) = &cfg else {
                return Ok(default);
            };
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(Error::Config {
                    path: p.to_path_buf(),
                    key,
                    expected: "true or false",
                    actual: other.to_string(),
                }),
            }
        };
        let get_token = |key: &'static str, default: &str| -> String {
            let from_cfg = cfg.as_ref().and_then(|(_, v)| match v.get(key) {
                Some(Value::String(s)) => Some(s.clone()),
                // transformers 4.x sometimes stores an AddedToken dict.
                Some(Value::Object(m)) => {
                    m.get("content").and_then(Value::as_str).map(str::to_string)
                }
                _ => None,
            });
            from_cfg.unwrap_or_else(|| default.to_string())
        };
        let lowercase = get_bool("do_lower_case", Some(true))?.unwrap_or(true);
        let chinese = get_bool("tokenize_chinese_chars", Some(true))?.unwrap_or(true);
        let strip_accents = get_bool("strip_accents", None)?;
        let [unk, sep, cls, pad, mask] = [
            get_token("unk_token", "[UNK]"),
            get_token("sep_token", "[SEP]"),
            get_token("cls_token", "[CLS]"),
            get_token("pad_token", "[PAD]"),
            get_token("mask_token", "[MASK]"),
        ];

        let name = vocab.display().to_string();
        let tok_err = |message: String| Error::Tokenizer {
            context: name.clone(),
            message,
        };
        // `WordPiece::from_file` reads through a `&str` path.
        let vocab_str = vocab
            .to_str()
            .ok_or_else(|| tok_err("path is not UTF-8".into()))?;
        if !vocab.is_file() {
            return Err(Error::Io {
                path: vocab.to_path_buf(),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file").into(),
            });
        }
        let model = WordPiece::from_file(vocab_str)
            .unk_token(unk.clone())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| tok_err(e.to_string()))?;
        let id = |t: &str| {
            tokenizers::Model::token_to_id(&model, t)
                .ok_or_else(|| tok_err(format!("token {t:?} is not in the vocabulary")))
        };
        let (sep_id, cls_id) = (id(&sep)?, id(&cls)?);
        let mut tokenizer = Tokenizer::new(model);
        tokenizer
            .with_normalizer(Some(BertNormalizer::new(
                true,
                chinese,
                strip_accents,
                lowercase,
            )))
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new(
                (sep.clone(), sep_id),
                (cls.clone(), cls_id),
            )))
            .with_decoder(Some(WordPieceDecoder::default()));
        let specials: Vec<AddedToken> = [&pad, &unk, &cls, &sep, &mask]
            .into_iter()
            .filter(|t| tokenizer.token_to_id(t).is_some())
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        tokenizer.add_special_tokens(&specials);
        Self::with_tokenizer(tokenizer, &name)
    }

    fn with_tokenizer(mut tokenizer: Tokenizer, name: &str) -> Result<Self> {
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .ok_or_else(|| Error::Tokenizer {
                context: name.to_string(),
                message: "no [PAD] token in the vocabulary".into(),
            })?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(ALIGN_MAX_LENGTH),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: "[PAD]".into(),
        }));
        let mut this = Self {
            tokenizer,
            max_length: ALIGN_MAX_LENGTH,
        };
        this.set_truncation(name)?;
        Ok(this)
    }

    fn set_truncation(&mut self, name: &str) -> Result<()> {
        self.tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: self.max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::Tokenizer {
                context: name.to_string(),
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// Pads and truncates to `max_length` tokens instead of 64 (at least 2: `[CLS]` and `[SEP]`).
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        self.max_length = max_length.max(2);
        if let Some(p) = self.tokenizer.get_padding_mut() {
            p.strategy = PaddingStrategy::Fixed(self.max_length);
        }
        self.set_truncation("max_length")?;
        Ok(self)
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The underlying `tokenizers` tokenizer (padding and truncation set).
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenises a batch (in parallel): `[batch, max_length]` ids, mask and zero type ids.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<TokenBatch> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings =
            self.tokenizer
                .encode_batch(inputs, true)
                .map_err(|e| Error::Tokenizer {
                    context: "encode".into(),
                    message: e.to_string(),
                })?;
        let n = self.max_length;
        let mut out = TokenBatch {
            batch: texts.len(),
            seq_len: n,
            input_ids: Vec::with_capacity(texts.len() * n),
            attention_mask: Vec::with_capacity(texts.len() * n),
            token_type_ids: vec![0; texts.len() * n],
        };
        for (i, e) in encodings.iter().enumerate() {
            if e.get_ids().len() != n {
                return Err(Error::Tokenizer {
                    context: format!("text {i}"),
                    message: format!("encoded to {} tokens, expected {n}", e.get_ids().len()),
                });
            }
            out.input_ids
                .extend(e.get_ids().iter().map(|&v| i64::from(v)));
            out.attention_mask
                .extend(e.get_attention_mask().iter().map(|&v| i64::from(v)));
        }
        Ok(out)
    }
}
