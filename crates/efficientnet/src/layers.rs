//! The module tree mirroring HF's checkpoint keys (stem, MBConv blocks, encoder) and each
//! block's forward pass through burn's ops.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::{gelu, relu, sigmoid, silu};
use burn::tensor::{Device, Tensor};

use crate::config::{Activation, BlockSpec};
use crate::in_place;

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

pub(crate) fn conv(
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

pub(crate) fn conv1x1(i: usize, o: usize, bias: bool, device: &Device) -> Conv2d {
    conv([i, o], 1, 1, PaddingConfig2d::Valid, 1, bias, device)
}

pub(crate) fn bn(n: usize, eps: f64, device: &Device) -> Option<BatchNorm> {
    Some(BatchNormConfig::new(n).with_epsilon(eps).init(device))
}

impl Block {
    pub(crate) fn new(spec: &BlockSpec, eps: f64, device: &Device) -> Self {
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

    pub(crate) fn forward(&self, x: Tensor<4>, act: Act) -> Tensor<4> {
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
        h = if act.in_place {
            in_place::scale_channels(h, scale)
        } else {
            h * scale
        };

        let p = &self.projection;
        h = conv_bn(&p.project_conv, &p.project_bn, h);
        if self.residual { h + x } else { h }
    }
}

/// The activation of one forward pass through burn's ops, and whether SiLU and the
/// squeeze-excite scaling run in place ([`in_place`]: flex, f32).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Act {
    pub(crate) kind: Activation,
    pub(crate) in_place: bool,
}

impl Act {
    pub(crate) fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self.kind {
            Activation::Silu if self.in_place => in_place::silu(x),
            Activation::Silu => silu(x),
            Activation::Relu => relu(x),
            Activation::Gelu => gelu(x),
        }
    }
}

pub(crate) fn conv_bn(conv: &Conv2d, bn: &Option<BatchNorm>, x: Tensor<4>) -> Tensor<4> {
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
