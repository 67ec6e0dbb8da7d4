//! The fused CPU path of the encoder (flex, f32): every linear layer a product against
//! weights packed once ([`kernels::gemm::Weight`]; on AMX machines also split for the AMX
//! products, which take products of 128 rows or more) with its bias, and the output layers'
//! residual or the intermediate layer's GELU, applied in registers; LayerNorm in place on the
//! rows; attention per sequence and head as two small products on the calling thread of a task
//! of the pool (scores with the padding mask as their bias, softmax, the weighted sum of the
//! values). Buffers are made once per call and reused by every layer.

use kernels::gemm::{Epilogue, Packed, Weight, gemm_serial, gemm_weight};
use rayon::prelude::*;
use std::sync::Mutex;

use crate::config::HiddenAct;
use crate::model::{BertEmbeddings, BertLayer, BertModel};

/// The encoder's weights as the fused path reads them.
#[derive(Debug)]
pub(crate) struct FusedBert {
    hidden: usize,
    heads: usize,
    eps: f32,
    /// `[vocab, hidden]`, `[positions, hidden]`, `[types, hidden]`.
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    norm: Norm,
    layers: Vec<Layer>,
    /// Buffers of finished calls, for the next ones (fresh pages cost a fault and zeroing
    /// each).
    spare: Mutex<Vec<Buffers>>,
}

#[derive(Debug)]
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// One encoder layer: queries, keys and values as one product (`[hidden, 3 * hidden]`),
/// then the attention output, intermediate and output products.
#[derive(Debug)]
struct Layer {
    qkv: Linear,
    attention_output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

#[derive(Debug)]
struct Linear {
    weight: Weight,
    bias: Vec<f32>,
}

/// A parameter's values (copied straight where they are f32 in host memory).
fn values<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    with_values(t, <[f32]>::to_vec)
}

/// `f` of a parameter's values.
fn with_values<const D: usize, R>(t: burn::tensor::Tensor<D>, f: impl FnOnce(&[f32]) -> R) -> R {
    let data = t.into_data();
    match data.as_slice::<f32>() {
        Ok(values) => f(values),
        Err(_) => f(&data.iter::<f32>().collect::<Vec<_>>()),
    }
}

impl Linear {
    /// Burn's `Linear` layers side by side (their outputs concatenated), packed.
    fn packed(layers: &[&burn::nn::Linear]) -> Self {
        let parts: Vec<Packed> = layers
            .iter()
            .map(|l| {
                let [k, n] = l.weight.dims();
                with_values(l.weight.val(), |w| Packed::from_in_out_strided(w, k, n, n))
            })
            .collect();
        let bias = layers
            .iter()
            .flat_map(|l| match &l.bias {
                Some(b) => values(b.val()),
                None => vec![0.0; l.weight.dims()[1]],
            })
            .collect();
        let weight = Weight::new(match <[Packed; 1]>::try_from(parts) {
            Ok([one]) => one,
            Err(parts) => Packed::side_by_side(&parts),
        });
        Self { weight, bias }
    }

    /// Bias, then `residual` or GELU.
    fn epilogue<'a>(&'a self, residual: Option<&'a [f32]>, gelu: bool) -> Epilogue<'a> {
        Epilogue {
            bias: Some(&self.bias),
            residual,
            silu: false,
            gelu,
        }
    }
}

impl Norm {
    fn new(norm: &burn::nn::LayerNorm) -> Self {
        let gamma = values(norm.gamma.val());
        let beta = match &norm.beta {
            Some(b) => values(b.val()),
            None => vec![0.0; gamma.len()],
        };
        Self { gamma, beta }
    }

    fn apply(&self, rows: &mut [f32], eps: f32) {
        kernels::norm::layer_norm_rows(rows, &self.gamma, &self.beta, eps);
    }
}

impl FusedBert {
    /// The fused copy of `model`'s encoder, or `None` for an activation other than the
    /// exact GELU (BERT's and ALIGN's; the others run burn's ops).
    pub(crate) fn new(model: &BertModel, eps: f64) -> Option<Self> {
        let layers = &model.encoder.layer;
        if layers.iter().any(|l| l.hidden_act != HiddenAct::Gelu) {
            return None;
        }
        let BertEmbeddings {
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            layer_norm,
        } = &model.embeddings;
        let hidden = word_embeddings.weight.dims()[1];
        Some(Self {
            hidden,
            heads: layers
                .first()
                .map_or(1, |l| l.attention.self_attention.num_heads),
            eps: eps as f32,
            word: values(word_embeddings.weight.val()),
            position: values(position_embeddings.weight.val()),
            token_type: values(token_type_embeddings.weight.val()),
            norm: Norm::new(layer_norm),
            layers: layers.iter().map(Layer::new).collect(),
            spare: Mutex::default(),
        })
    }

    /// Rows of the word, position and token type tables.
    pub(crate) fn vocab(&self) -> usize {
        self.word.len() / self.hidden
    }

    pub(crate) fn positions(&self) -> usize {
        self.position.len() / self.hidden
    }

    pub(crate) fn token_types(&self) -> usize {
        self.token_type.len() / self.hidden
    }

    /// The last hidden state, `[batch, len, hidden]` row-major, or with `first_only`
    /// `[batch, 1, hidden]` (the last layer computed for the first position alone). `ids`,
    /// `mask` and `types` are `[batch, len]`, checked by the caller against the tables'
    /// sizes.
    pub(crate) fn run(
        &self,
        ids: &[usize],
        mask: &[bool],
        types: &[usize],
        len: usize,
        first_only: bool,
    ) -> Vec<f32> {
        let h = self.hidden;
        let rows = ids.len();
        let mut x = vec![0.0f32; rows * h];
        x.par_chunks_mut(h).enumerate().for_each(|(r, row)| {
            let word = &self.word[ids[r] * h..][..h];
            let position = &self.position[(r % len) * h..][..h];
            let token_type = &self.token_type[types[r] * h..][..h];
            // (in transformers' order: words and token types, then positions)
            for (((x, w), t), p) in row.iter_mut().zip(word).zip(token_type).zip(position) {
                *x = (w + t) + p;
            }
        });
        self.norm.apply(&mut x, self.eps);
        // (transformers' additive mask: the most negative float for padded keys)
        let mask: Vec<f32> = mask
            .iter()
            .map(|&real| if real { 0.0 } else { f32::MIN })
            .collect();
        let mut buffers = self
            .spare
            .lock()
            .map_or(None, |mut s| s.pop())
            .unwrap_or_default();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(self, x, &mask, len, first_only && i == last, &mut buffers);
        }
        if let Ok(mut spare) = self.spare.lock() {
            spare.push(buffers);
        }
        if first_only && self.layers.is_empty() {
            x = first_rows(&x, len, h);
        }
        x
    }
}

/// The first row of each sequence of `len` rows of `h` values.
fn first_rows(x: &[f32], len: usize, h: usize) -> Vec<f32> {
    x.chunks_exact(len * h)
        .flat_map(|s| &s[..h])
        .copied()
        .collect()
}

/// Buffers reused from layer to layer.
#[derive(Debug, Default)]
struct Buffers {
    qkv: Vec<f32>,
    context: Vec<f32>,
    attended: Vec<f32>,
    inner: Vec<f32>,
    /// A product's input split for the AMX products ([`gemm_weight`]).
    parts: Vec<u16>,
}

/// `buf` resized to `len` values (old values left: every user overwrites them all).
fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

impl Layer {
    fn new(layer: &BertLayer) -> Self {
        let attention = &layer.attention.self_attention;
        Self {
            qkv: Linear::packed(&[&attention.query, &attention.key, &attention.value]),
            attention_output: Linear::packed(&[&layer.attention.output.dense]),
            attention_norm: Norm::new(&layer.attention.output.layer_norm),
            intermediate: Linear::packed(&[&layer.intermediate.dense]),
            output: Linear::packed(&[&layer.output.dense]),
            output_norm: Norm::new(&layer.output.layer_norm),
        }
    }

    /// `x` (`[batch * len, hidden]`) through the layer; with `first_only` only each
    /// sequence's first row comes out (`[batch, hidden]`).
    fn forward(
        &self,
        net: &FusedBert,
        x: Vec<f32>,
        mask: &[f32],
        len: usize,
        first_only: bool,
        buf: &mut Buffers,
    ) -> Vec<f32> {
        let h = net.hidden;
        let rows = x.len() / h;
        let batch = rows / len;
        let qkv = sized(&mut buf.qkv, rows * 3 * h);
        let epilogue = self.qkv.epilogue(None, false);
        gemm_weight(&x, &self.qkv.weight, qkv, epilogue, &mut buf.parts);
        let q_len = if first_only { 1 } else { len };
        let context = sized(&mut buf.context, batch * q_len * h);
        attention(net, qkv, mask, len, q_len, context);
        // The rows the rest of the layer runs on (each sequence's first with `first_only`).
        let x = if first_only {
            first_rows(&x, len, h)
        } else {
            x
        };
        let attended = sized(&mut buf.attended, x.len());
        gemm_weight(
            context,
            &self.attention_output.weight,
            attended,
            self.attention_output.epilogue(Some(&x), false),
            &mut buf.parts,
        );
        self.attention_norm.apply(attended, net.eps);
        let inner = sized(
            &mut buf.inner,
            attended.len() / h * self.intermediate.bias.len(),
        );
        gemm_weight(
            attended,
            &self.intermediate.weight,
            inner,
            self.intermediate.epilogue(None, true),
            &mut buf.parts,
        );
        let mut out = x;
        gemm_weight(
            inner,
            &self.output.weight,
            &mut out,
            self.output.epilogue(Some(attended), false),
            &mut buf.parts,
        );
        self.output_norm.apply(&mut out, net.eps);
        out
    }
}

/// Scaled dot-product attention of every sequence and head: `qkv` holds each row's queries,
/// keys and values (`[batch * len, 3 * hidden]`); `mask` is added to every query's scores
/// (`[batch * len]`); the first `q_len` rows of each sequence are the queries. Writes
/// `context` (`[batch * q_len, hidden]`).
fn attention(
    net: &FusedBert,
    qkv: &[f32],
    mask: &[f32],
    len: usize,
    q_len: usize,
    context: &mut [f32],
) {
    let h = net.hidden;
    let heads = net.heads;
    let d = h / heads;
    let batch = qkv.len() / (3 * h * len);
    let scale = 1.0 / (d as f32).sqrt();
    let stride = 3 * h;
    // One task per (sequence, head); each writes its columns of its sequence's rows.
    let out = SharedRows(context.as_mut_ptr());
    (0..batch * heads).into_par_iter().for_each(|task| {
        let (b, head) = (task / heads, task % heads);
        let seq = &qkv[b * len * stride..][..len * stride];
        let queries: Vec<f32> = (0..q_len)
            .flat_map(|i| seq[i * stride + head * d..][..d].iter().map(|q| q * scale))
            .collect();
        let keys = Packed::from_out_in_strided(&seq[h + head * d..], len, d, stride);
        let mut scores = vec![0.0f32; q_len * len];
        gemm_serial(
            &queries,
            &keys,
            &mut scores,
            Epilogue {
                bias: Some(&mask[b * len..][..len]),
                ..Epilogue::default()
            },
        );
        kernels::softmax_rows(&mut scores, len);
        let values = Packed::from_in_out_strided(&seq[2 * h + head * d..], len, d, stride);
        let mut weighted = vec![0.0f32; q_len * d];
        gemm_serial(&scores, &values, &mut weighted, Epilogue::default());
        let out = &out;
        for (i, row) in weighted.chunks_exact(d).enumerate() {
            // SAFETY: row `b * q_len + i`, columns `head * d..(head + 1) * d` of `context`
            // (`[batch * q_len, h]`) are this task's alone.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    row.as_ptr(),
                    out.0.add((b * q_len + i) * h + head * d),
                    d,
                )
            };
        }
    });
}

struct SharedRows(*mut f32);
// SAFETY: only used to hand disjoint parts of one buffer to rayon tasks.
unsafe impl Sync for SharedRows {}
