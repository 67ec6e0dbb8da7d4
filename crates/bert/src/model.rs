//! The BERT encoder. Module and field names mirror the Hugging Face checkpoint keys
//! (`embeddings.word_embeddings`, `encoder.layer.N.attention.self.query`, ...), except two
//! renames the loader applies: `LayerNorm` -> `layer_norm` and `attention.self` ->
//! `attention.self_attention` (`self` is a Rust keyword).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, gelu_approximate, relu, tanh};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, FloatDType, Int, Tensor, TensorData};
use std::sync::{Arc, OnceLock};

use crate::config::{BertConfig, HiddenAct};
use crate::fused::FusedBert;

/// Mirrors transformers' [`BertEmbeddings`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/bert/modeling_bert.py).
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
}

impl BertEmbeddings {
    fn new(config: &BertConfig, device: &Device) -> Self {
        let h = config.hidden_size;
        Self {
            word_embeddings: EmbeddingConfig::new(config.vocab_size, h).init(device),
            position_embeddings: EmbeddingConfig::new(config.max_position_embeddings, h)
                .init(device),
            token_type_embeddings: EmbeddingConfig::new(config.type_vocab_size, h).init(device),
            layer_norm: layer_norm(config, device),
        }
    }

    fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, seq_len] = input_ids.dims();
        let positions = self
            .position_embeddings
            .weight
            .val()
            .narrow(0, 0, seq_len)
            .unsqueeze_dim::<3>(0);
        let x = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(token_type_ids)
            + positions;
        self.layer_norm.forward(x)
    }
}

/// Mirrors transformers' [`BertSelfAttention`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/bert/modeling_bert.py).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub num_heads: usize,
}

impl BertSelfAttention {
    /// Attention of the `queries` rows over all rows of `x`; `masked`: `[B, 1, 1, L]`, true for
    /// padded keys.
    fn forward(
        &self,
        queries: Tensor<3>,
        x: Tensor<3>,
        masked: Option<Tensor<4, Bool>>,
    ) -> Tensor<3> {
        let [batch, seq_len, hidden] = x.dims();
        let q_len = queries.dims()[1];
        let heads = |t: Tensor<3>, len: usize| {
            t.reshape([batch, len, self.num_heads, hidden / self.num_heads])
                .swap_dims(1, 2)
        };
        let q = heads(rows(&self.query, queries), q_len);
        let k = heads(rows(&self.key, x.clone()), seq_len);
        let v = heads(rows(&self.value, x), seq_len);
        let mask = masked.map(|m| m.expand([batch, self.num_heads, q_len, seq_len]));
        let context = attention(q, k, v, mask, None, AttentionModuleOptions::default());
        context.swap_dims(1, 2).reshape([batch, q_len, hidden])
    }
}

/// `attention.output`: dense + residual + LayerNorm.
/// Mirrors transformers' [`BertSelfOutput`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/bert/modeling_bert.py).
#[derive(Module, Debug)]
pub struct BertSelfOutput {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
}

/// Mirrors transformers' [`BertAttention`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/bert/modeling_bert.py).
#[derive(Module, Debug)]
pub struct BertAttention {
    pub self_attention: BertSelfAttention,
    pub output: BertSelfOutput,
}

/// Mirrors transformers' [`BertIntermediate`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/bert/modeling_bert.py).
#[derive(Module, Debug)]
pub struct BertIntermediate {
    pub dense: Linear,
}

/// `output`: dense + residual + LayerNorm.
/// Mirrors transformers' [`BertOutput`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/bert/modeling_bert.py).
#[derive(Module, Debug)]
pub struct BertOutput {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
}

/// Mirrors transformers' [`BertLayer`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/bert/modeling_bert.py).
#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: BertIntermediate,
    pub output: BertOutput,
    #[module(skip)]
    pub hidden_act: HiddenAct,
}

impl BertLayer {
    fn new(config: &BertConfig, device: &Device) -> Self {
        let h = config.hidden_size;
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        Self {
            attention: BertAttention {
                self_attention: BertSelfAttention {
                    query: linear(h, h),
                    key: linear(h, h),
                    value: linear(h, h),
                    num_heads: config.num_attention_heads,
                },
                output: BertSelfOutput {
                    dense: linear(h, h),
                    layer_norm: layer_norm(config, device),
                },
            },
            intermediate: BertIntermediate {
                dense: linear(h, config.intermediate_size),
            },
            output: BertOutput {
                dense: linear(config.intermediate_size, h),
                layer_norm: layer_norm(config, device),
            },
            hidden_act: config.hidden_act,
        }
    }

    /// The layer's output at every position, or with `first_only` at the first position only
    /// (`[B, 1, H]`: keys and values still come from every position).
    fn forward(
        &self,
        x: Tensor<3>,
        masked: Option<Tensor<4, Bool>>,
        first_only: bool,
    ) -> Tensor<3> {
        let queries = if first_only {
            x.clone().narrow(1, 0, 1)
        } else {
            x.clone()
        };
        let attn = self
            .attention
            .self_attention
            .forward(queries.clone(), x, masked);
        let out = &self.attention.output;
        let x = out.layer_norm.forward(rows(&out.dense, attn) + queries);
        let inner = rows(&self.intermediate.dense, x.clone());
        let inner = match self.hidden_act {
            HiddenAct::Gelu if kernels::is_fused_device(&inner.device()) => {
                kernels::map_in_place(inner, kernels::gelu_inplace, gelu)
            }
            HiddenAct::Gelu => gelu(inner),
            HiddenAct::GeluApproximate => gelu_approximate(inner),
            HiddenAct::Relu => relu(inner),
        };
        self.output
            .layer_norm
            .forward(rows(&self.output.dense, inner) + x)
    }
}

/// Mirrors transformers' [`BertEncoder`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/bert/modeling_bert.py).
#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

/// `pooler`: dense + tanh on the first token.
/// Mirrors transformers' [`BertPooler`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/bert/modeling_bert.py).
#[derive(Module, Debug)]
pub struct BertPooler {
    pub dense: Linear,
}

/// Outputs of [`BertModel::forward`].
#[derive(Debug, Clone)]
pub struct BertOutputs {
    /// `[batch, seq_len, hidden]`.
    pub last_hidden_state: Tensor<3>,
    /// `[batch, hidden]`, present when the model has a pooler.
    pub pooler_output: Option<Tensor<2>>,
}

/// A BERT encoder (Hugging Face `BertModel`) in inference form.
/// Mirrors transformers' [`BertModel`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/bert/modeling_bert.py).
/// As ALIGN's text tower: [`AlignTextModel`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/align/modeling_align.py).
#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    pub pooler: Option<BertPooler>,
    #[module(skip)]
    layer_norm_eps: f64,
    /// The fused path's copy of the weights: `Some` after [`BertModel::for_inference`] on
    /// flex in f32, filled by the first forward pass (with `None` when the model is not one
    /// that path runs).
    #[module(skip)]
    fused: Option<Arc<OnceLock<Option<FusedBert>>>>,
}

impl BertModel {
    /// A model with the architecture of `config` and freshly initialised weights. Use
    /// [`BertModel::from_safetensors`](crate::BertModel::from_safetensors) to load a checkpoint.
    pub fn new(config: &BertConfig, with_pooler: bool, device: &Device) -> Self {
        Self {
            embeddings: BertEmbeddings::new(config, device),
            encoder: BertEncoder {
                layer: (0..config.num_hidden_layers)
                    .map(|_| BertLayer::new(config, device))
                    .collect(),
            },
            pooler: with_pooler.then(|| BertPooler {
                dense: LinearConfig::new(config.hidden_size, config.hidden_size).init(device),
            }),
            layer_norm_eps: config.layer_norm_eps,
            fused: None,
        }
    }

    /// The inference form: on the flex device in f32, the encoder runs the fused CPU path
    /// (its own packed copy of the weights, made by the first forward pass, so an image-only
    /// use of a checkpoint never packs the text weights); elsewhere the model as it is. Call
    /// it once the weights are loaded: the fused copy does not follow later changes to the
    /// module's parameters.
    pub fn for_inference(self) -> Self {
        let weight = self.embeddings.word_embeddings.weight.val();
        let fused = kernels::is_fused_device(&weight.device())
            && FloatDType::from(weight.dtype()) == FloatDType::F32;
        Self {
            fused: fused.then(|| Arc::new(OnceLock::new())),
            ..self
        }
    }

    /// Whether [`Self::forward`] on the model's device runs the fused path (see
    /// [`Self::for_inference`]); makes the fused copy if it is not made yet.
    pub fn runs_fused(&self) -> bool {
        self.fused_net().is_some()
    }

    fn fused_net(&self) -> Option<&FusedBert> {
        // (a model cast to another float type since runs burn's ops in that type)
        let dtype = self.embeddings.word_embeddings.weight.val().dtype();
        if FloatDType::from(dtype) != FloatDType::F32 {
            return None;
        }
        self.fused
            .as_ref()?
            .get_or_init(|| FusedBert::new(self, self.layer_norm_eps))
            .as_ref()
    }

    /// Runs the encoder.
    ///
    /// * `input_ids`: `[batch, seq_len]` token ids, each `< vocab_size`;
    ///   `seq_len <= max_position_embeddings`.
    /// * `attention_mask`: `[batch, seq_len]`, 1 for real tokens and 0 for padding. Padded keys
    ///   are excluded from attention as in transformers, so the outputs at real positions do not
    ///   depend on the amount of padding.
    /// * `token_type_ids`: `[batch, seq_len]`, each `< type_vocab_size`.
    ///
    /// Use [`BertInput`](crate::BertInput) to build validated tensors from host data.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
    ) -> BertOutputs {
        let batch = input_ids.dims()[0];
        let x = self.encode(input_ids, attention_mask, token_type_ids, false);
        let pooler_output = self.pooler.as_ref().map(|pooler| {
            let [_, _, hidden] = x.dims();
            let first = x.clone().slice([0..batch, 0..1]).reshape([batch, hidden]);
            tanh(pooler.dense.forward(first))
        });
        BertOutputs {
            last_hidden_state: x,
            pooler_output,
        }
    }
}

impl BertModel {
    /// The last hidden state of the first token (`[CLS]`) only, `[batch, hidden]`: equal to
    /// row 0 of [`Self::forward`]'s `last_hidden_state` (same arguments), with the last layer
    /// computed for that row alone (its keys and values still span every token), which saves
    /// most of one layer's work.
    pub fn first_token(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
    ) -> Tensor<2> {
        let x = self.encode(input_ids, attention_mask, token_type_ids, true);
        let [batch, _, hidden] = x.dims();
        x.reshape([batch, hidden])
    }

    /// Embeddings and every layer; with `first_only` the last layer keeps row 0 only.
    fn encode(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        first_only: bool,
    ) -> Tensor<3> {
        let [batch, seq_len] = input_ids.dims();
        if let Some(net) = self.fused_net()
            && let Some(x) = self.run_fused(
                net,
                &input_ids,
                &attention_mask,
                &token_type_ids,
                first_only,
            )
        {
            return x;
        }
        let masked = attention_mask.equal_elem(0).reshape([batch, 1, 1, seq_len]);
        let mut x = self.embeddings.forward(input_ids, token_type_ids);
        let last = self.encoder.layer.len().saturating_sub(1);
        for (i, layer) in self.encoder.layer.iter().enumerate() {
            x = layer.forward(x, Some(masked.clone()), first_only && i == last);
        }
        if first_only && self.encoder.layer.is_empty() {
            x = x.narrow(1, 0, 1);
        }
        x
    }
}

impl BertModel {
    /// [`Self::encode`] on the fused path, or `None` for inputs it leaves to burn's ops (ids
    /// outside the tables, which those report their own way).
    fn run_fused(
        &self,
        net: &FusedBert,
        input_ids: &Tensor<2, Int>,
        attention_mask: &Tensor<2, Int>,
        token_type_ids: &Tensor<2, Int>,
        first_only: bool,
    ) -> Option<Tensor<3>> {
        let [batch, len] = input_ids.dims();
        let host = |t: &Tensor<2, Int>| -> Vec<i64> { t.to_data().iter::<i64>().collect() };
        let index = |t: &Tensor<2, Int>, limit: usize| -> Option<Vec<usize>> {
            host(t)
                .into_iter()
                .map(|v| usize::try_from(v).ok().filter(|&v| v < limit))
                .collect()
        };
        let ids = index(input_ids, net.vocab())?;
        let types = index(token_type_ids, net.token_types())?;
        if len > net.positions() || batch == 0 {
            return None;
        }
        let mask: Vec<bool> = host(attention_mask).into_iter().map(|m| m != 0).collect();
        let x = net.run(&ids, &mask, &types, len, first_only);
        let rows = if first_only { 1 } else { len };
        let shape = [batch, rows, x.len() / (batch * rows)];
        Some(Tensor::from_data(
            TensorData::new(x, shape),
            &input_ids.device(),
        ))
    }
}

/// `linear` applied to every position of `x` `[B, L, H]` as one `[B * L, H]` product: burn
/// treats a 3-d input as `B` separate products, each repacking the weight, which costs most
/// when sequences are short.
fn rows(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [batch, len, hidden] = x.dims();
    let y = linear.forward(x.reshape([batch * len, hidden]));
    let out = y.dims()[1];
    y.reshape([batch, len, out])
}

fn layer_norm(config: &BertConfig, device: &Device) -> LayerNorm {
    LayerNormConfig::new(config.hidden_size)
        .with_epsilon(config.layer_norm_eps)
        .init(device)
}

/// Mean of `hidden` over the positions where `attention_mask` is 1, L2-normalised
/// (sentence-transformers' mean pooling followed by `Normalize`). Returns `[batch, hidden]`.
pub fn mean_pooled_normalized(hidden: Tensor<3>, attention_mask: Tensor<2, Int>) -> Tensor<2> {
    let [batch, seq_len, hidden_size] = hidden.dims();
    let mask = attention_mask.float().reshape([batch, seq_len, 1]);
    let summed = (hidden * mask.clone())
        .sum_dim(1)
        .reshape([batch, hidden_size]);
    let counts = mask.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
    let mean = summed / counts;
    let norm = mean
        .clone()
        .powi_scalar(2)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    mean / norm
}
