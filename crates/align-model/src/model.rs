use bert::{BertInput, BertModel};
use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, FloatDType, Int, Tensor};
use efficientnet::EfficientNet;

use crate::config::AlignConfig;
use crate::error::{Error, Result};

/// transformers' `AlignModel` in inference form. Field names mirror the checkpoint's top-level
/// keys: `text_model.*`, `vision_model.*`, `text_projection.*`, `temperature`.
/// Mirrors transformers' [`AlignModel`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/align/modeling_align.py).
#[derive(Module, Debug)]
pub struct AlignModel {
    pub text_model: BertModel,
    pub vision_model: EfficientNet,
    pub text_projection: Linear,
    /// The checkpoint's 0-d `temperature`, held as a 1-element tensor. Logits are
    /// `cosine / temperature` (divided, not exponentiated).
    pub temperature: Param<Tensor<1>>,
}

/// Outputs of [`AlignModel::forward`].
#[derive(Debug, Clone)]
pub struct AlignOutput {
    /// `[images, projection_dim]`, L2-normalised.
    pub image_embeds: Tensor<2>,
    /// `[texts, projection_dim]`, L2-normalised.
    pub text_embeds: Tensor<2>,
    /// `[images, texts]`: `image_embeds · text_embedsᵀ / temperature`.
    pub logits_per_image: Tensor<2>,
    /// `[texts, images]`: the transpose of `logits_per_image`.
    pub logits_per_text: Tensor<2>,
}

impl AlignModel {
    /// The architecture of `config` with freshly initialised weights (see
    /// [`crate::load`] for loading a checkpoint).
    pub fn new(config: &AlignConfig, device: &Device) -> Result<Self> {
        let text = &config.text_config;
        Ok(Self {
            text_model: BertModel::new(text, false, device),
            vision_model: EfficientNet::new(&config.vision_config, device)?,
            text_projection: LinearConfig::new(text.hidden_size, config.projection_dim)
                .init(device),
            temperature: Param::from_tensor(Tensor::from_floats(
                [config.temperature_init_value as f32],
                device,
            )),
        })
    }

    /// Both towers and the projection with their float parameters cast to `dtype` (e.g.
    /// `FloatDType::F16` on a GPU: half the weight memory and bandwidth): the towers then
    /// compute in `dtype`; the features they return, the embeddings and logits are f32. The
    /// vision BatchNorms are folded first, in the current precision, and on flex the vision
    /// tower leaves its fused path (f32 only) for burn's ops. `temperature` stays f32.
    /// Errors when the device has no such type.
    pub fn with_float_dtype(self, dtype: FloatDType) -> Result<Self> {
        let device = self.temperature.val().device();
        if !device.supports_dtype(dtype) {
            return Err(Error::Unsupported(format!(
                "float type {dtype:?} on device {device:?}"
            )));
        }
        if self.vision_model.float_dtype() == dtype {
            return Ok(self);
        }
        let mut cast = CastFloats(dtype);
        Ok(Self {
            text_model: self.text_model.map(&mut cast),
            vision_model: self.vision_model.fold_batch_norms().map(&mut cast),
            text_projection: self.text_projection.map(&mut cast),
            temperature: self.temperature,
        })
    }

    /// Un-normalised image features (`get_image_features`): the vision tower's pooled output,
    /// `[batch, channels]`, f32. `pixel_values`: `[batch, 3, H, W]` as produced by the
    /// processor.
    pub fn image_features(&self, pixel_values: Tensor<4>) -> Result<Tensor<2>> {
        Ok(self
            .vision_model
            .forward(pixel_values)?
            .pooler_output
            .cast(FloatDType::F32))
    }

    /// Un-normalised text features (`get_text_features`): the projection of the `[CLS]`
    /// token's last hidden state, `[batch, projection_dim]`, f32.
    pub fn text_features(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
    ) -> Tensor<2> {
        let cls = self
            .text_model
            .first_token(input_ids, attention_mask, token_type_ids);
        self.text_projection.forward(cls).cast(FloatDType::F32)
    }

    /// [`Self::text_features`] for a validated [`BertInput`].
    pub fn text_features_for(&self, input: &BertInput) -> Tensor<2> {
        self.text_features(
            input.input_ids.clone(),
            input.attention_mask.clone(),
            input.token_type_ids.clone(),
        )
    }

    /// Both towers, normalised embeddings and the similarity logits.
    pub fn forward(&self, pixel_values: Tensor<4>, text: &BertInput) -> Result<AlignOutput> {
        let image_embeds = l2_normalize(self.image_features(pixel_values)?);
        let text_embeds = l2_normalize(self.text_features_for(text));
        if image_embeds.dims()[1] != text_embeds.dims()[1] {
            return Err(Error::Mismatch(format!(
                "image features are {}-d but text features are {}-d",
                image_embeds.dims()[1],
                text_embeds.dims()[1]
            )));
        }
        let logits_per_image = self.logits_per_image(image_embeds.clone(), text_embeds.clone());
        Ok(AlignOutput {
            logits_per_text: logits_per_image.clone().transpose(),
            logits_per_image,
            image_embeds,
            text_embeds,
        })
    }

    /// `[images, texts]` logits of normalised embeddings: cosine similarity / temperature.
    pub fn logits_per_image(&self, image_embeds: Tensor<2>, text_embeds: Tensor<2>) -> Tensor<2> {
        image_embeds
            .matmul(text_embeds.transpose())
            .div(self.temperature.val().unsqueeze::<2>())
    }

    /// Zero-shot classification: for each image, the softmax over the candidate labels of
    /// `logits_per_image`. Returns `(logits_per_image, probs)`, both `[images, labels]`.
    pub fn zero_shot(
        &self,
        pixel_values: Tensor<4>,
        labels: &BertInput,
    ) -> Result<(Tensor<2>, Tensor<2>)> {
        let logits = self.forward(pixel_values, labels)?.logits_per_image;
        let probs = softmax(logits.clone(), 1);
        Ok((logits, probs))
    }
}

/// Rows divided by their L2 norm (no epsilon, as transformers).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt();
    x / norm
}

/// Casts every float parameter of a module (see [`AlignModel::with_float_dtype`]).
struct CastFloats(FloatDType);

impl ModuleMapper for CastFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|tensor| tensor.cast(dtype))
    }
}
