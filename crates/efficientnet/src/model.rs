//! The network: module tree mirroring HF's checkpoint keys, forward pass, BN folding.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{gelu, relu, sigmoid, silu};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

use crate::config::{Activation, BlockSpec, EfficientNetConfig, PoolingType};
use crate::error::{Error, Result};
use crate::host;
use crate::nhwc::HostNet;

/// Stem: `ZeroPad2d(0, 1, 0, 1)` folded into the conv's padding, 3x3 stride-2 conv, BN, act.
/// Mirrors transformers' [`EfficientNetEmbeddings`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/efficientnet/modeling_efficientnet.py).
#[derive(Module, Debug)]
pub struct Embeddings {
    pub convolution: Conv2d,
    /// `None` once folded into `convolution`.
    pub batchnorm: Option<BatchNorm>,
}

/// 1x1 expansion conv + BN (+ act).
/// Mirrors transformers' [`EfficientNetExpansionLayer`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/efficientnet/modeling_efficientnet.py).
#[derive(Module, Debug)]
pub struct Expansion {
    pub expand_conv: Conv2d,
    pub expand_bn: Option<BatchNorm>,
}

/// Depthwise kxk conv + BN (+ act).
/// Mirrors transformers' [`EfficientNetDepthwiseLayer`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/efficientnet/modeling_efficientnet.py).
#[derive(Module, Debug)]
pub struct DepthwiseLayer {
    pub depthwise_conv: Conv2d,
    pub depthwise_norm: Option<BatchNorm>,
}

/// Squeeze-excite: mean over H, W -> 1x1 conv -> act -> 1x1 conv -> sigmoid -> scale.
/// Mirrors transformers' [`EfficientNetSqueezeExciteLayer`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/efficientnet/modeling_efficientnet.py).
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    pub reduce: Conv2d,
    pub expand: Conv2d,
}

/// 1x1 projection conv + BN, no activation.
/// Mirrors transformers' [`EfficientNetFinalBlockLayer`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/efficientnet/modeling_efficientnet.py).
#[derive(Module, Debug)]
pub struct Projection {
    pub project_conv: Conv2d,
    pub project_bn: Option<BatchNorm>,
}

/// One MBConv block.
/// Mirrors transformers' [`EfficientNetBlock`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/efficientnet/modeling_efficientnet.py).
#[derive(Module, Debug)]
pub struct Block {
    pub expansion: Option<Expansion>,
    pub depthwise_conv: DepthwiseLayer,
    pub squeeze_excite: SqueezeExcite,
    pub projection: Projection,
    #[module(skip)]
    pub residual: bool,
}

/// `encoder.blocks` and, for standalone EfficientNet, `encoder.top_conv` / `encoder.top_bn`.
/// Mirrors transformers' [`EfficientNetEncoder`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/efficientnet/modeling_efficientnet.py).
#[derive(Module, Debug)]
pub struct Encoder {
    pub blocks: Vec<Block>,
    pub top_conv: Option<Conv2d>,
    pub top_bn: Option<BatchNorm>,
}

/// An HF EfficientNet (`AlignVisionModel`, `EfficientNetModel`, optionally with the
/// `EfficientNetForImageClassification` head).
/// Mirrors transformers' [`EfficientNetModel`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/efficientnet/modeling_efficientnet.py).
/// As ALIGN's vision tower: [`AlignVisionModel`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/align/modeling_align.py).
#[derive(Module, Debug)]
pub struct EfficientNet {
    pub embeddings: Embeddings,
    pub encoder: Encoder,
    pub classifier: Option<Linear>,
    #[module(skip)]
    pub(crate) activation: Activation,
    #[module(skip)]
    pub(crate) pooling: PoolingType,
    #[module(skip)]
    num_channels: usize,
    #[module(skip)]
    stage_ends: Vec<usize>,
    /// The host-memory copy that runs the forward pass on flex (see [`crate::nhwc`]): `Some`
    /// after [`EfficientNet::for_inference`] on flex, filled by [`EfficientNet::prepare`] or
    /// the first forward pass (with `None` when the network is not one that path runs).
    #[module(skip)]
    host_net: Option<Arc<OnceLock<Option<HostNet>>>>,
}

/// Output of [`EfficientNet::forward`].
#[derive(Debug, Clone)]
pub struct Output {
    /// `[batch, channels, h, w]`: last block (or top conv) output.
    pub last_hidden_state: Tensor<4>,
    /// `[batch, channels]`: mean (or max) of `last_hidden_state` over H, W.
    pub pooler_output: Tensor<2>,
    /// `[batch, num_labels]` when the model has a classifier.
    pub logits: Option<Tensor<2>>,
}

/// What [`EfficientNet::run`] gives: the output and, when asked, the intermediates.
struct Run {
    embeddings: Option<Tensor<4>>,
    stages: Vec<Tensor<4>>,
    output: Output,
}

/// Output of [`EfficientNet::forward_with_intermediates`].
#[derive(Debug, Clone)]
pub struct DetailedOutput {
    /// Stem output.
    pub embeddings: Tensor<4>,
    /// Output of the last block of every stage.
    pub stages: Vec<Tensor<4>>,
    pub output: Output,
}

fn conv(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: PaddingConfig2d,
    groups: usize,
    bias: bool,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(padding)
        .with_groups(groups)
        .with_bias(bias)
        .init(device)
}

fn conv1x1(i: usize, o: usize, bias: bool, device: &Device) -> Conv2d {
    conv([i, o], 1, 1, PaddingConfig2d::Valid, 1, bias, device)
}

fn bn(n: usize, eps: f64, device: &Device) -> Option<BatchNorm> {
    Some(BatchNormConfig::new(n).with_epsilon(eps).init(device))
}

impl Block {
    fn new(spec: &BlockSpec, eps: f64, device: &Device) -> Self {
        let c = spec.expanded_dim;
        let [t, l, b, r] = spec.padding;
        Self {
            expansion: spec.expand.then(|| Expansion {
                expand_conv: conv1x1(spec.in_dim, c, false, device),
                expand_bn: bn(c, eps, device),
            }),
            depthwise_conv: DepthwiseLayer {
                depthwise_conv: conv(
                    [c, c],
                    spec.kernel_size,
                    spec.stride,
                    PaddingConfig2d::Explicit(t, l, b, r),
                    c,
                    false,
                    device,
                ),
                depthwise_norm: bn(c, eps, device),
            },
            squeeze_excite: SqueezeExcite {
                reduce: conv1x1(c, spec.se_dim, true, device),
                expand: conv1x1(spec.se_dim, c, true, device),
            },
            projection: Projection {
                project_conv: conv1x1(c, spec.out_dim, false, device),
                project_bn: bn(spec.out_dim, eps, device),
            },
            residual: spec.residual,
        }
    }

    fn forward(&self, x: Tensor<4>, act: Act) -> Tensor<4> {
        let mut h = x.clone();
        if let Some(e) = &self.expansion {
            h = act.apply(conv_bn(&e.expand_conv, &e.expand_bn, h));
        }
        let dw = &self.depthwise_conv;
        h = act.apply(conv_bn(&dw.depthwise_conv, &dw.depthwise_norm, h));

        let [batch, channels, height, width] = h.dims();
        let squeezed = h
            .clone()
            .reshape([batch, channels, height * width])
            .mean_dim(2)
            .reshape([batch, channels, 1, 1]);
        let se = &self.squeeze_excite;
        let scale = sigmoid(pointwise(
            &se.expand,
            act.apply(pointwise(&se.reduce, squeezed)),
        ));
        h = if act.host {
            host::scale_channels(h, scale)
        } else {
            h * scale
        };

        let p = &self.projection;
        h = conv_bn(&p.project_conv, &p.project_bn, h);
        if self.residual { h + x } else { h }
    }
}

/// The activation of one forward pass, and whether SiLU runs in host memory (flex, f32: see
/// [`host`]).
#[derive(Debug, Clone, Copy)]
struct Act {
    kind: Activation,
    host: bool,
}

impl Act {
    fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self.kind {
            Activation::Silu if self.host => host::silu(x),
            Activation::Silu => silu(x),
            Activation::Relu => relu(x),
            Activation::Gelu => gelu(x),
        }
    }
}

fn conv_bn(conv: &Conv2d, bn: &Option<BatchNorm>, x: Tensor<4>) -> Tensor<4> {
    let y = if is_pointwise(conv) {
        pointwise(conv, x)
    } else {
        conv.forward(x)
    };
    match bn {
        Some(bn) => bn.forward(y),
        None => y,
    }
}

/// A 1x1, stride-1, unpadded, ungrouped convolution: a matrix product per image.
fn is_pointwise(conv: &Conv2d) -> bool {
    conv.kernel_size == [1, 1]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(conv.padding, PaddingConfig2d::Valid)
}

/// A pointwise convolution (see [`is_pointwise`]) as one batched product `[O, I] x [I, H*W]`
/// per image, bias added: 95 % of ALIGN's vision arithmetic. burn's matrix product is far faster
/// on GPUs than its generic convolution, which without autotuning is a direct one (see
/// docs/performance.md).
fn pointwise(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [batch, channels, height, width] = x.dims();
    let [out, ..] = conv.weight.dims();
    // burn's product broadcasts the weight's batch dimension of 1 over the images.
    let weight = conv.weight.val().reshape([1, out, channels]);
    let y = weight.matmul(x.reshape([batch, channels, height * width]));
    let y = match &conv.bias {
        Some(bias) => y + bias.val().reshape([1, out, 1]),
        None => y,
    };
    y.reshape([batch, out, height, width])
}

/// Folds an inference-mode BatchNorm into the preceding convolution:
/// `w' = w * g / sqrt(var + eps)`, `b' = beta + (b - mean) * g / sqrt(var + eps)`.
fn fold(mut conv: Conv2d, bn: Option<BatchNorm>) -> (Conv2d, Option<BatchNorm>) {
    let Some(bn) = bn else {
        return (conv, None);
    };
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let [out, ..] = conv.weight.dims();
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([out], &scale.device()),
    };
    let new_bias = bn.beta.val() + (bias - bn.running_mean.value()) * scale.clone();
    let weight = conv.weight.val() * scale.reshape([out, 1, 1, 1]);
    conv.weight = Param::from_tensor(weight);
    conv.bias = Some(Param::from_tensor(new_bias));
    (conv, None)
}

impl EfficientNet {
    /// Builds the network described by `config` with burn's default (random) initialisation.
    pub fn new(config: &EfficientNetConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let eps = config.batch_norm_eps;
        let stem = config.stem_dim();
        let blocks: Vec<Block> = config
            .blocks()
            .iter()
            .map(|spec| Block::new(spec, eps, device))
            .collect();
        let last = config.blocks().last().map(|b| b.out_dim).unwrap_or(stem);
        let (top_conv, top_bn) = if config.has_top_conv() {
            let top = config.top_dim();
            (
                Some(conv1x1(last, top, false, device)),
                bn(top, eps, device),
            )
        } else {
            (None, None)
        };
        let classifier = config
            .num_labels()
            .map(|n| LinearConfig::new(config.output_dim(), n).init(device));
        Ok(Self {
            embeddings: Embeddings {
                // ZeroPad2d(left 0, right 1, top 0, bottom 1) as (top, left, bottom, right)
                convolution: conv(
                    [config.num_channels, stem],
                    3,
                    2,
                    PaddingConfig2d::Explicit(0, 0, 1, 1),
                    1,
                    false,
                    device,
                ),
                batchnorm: bn(stem, eps, device),
            },
            encoder: Encoder {
                blocks,
                top_conv,
                top_bn,
            },
            classifier,
            activation: config.activation()?,
            pooling: config.pooling_type,
            num_channels: config.num_channels,
            stage_ends: config.stage_ends(),
            host_net: None,
        })
    }

    /// Folds every BatchNorm into the convolution before it (the convs gain a bias), so no BN
    /// op runs at inference. Call after loading weights.
    pub fn fold_batch_norms(self) -> Self {
        let Self {
            embeddings,
            encoder,
            classifier,
            activation,
            pooling,
            num_channels,
            stage_ends,
            host_net: _,
        } = self;
        let (convolution, batchnorm) = fold(embeddings.convolution, embeddings.batchnorm);
        let blocks = encoder
            .blocks
            .into_iter()
            .map(|b| {
                let expansion = b.expansion.map(|e| {
                    let (expand_conv, expand_bn) = fold(e.expand_conv, e.expand_bn);
                    Expansion {
                        expand_conv,
                        expand_bn,
                    }
                });
                let (depthwise_conv, depthwise_norm) = fold(
                    b.depthwise_conv.depthwise_conv,
                    b.depthwise_conv.depthwise_norm,
                );
                let (project_conv, project_bn) =
                    fold(b.projection.project_conv, b.projection.project_bn);
                Block {
                    expansion,
                    depthwise_conv: DepthwiseLayer {
                        depthwise_conv,
                        depthwise_norm,
                    },
                    squeeze_excite: b.squeeze_excite,
                    projection: Projection {
                        project_conv,
                        project_bn,
                    },
                    residual: b.residual,
                }
            })
            .collect();
        let (top_conv, top_bn) = match encoder.top_conv {
            Some(c) => {
                let (c, bn) = fold(c, encoder.top_bn);
                (Some(c), bn)
            }
            None => (None, encoder.top_bn),
        };
        Self {
            embeddings: Embeddings {
                convolution,
                batchnorm,
            },
            encoder: Encoder {
                blocks,
                top_conv,
                top_bn,
            },
            classifier,
            activation,
            pooling,
            num_channels,
            stage_ends,
            host_net: None,
        }
    }

    /// The inference form. On the flex device: the fused channels-last forward pass in host
    /// memory (see the `nhwc` module; a SiLU network with f32 weights, as ALIGN's), which runs
    /// on a copy of the weights with the BatchNorms folded in, made by [`Self::prepare`] or
    /// else by the first forward pass (the module itself is left as loaded, so a text-only use
    /// of a checkpoint never reads the vision weights). Elsewhere:
    /// [`Self::fold_batch_norms`]. Call it once the weights are loaded: the host copy does not
    /// follow later changes to the module's parameters.
    pub fn for_inference(self) -> Self {
        let device = self.embeddings.convolution.weight.val().device();
        if host::is_host_device(&device)
            && self.activation == Activation::Silu
            && self.float_dtype() == FloatDType::F32
        {
            Self {
                host_net: Some(Arc::new(OnceLock::new())),
                ..self
            }
        } else {
            self.fold_batch_norms()
        }
    }

    /// The float type of the parameters (f32 as loaded; see `Module::map` to cast them): what
    /// [`Self::forward`] casts its input to and computes in.
    pub fn float_dtype(&self) -> FloatDType {
        self.embeddings.convolution.weight.val().dtype().into()
    }

    /// Makes the host-memory copy of [`Self::for_inference`] now (once: every weight folded
    /// and packed) rather than in the first forward pass; nothing to do elsewhere.
    pub fn prepare(&self) {
        self.host_net();
    }

    fn host_net(&self) -> Option<&HostNet> {
        self.host_net
            .as_ref()?
            .get_or_init(|| HostNet::new(self))
            .as_ref()
    }

    /// Whether [`Self::forward`] on the model's device runs in host memory (see
    /// [`Self::for_inference`]); makes the host copy if it is not made yet.
    pub fn runs_on_host(&self) -> bool {
        self.host_net().is_some()
    }

    /// Whether any BatchNorm is left in the module (false after [`Self::fold_batch_norms`]; a
    /// module that [`Self::runs_on_host`] keeps them and folds them into its host copy).
    pub fn has_batch_norms(&self) -> bool {
        self.embeddings.batchnorm.is_some()
            || self.encoder.top_bn.is_some()
            || self.encoder.blocks.iter().any(|b| {
                b.expansion.as_ref().is_some_and(|e| e.expand_bn.is_some())
                    || b.depthwise_conv.depthwise_norm.is_some()
                    || b.projection.project_bn.is_some()
            })
    }

    /// Runs the network on `pixel_values` `[batch, num_channels, height, width]` (any size),
    /// cast to the parameters' float type (see [`Self::float_dtype`]); the outputs are in it.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Result<Output> {
        Ok(self.run(pixel_values, false)?.output)
    }

    /// Like [`Self::forward`], also returning the stem output and every stage's output.
    pub fn forward_with_intermediates(&self, pixel_values: Tensor<4>) -> Result<DetailedOutput> {
        let run = self.run(pixel_values, true)?;
        Ok(DetailedOutput {
            embeddings: run.embeddings.expect("kept when asked"),
            stages: run.stages,
            output: run.output,
        })
    }

    /// The forward pass; with `keep`, also the stem's and every stage's output.
    fn run(&self, pixel_values: Tensor<4>, keep: bool) -> Result<Run> {
        self.check_input(pixel_values.dims())?;
        if host::is_host_device(&pixel_values.device())
            && let Some(net) = self.host_net()
        {
            return Ok(self.run_on_host(net, pixel_values, keep));
        }
        let dtype = self.float_dtype();
        let act = Act {
            kind: self.activation,
            host: host::is_host_device(&pixel_values.device()) && dtype == FloatDType::F32,
        };
        let pixel_values = pixel_values.cast(dtype);
        let e = &self.embeddings;
        let mut h = act.apply(conv_bn(&e.convolution, &e.batchnorm, pixel_values));
        let embeddings = keep.then(|| h.clone());
        let mut stages = Vec::new();
        let mut next_end = self.stage_ends.iter().peekable();
        for (i, block) in self.encoder.blocks.iter().enumerate() {
            h = block.forward(h, act);
            if next_end.peek() == Some(&&i) {
                next_end.next();
                if keep {
                    stages.push(h.clone());
                }
            }
        }
        if let Some(top) = &self.encoder.top_conv {
            h = act.apply(conv_bn(top, &self.encoder.top_bn, h));
        }
        let [batch, channels, height, width] = h.dims();
        let flat = h.clone().reshape([batch, channels, height * width]);
        let pooled = match self.pooling {
            PoolingType::Mean => flat.mean_dim(2),
            PoolingType::Max => flat.max_dim(2),
        }
        .reshape([batch, channels]);
        let logits = self.classifier.as_ref().map(|c| c.forward(pooled.clone()));
        Ok(Run {
            embeddings,
            stages,
            output: Output {
                last_hidden_state: h,
                pooler_output: pooled,
                logits,
            },
        })
    }

    /// [`Self::run`] through the host copy, one image at a time.
    fn run_on_host(&self, net: &HostNet, pixel_values: Tensor<4>, keep: bool) -> Run {
        let device = pixel_values.device();
        let [batch, channels, height, width] = pixel_values.dims();
        let pixels: Vec<f32> = pixel_values
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .expect("data converted to f32 reads as f32");
        let mut embeddings = Vec::new();
        let mut stages: Vec<Vec<Tensor<4>>> = Vec::new();
        let mut last = Vec::with_capacity(batch);
        let mut pooled = Vec::new();
        // The images side by side on rayon's pool: each thread mostly runs its own image's
        // steps (no hand-offs between threads), stealing from the others when it is done.
        // The same arithmetic as one at a time. Inside `scope`, a single image runs on a
        // worker too (rayon would run an unsplit loop on the calling thread), so that each of
        // its ~300 parallel steps starts from a worker rather than the caller handing it over
        // and sleeping until it is done.
        let outs: Vec<_> = rayon::scope(|_| {
            pixels
                .par_chunks_exact(channels * height * width)
                .map(|image| net.run(image, [height, width], &self.stage_ends, keep, &device))
                .collect()
        });
        for out in outs {
            embeddings.extend(out.embeddings);
            stages.resize_with(out.stages.len(), Vec::new);
            for (all, stage) in stages.iter_mut().zip(out.stages) {
                all.push(stage);
            }
            last.push(out.last_hidden_state);
            pooled.extend(out.pooled);
        }
        let dim = pooled.len() / batch;
        let pooled = Tensor::<2>::from_data(TensorData::new(pooled, [batch, dim]), &device);
        let logits = self.classifier.as_ref().map(|c| c.forward(pooled.clone()));
        let last_hidden_state = Tensor::cat(last, 0);
        Run {
            embeddings: keep.then(|| Tensor::cat(embeddings, 0)),
            stages: stages.into_iter().map(|s| Tensor::cat(s, 0)).collect(),
            output: Output {
                last_hidden_state,
                pooler_output: pooled,
                logits,
            },
        }
    }

    /// Rejects inputs the reference cannot run: wrong channel count, empty dimensions, or a
    /// spatial size that a strided convolution would reduce to nothing.
    fn check_input(&self, shape: [usize; 4]) -> Result<()> {
        let [batch, channels, mut height, mut width] = shape;
        if channels != self.num_channels {
            return Err(Error::InputChannels {
                expected: self.num_channels,
                actual: channels,
            });
        }
        if batch == 0 || height == 0 || width == 0 {
            return Err(Error::InputSize {
                shape,
                message: "every dimension must be non-zero".into(),
            });
        }
        let convs = std::iter::once(&self.embeddings.convolution).chain(
            self.encoder
                .blocks
                .iter()
                .map(|b| &b.depthwise_conv.depthwise_conv),
        );
        for (i, conv) in convs.enumerate() {
            let (pt, pl, pb, pr) = match conv.padding {
                PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
                _ => (0, 0, 0, 0),
            };
            let [kh, kw] = conv.kernel_size;
            let [sh, sw] = conv.stride;
            if height + pt + pb < kh || width + pl + pr < kw {
                let at = if i == 0 {
                    "the stem".to_string()
                } else {
                    format!("block {}", i - 1)
                };
                return Err(Error::InputSize {
                    shape,
                    message: format!(
                        "{at} gets {height}x{width}, smaller than its {kh}x{kw} kernel"
                    ),
                });
            }
            height = (height + pt + pb - kh) / sh + 1;
            width = (width + pl + pr - kw) / sw + 1;
        }
        Ok(())
    }
}
