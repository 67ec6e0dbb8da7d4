//! The network ([`EfficientNet`]): building, folding, and the forward pass through one of its
//! [`Engine`]s.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

use crate::config::{Activation, EfficientNetConfig, PoolingType};
use crate::error::{Error, Result};
use crate::folded::FoldedNet;
use crate::fused::FusedNet;
use crate::layers::{Act, Block, Embeddings, Encoder, bn, conv, conv_bn, conv1x1};

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
    /// The fused path's copy of the weights (see [`Engine::Fused`]): `Some` after
    /// [`EfficientNet::for_inference`] on flex, filled by [`EfficientNet::prepare`] or the
    /// first forward pass (with `None` when the network is not one that path runs).
    #[module(skip)]
    fused: Option<Arc<OnceLock<Option<FusedNet>>>>,
}

/// How a forward pass runs: [`EfficientNet::engine`] picks one per call.
enum Engine<'a> {
    /// burn's ops, on any device and float type.
    BurnOps,
    /// burn's ops with SiLU and the squeeze-excite scaling computed in place by [`kernels`]
    /// (flex, f32, when the fused path is not prepared): burn-flex runs them on one thread.
    BurnOpsInPlace,
    /// The fused path (flex, after [`EfficientNet::for_inference`]): each image as fused
    /// channels-last steps on [`FusedNet`]'s folded, packed weights.
    Fused(&'a FusedNet),
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
            fused: None,
        })
    }

    /// Folds every BatchNorm into the convolution before it (the convs gain a bias), so no BN
    /// op runs at inference: the convolutions take the folded network's weights (the fold
    /// that the fused path packs, computed in f32 on the host), as tensors of the module's
    /// float type on its device. Call after loading weights.
    pub fn fold_batch_norms(mut self) -> Self {
        self.fused = None;
        if self.has_batch_norms() {
            let dtype = self.float_dtype();
            FoldedNet::new(&self.embeddings, &self.encoder).write(
                &mut self.embeddings,
                &mut self.encoder,
                dtype,
            );
        }
        self
    }

    /// The inference form. On the flex device: the fused path (`Engine::Fused`; a SiLU
    /// network with f32 weights, as ALIGN's), which runs on a packed copy of the folded
    /// network, made by [`Self::prepare`] or else by the first forward pass (the module itself
    /// is left as loaded, so a text-only use of a checkpoint never reads the vision weights).
    /// Elsewhere: [`Self::fold_batch_norms`]. Call it once the weights are loaded: the fused
    /// copy does not follow later changes to the module's parameters.
    pub fn for_inference(self) -> Self {
        let device = self.embeddings.convolution.weight.val().device();
        if kernels::is_fused_device(&device)
            && self.activation == Activation::Silu
            && self.float_dtype() == FloatDType::F32
        {
            Self {
                fused: Some(Arc::new(OnceLock::new())),
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

    /// Makes the fused copy of [`Self::for_inference`] now (once: every weight folded and
    /// packed) rather than in the first forward pass; nothing to do elsewhere.
    pub fn prepare(&self) {
        self.fused_net();
    }

    fn fused_net(&self) -> Option<&FusedNet> {
        self.fused
            .as_ref()?
            .get_or_init(|| {
                FusedNet::new(
                    FoldedNet::new(&self.embeddings, &self.encoder),
                    self.activation,
                    self.pooling,
                )
            })
            .as_ref()
    }

    /// Whether [`Self::forward`] on the model's device runs the fused path (see
    /// [`Self::for_inference`]); makes the fused copy if it is not made yet.
    pub fn runs_fused(&self) -> bool {
        self.fused_net().is_some()
    }

    /// The engine for a forward pass on `device`.
    fn engine(&self, device: &Device) -> Engine<'_> {
        if !kernels::is_fused_device(device) {
            return Engine::BurnOps;
        }
        match (self.fused_net(), self.float_dtype()) {
            (Some(net), _) => Engine::Fused(net),
            (None, FloatDType::F32) => Engine::BurnOpsInPlace,
            (None, _) => Engine::BurnOps,
        }
    }

    /// Whether any BatchNorm is left in the module (false after [`Self::fold_batch_norms`]; a
    /// module that [`Self::runs_fused`] keeps them and folds them into its fused copy).
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
        let in_place = match self.engine(&pixel_values.device()) {
            Engine::Fused(net) => return Ok(self.run_fused(net, pixel_values, keep)),
            Engine::BurnOpsInPlace => true,
            Engine::BurnOps => false,
        };
        let dtype = self.float_dtype();
        let act = Act {
            kind: self.activation,
            in_place,
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

    /// [`Self::run`] on the fused path, one image at a time.
    fn run_fused(&self, net: &FusedNet, pixel_values: Tensor<4>, keep: bool) -> Run {
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
