//! [`Align`]: the model together with its processor, for work on files and strings.

use std::path::Path;

use align_processor::{ImageProcessor, RgbImage, TextTokenizer, TokenBatch};
use bert::BertInput;
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};

use crate::config::AlignConfig;
use crate::error::{Error, Result};
use crate::load::ModelFiles;
use crate::model::{AlignModel, l2_normalize};

/// Zero-shot result for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShot {
    /// The image's row of `logits_per_image`, in label order.
    pub logits: Vec<f32>,
    /// Softmax of `logits`.
    pub probs: Vec<f32>,
}

/// An [`AlignModel`] with its image processor and tokenizer, on one device.
pub struct Align {
    pub model: AlignModel,
    pub config: AlignConfig,
    pub images: ImageProcessor,
    pub tokenizer: TextTokenizer,
    pub device: Device,
}

impl Align {
    /// Loads the model (see [`AlignModel::from_dir`]) and the processor files of `dir`
    /// (`preprocessor_config.json` or `processor_config.json`; `tokenizer.json` or `vocab.txt`).
    pub fn from_dir(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let files = ModelFiles::find(dir.as_ref())?;
        let config = AlignConfig::from_file(&files.config)?;
        let images = ImageProcessor::from_dir(&files.dir)?;
        let tokenizer = TextTokenizer::from_dir(&files.dir)?;
        let model = AlignModel::from_weights(&files.weights, files.format, &config, device)?;
        Ok(Self {
            model,
            config,
            images,
            tokenizer,
            device: device.clone(),
        })
    }

    /// Loads `name_or_dir` like transformers' `from_pretrained`: a local directory (see
    /// [`Align::from_dir`]) or a Hugging Face hub model id such as
    /// [`crate::hub::DEFAULT_MODEL_ID`], taken from the hub cache or downloaded into it (see
    /// [`crate::hub`]).
    #[cfg(feature = "hub")]
    pub fn from_pretrained(name_or_dir: &str, device: &Device) -> Result<Self> {
        let path = Path::new(name_or_dir);
        if path.is_dir() {
            Self::from_dir(path, device)
        } else {
            Self::from_dir(crate::hub::snapshot_dir(name_or_dir)?, device)
        }
    }

    /// The model with its float parameters cast to `dtype` (see
    /// [`AlignModel::with_float_dtype`]).
    pub fn with_float_dtype(mut self, dtype: FloatDType) -> Result<Self> {
        self.model = self.model.with_float_dtype(dtype)?;
        Ok(self)
    }

    /// Tokenises `texts` exactly as the processor does: padded and truncated to the
    /// tokenizer's length (64 for ALIGN).
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<BertInput> {
        self.encode(texts, false)
    }

    /// [`Self::tokenize`], then the padding columns that no text of the batch uses are dropped.
    /// The text tower's `[CLS]` output does not depend on padding (masked attention), so this
    /// gives the same features with less work: what [`Self::embed_texts`] and
    /// [`Self::zero_shot`] use.
    pub fn tokenize_trimmed<S: AsRef<str>>(&self, texts: &[S]) -> Result<BertInput> {
        self.encode(texts, true)
    }

    fn encode<S: AsRef<str>>(&self, texts: &[S], trim: bool) -> Result<BertInput> {
        let batch = self.tokenizer.encode_batch(texts)?;
        let rows: Vec<usize> = (0..batch.batch).collect();
        let width = if trim {
            rows.iter().map(|&i| text_len(&batch, i)).max().unwrap_or(0)
        } else {
            batch.seq_len
        };
        self.input_for_rows(&batch, &rows, width)
    }

    /// A [`BertInput`] of the `rows` of `batch`, cut to `width` columns (at least one).
    fn input_for_rows(
        &self,
        batch: &TokenBatch,
        rows: &[usize],
        width: usize,
    ) -> Result<BertInput> {
        let width = width.clamp(1, batch.seq_len.max(1));
        let take = |field: &[i64]| -> Vec<Vec<u32>> {
            rows.iter()
                .map(|&i| {
                    batch.row(field, i)[..width]
                        .iter()
                        .map(|&v| v as u32)
                        .collect()
                })
                .collect()
        };
        Ok(BertInput::new(
            &self.config.text_config,
            &take(&batch.input_ids),
            &take(&batch.attention_mask),
            Some(&take(&batch.token_type_ids)),
            &self.device,
        )?)
    }

    /// L2-normalised image embeddings `[N, dim]` of preprocessed pixels `[N, 3, H, W]`.
    pub fn image_embeds(&self, pixel_values: TensorData) -> Result<Tensor<2>> {
        let pixels = Tensor::<4>::from_data(pixel_values, &self.device);
        Ok(l2_normalize(self.model.image_features(pixels)?))
    }

    /// L2-normalised image embeddings of decoded images.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Tensor<2>> {
        self.image_embeds(self.images.preprocess_images(images)?)
    }

    /// Runs the text tower once on an empty text, so that weights read lazily from the
    /// checkpoint (`model.bpk` tensors are read on first use), the fused path's packed copy
    /// (flex) and first-use allocations are paid now rather than by the first real batch.
    /// The CLI does it as part of loading.
    pub fn prepare_text(&self) -> Result<()> {
        self.embed_texts(&[""]).map(drop)
    }

    /// L2-normalised text embeddings `[N, dim]`, all texts in one forward pass.
    pub fn embed_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Tensor<2>> {
        let input = self.tokenize_trimmed(texts)?;
        Ok(l2_normalize(self.model.text_features_for(&input)))
    }

    /// L2-normalised text embeddings `[N, dim]` in input order, at most `batch_size` texts per
    /// forward pass. The texts are sorted by token count (as sentence-transformers' `encode`
    /// does) and cut into the batches that minimise the padded token count plus a fixed cost
    /// per pass (see [`length_batches`]): the features are those of [`Self::embed_texts`]
    /// (padding does not change them), with less work when lengths vary.
    pub fn embed_texts_batched<S: AsRef<str>>(
        &self,
        texts: &[S],
        batch_size: usize,
    ) -> Result<Tensor<2>> {
        if texts.is_empty() || batch_size == 0 {
            return Err(Error::Mismatch(format!(
                "embedding {} texts in batches of {batch_size}: need at least one of each",
                texts.len()
            )));
        }
        let batch = self.tokenizer.encode_batch(texts)?;
        let lens: Vec<usize> = (0..batch.batch).map(|i| text_len(&batch, i)).collect();
        let mut order: Vec<usize> = (0..batch.batch).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        let sorted: Vec<usize> = order.iter().map(|&i| lens[i]).collect();
        let mut parts = Vec::new();
        for range in length_batches(&sorted, batch_size) {
            let rows = &order[range.clone()];
            let input = self.input_for_rows(&batch, rows, sorted[range.start])?;
            parts.push(l2_normalize(self.model.text_features_for(&input)));
        }
        // Row `order[k]` of the input is row `k` of the concatenation.
        let mut position = vec![0i64; order.len()];
        for (k, &i) in order.iter().enumerate() {
            position[i] = k as i64;
        }
        let position =
            Tensor::<1, Int>::from_data(TensorData::new(position, [order.len()]), &self.device);
        Ok(Tensor::cat(parts, 0).select(0, position))
    }

    /// Zero-shot classification of decoded images against candidate labels: one
    /// [`ZeroShot`] per image, probabilities = softmax over the labels.
    pub fn zero_shot<S: AsRef<str>>(
        &self,
        images: &[RgbImage],
        labels: &[S],
    ) -> Result<Vec<ZeroShot>> {
        if labels.is_empty() {
            return Err(Error::Mismatch(
                "zero-shot classification needs at least one label".into(),
            ));
        }
        let pixels = Tensor::<4>::from_data(self.images.preprocess_images(images)?, &self.device);
        let labels = self.tokenize_trimmed(labels)?;
        let (logits, probs) = self.model.zero_shot(pixels, &labels)?;
        let [n, k] = logits.dims();
        let logits = to_vec(logits)?;
        let probs = to_vec(probs)?;
        Ok((0..n)
            .map(|i| ZeroShot {
                logits: logits[i * k..(i + 1) * k].to_vec(),
                probs: probs[i * k..(i + 1) * k].to_vec(),
            })
            .collect())
    }
}

/// Copies a float tensor to the host as f32.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Mismatch(format!("reading tensor data: {e:?}")))
}

/// Number of real (unmasked) tokens of row `i`.
fn text_len(batch: &TokenBatch, i: usize) -> usize {
    batch
        .row(&batch.attention_mask, i)
        .iter()
        .filter(|&&m| m != 0)
        .count()
}

/// Fixed cost of one text forward pass, in tokens: what the batching in
/// [`Align::embed_texts_batched`] weighs a pass against padding. One token costs about 170
/// MFLOP in BERT-base; the per-pass overhead (op launches, small-matrix inefficiency) is worth a
/// few tokens on CPU, so this errs on the side of fewer passes.
pub const PASS_COST_TOKENS: usize = 32;

/// Cuts texts sorted by decreasing token count (`lens`) into consecutive batches of at most
/// `max_batch` texts, minimising the padded token count (each batch pads to its first text)
/// plus [`PASS_COST_TOKENS`] per batch: an exact dynamic programme, O(n * max_batch).
pub fn length_batches(lens: &[usize], max_batch: usize) -> Vec<std::ops::Range<usize>> {
    let n = lens.len();
    let max_batch = max_batch.max(1);
    // cost[i]: the least cost of the first i texts; start[i]: where their last batch starts.
    let mut cost = vec![0usize; n + 1];
    let mut start = vec![0usize; n + 1];
    for i in 1..=n {
        cost[i] = usize::MAX;
        for j in i.saturating_sub(max_batch)..i {
            let c = cost[j] + (i - j) * lens[j] + PASS_COST_TOKENS;
            if c < cost[i] {
                cost[i] = c;
                start[i] = j;
            }
        }
    }
    let mut batches = Vec::new();
    let mut end = n;
    while end > 0 {
        batches.push(start[end]..end);
        end = start[end];
    }
    batches.reverse();
    batches
}

#[cfg(test)]
mod tests {
    use super::length_batches;

    #[test]
    fn batches_cover_all_texts_in_order_within_the_limit() {
        let lens = [52, 52, 19, 17, 17, 16, 13, 10, 7, 4, 4, 4];
        for max in 1..=lens.len() + 1 {
            let batches = length_batches(&lens, max);
            let mut next = 0;
            for b in &batches {
                assert_eq!(b.start, next);
                assert!(!b.is_empty() && b.len() <= max);
                next = b.end;
            }
            assert_eq!(next, lens.len());
        }
        assert!(length_batches(&[], 4).is_empty());
    }

    #[test]
    fn long_texts_are_not_batched_with_short_ones() {
        // 2 x 64 tokens and 30 x 8: one batch would pad 32 x 64 = 2048 tokens; two batches
        // cost 128 + 240 + 2 passes.
        let lens: Vec<usize> = [64, 64].into_iter().chain([8; 30]).collect();
        assert_eq!(length_batches(&lens, 32), vec![0..2, 2..32]);
        // Equal lengths: as few passes as the limit allows.
        assert_eq!(length_batches(&[10; 10], 4).len(), 3);
    }
}
