//! [`Align`]: the model together with its processor, for work on files and strings.

use std::path::Path;

use align_processor::{ImageProcessor, RgbImage, TextTokenizer};
use bert::BertInput;
use burn::tensor::{Device, Tensor, TensorData};

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
        let model = AlignModel::load(&config, &files.weights, files.format, device)?;
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
        let width = if trim {
            (0..batch.batch)
                .map(|i| {
                    batch
                        .row(&batch.attention_mask, i)
                        .iter()
                        .filter(|&&m| m != 0)
                        .count()
                })
                .max()
                .unwrap_or(0)
                .max(1)
        } else {
            batch.seq_len
        };
        let rows = |field: &[i64]| -> Vec<Vec<u32>> {
            (0..batch.batch)
                .map(|i| {
                    batch.row(field, i)[..width]
                        .iter()
                        .map(|&v| v as u32)
                        .collect()
                })
                .collect()
        };
        Ok(BertInput::new(
            &self.config.text_config,
            &rows(&batch.input_ids),
            &rows(&batch.attention_mask),
            Some(&rows(&batch.token_type_ids)),
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

    /// L2-normalised text embeddings `[N, dim]`.
    pub fn embed_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Tensor<2>> {
        let input = self.tokenize_trimmed(texts)?;
        Ok(l2_normalize(self.model.text_features_for(&input)))
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
