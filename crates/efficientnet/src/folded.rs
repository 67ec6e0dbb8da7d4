//! The folded network: every BatchNorm folded into the convolution before it, as plain `f32`
//! data. [`FoldedNet::new`] makes it once from the loaded modules, and both forward engines
//! consume it: the fused path packs it (`FusedNet`), and burn's ops run on device tensors made
//! from it ([`FoldedNet::write`], called by `EfficientNet::fold_batch_norms`), so neither runs
//! a BatchNorm op at inference.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::{FloatDType, Tensor, TensorData};
use rayon::prelude::*;

use crate::layers::{Block, Embeddings, Encoder};

/// A convolution with the BatchNorm after it (if any) folded in.
#[derive(Debug)]
pub(crate) struct FoldedConv {
    /// `[out, in / groups, kh, kw]` values (burn's and PyTorch's order).
    pub(crate) weight: Vec<f32>,
    /// The weight's shape.
    pub(crate) dims: [usize; 4],
    /// `[out]`: zeros for a convolution with neither a bias nor a BatchNorm.
    pub(crate) bias: Vec<f32>,
    pub(crate) stride: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub(crate) padding: [usize; 4],
    pub(crate) groups: usize,
}

/// One MBConv block of the folded network (see [`Block`]).
#[derive(Debug)]
pub(crate) struct FoldedBlock {
    pub(crate) expansion: Option<FoldedConv>,
    pub(crate) depthwise: FoldedConv,
    /// Squeeze-excite `channels -> se` (no BatchNorm: as loaded).
    pub(crate) reduce: FoldedConv,
    /// Squeeze-excite `se -> channels` (no BatchNorm: as loaded).
    pub(crate) expand: FoldedConv,
    pub(crate) projection: FoldedConv,
    pub(crate) residual: bool,
}

/// The convolutions of an `EfficientNet` with their BatchNorms folded in; see the module
/// documentation.
#[derive(Debug)]
pub(crate) struct FoldedNet {
    pub(crate) stem: FoldedConv,
    pub(crate) blocks: Vec<FoldedBlock>,
    pub(crate) top: Option<FoldedConv>,
}

impl FoldedNet {
    /// Reads every convolution's parameters (converted to `f32`) and folds the BatchNorms
    /// that are still there.
    pub(crate) fn new(embeddings: &Embeddings, encoder: &Encoder) -> Self {
        Self {
            stem: FoldedConv::new(&embeddings.convolution, &embeddings.batchnorm),
            blocks: encoder.blocks.par_iter().map(FoldedBlock::new).collect(),
            top: encoder
                .top_conv
                .as_ref()
                .map(|c| FoldedConv::new(c, &encoder.top_bn)),
        }
    }

    /// Replaces the weights of the modules this was made from by the folded ones, as tensors
    /// of `dtype` on the modules' device, and drops their BatchNorms.
    pub(crate) fn write(
        self,
        embeddings: &mut Embeddings,
        encoder: &mut Encoder,
        dtype: FloatDType,
    ) {
        self.stem.write(&mut embeddings.convolution, dtype);
        embeddings.batchnorm = None;
        for (folded, block) in self.blocks.into_iter().zip(&mut encoder.blocks) {
            folded.write(block, dtype);
        }
        if let (Some(folded), Some(conv)) = (self.top, &mut encoder.top_conv) {
            folded.write(conv, dtype);
            encoder.top_bn = None;
        }
    }
}

impl FoldedBlock {
    fn new(b: &Block) -> Self {
        let se = &b.squeeze_excite;
        Self {
            expansion: b
                .expansion
                .as_ref()
                .map(|e| FoldedConv::new(&e.expand_conv, &e.expand_bn)),
            depthwise: FoldedConv::new(
                &b.depthwise_conv.depthwise_conv,
                &b.depthwise_conv.depthwise_norm,
            ),
            reduce: FoldedConv::new(&se.reduce, &None),
            expand: FoldedConv::new(&se.expand, &None),
            projection: FoldedConv::new(&b.projection.project_conv, &b.projection.project_bn),
            residual: b.residual,
        }
    }

    fn write(self, b: &mut Block, dtype: FloatDType) {
        if let (Some(folded), Some(e)) = (self.expansion, &mut b.expansion) {
            folded.write(&mut e.expand_conv, dtype);
            e.expand_bn = None;
        }
        self.depthwise
            .write(&mut b.depthwise_conv.depthwise_conv, dtype);
        b.depthwise_conv.depthwise_norm = None;
        self.reduce.write(&mut b.squeeze_excite.reduce, dtype);
        self.expand.write(&mut b.squeeze_excite.expand, dtype);
        self.projection.write(&mut b.projection.project_conv, dtype);
        b.projection.project_bn = None;
    }
}

impl FoldedConv {
    /// `conv` with `bn` folded in: per output channel `o`, with
    /// `s = gamma[o] / sqrt(var[o] + eps)`, `w' = w * s` and `b' = beta[o] + (b - mean[o]) * s`
    /// (in `f32`, each step rounded as burn's tensor ops round it).
    fn new(conv: &Conv2d, bn: &Option<BatchNorm>) -> Self {
        let dims = conv.weight.dims();
        let mut weight = floats(conv.weight.val());
        let mut bias = match &conv.bias {
            Some(b) => floats(b.val()),
            None => vec![0.0; dims[0]],
        };
        if let Some(bn) = bn {
            let eps = bn.epsilon as f32;
            let gamma = floats(bn.gamma.val());
            let beta = floats(bn.beta.val());
            let mean = floats(bn.running_mean.value());
            let var = floats(bn.running_var.value());
            let per_output = dims[1..].iter().product::<usize>().max(1);
            for (o, (w, b)) in weight
                .chunks_exact_mut(per_output)
                .zip(&mut bias)
                .enumerate()
            {
                let scale = gamma[o] / (var[o] + eps).sqrt();
                *b = beta[o] + (*b - mean[o]) * scale;
                w.iter_mut().for_each(|w| *w *= scale);
            }
        }
        Self {
            weight,
            dims,
            bias,
            stride: conv.stride,
            padding: match conv.padding {
                PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r],
                _ => [0; 4],
            },
            groups: conv.groups,
        }
    }

    /// Sets `conv`'s weight and bias to these values, as tensors of `dtype` on its device.
    fn write(self, conv: &mut Conv2d, dtype: FloatDType) {
        let device = conv.weight.val().device();
        let out = self.bias.len();
        let weight = Tensor::<4>::from_data(TensorData::new(self.weight, self.dims), &device);
        let bias = Tensor::<1>::from_data(TensorData::new(self.bias, [out]), &device);
        conv.weight = Param::from_tensor(weight.cast(dtype));
        conv.bias = Some(Param::from_tensor(bias.cast(dtype)));
    }
}

/// A tensor's values as `f32`.
fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("data converted to f32 reads as f32")
}
