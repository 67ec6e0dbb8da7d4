//! The forward pass in host memory, channels-last, for the flex backend.
//!
//! On flex, burn runs the network op by op on NCHW tensors: each 1x1 convolution is a `gemm`
//! call, then bias, SiLU, the squeeze-excite scaling and the residual add are separate passes
//! over memory, and the depthwise convolutions walk NCHW planes with a padded copy of their
//! input. [`HostNet`] holds the weights, BatchNorms folded in, as plain `f32` arrays (made
//! once, by [`EfficientNet::prepare`](crate::EfficientNet::prepare) or the first forward
//! pass; 1x1 weights packed for [`host_ops::gemm`]) and runs an image as a sequence of fused
//! steps on NHWC buffers that are reused from one call to the next:
//!
//! * stem: im2col (the fixed `(0, 1, 0, 1)` padding read as zeros) + product with bias and
//!   SiLU applied in registers;
//! * expansion: product on `[H*W, C]` rows, bias + SiLU in registers, written as panels of 16
//!   channels (`[C / 16, H, W, 16]`, [`host_ops::gemm::gemm_panels`]); on the large early
//!   maps, band by band into a ring of the rows the depthwise convolution needs next (see
//!   [`Depthwise::apply_expanded`]), so that the expanded map (up to 16 MB) never goes to
//!   memory whole;
//! * depthwise: direct convolution, padding read as zeros, + bias + SiLU, summing each
//!   channel for squeeze-excite on the way, with the accumulators in registers (AVX2 where the
//!   CPU has it; AVX-512 where it has that too, the same values bit for bit but for the sign
//!   of an exact zero): on an expansion's panels, panel by panel, each panel through all the
//!   output rows, four pixels at a time (with AVX-512 at stride 1 and 3x3 or 5x5 taps, eight
//!   or nine, each input column loaded once per tap row) (a panel's rows and weights stay in
//!   L1: on channels-last input, a pixel's 25 taps of 1344 channels did not, nor did a row's
//!   taps of all panels),
//!   written as panels too (one stream of writes per panel); on a channels-last input
//!   (blocks without expansion), pixel by pixel, written channels-last;
//! * squeeze-excite: the two small products (packed too); its per-channel scale is folded
//!   into the projection weights (or applied to the activations, whichever is less work);
//! * projection: product + bias + residual add in registers, reading the depthwise output as
//!   it comes ([`host_ops::gemm::gemm_from_panels`] for panels).
//!
//! The arithmetic is the reference's up to the order of float additions: the parity tests run
//! this path on flex (`parity_tiny`, `align_base_random`).

use std::sync::Mutex;

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::Tensor;
use host_ops::gemm::{Epilogue, Packed, gemm, gemm_from_panels, gemm_panels};
use rayon::prelude::*;

use crate::config::PoolingType;
use crate::host;
use crate::model::{Block, EfficientNet};

/// A 1x1 convolution (or an im2col'd one): `out[M, n] = in[M, k] · weight + bias`.
#[derive(Debug)]
struct Pointwise {
    /// Packed once for [`gemm`].
    weight: Packed,
    bias: Vec<f32>,
}

#[derive(Debug)]
struct Depthwise {
    /// `[kernel * kernel, padded]`: tap-major, channels contiguous, zero-padded to
    /// [`Self::padded`] channels (a whole number of 16-channel panels).
    weight: Vec<f32>,
    /// `[padded]`, zero-padded.
    bias: Vec<f32>,
    channels: usize,
    kernel: usize,
    stride: usize,
    /// top, left, bottom, right
    padding: [usize; 4],
}

#[derive(Debug)]
struct SqueezeExcite {
    /// `channels -> se`, with its bias, then SiLU
    reduce: Pointwise,
    /// `se -> channels`, with its bias, then sigmoid
    expand: Pointwise,
}

#[derive(Debug)]
struct HostBlock {
    expansion: Option<Pointwise>,
    depthwise: Depthwise,
    squeeze_excite: SqueezeExcite,
    projection: Pointwise,
    residual: bool,
}

#[derive(Debug)]
struct Stem {
    /// Rows `(input channel, ky, kx)` (burn's order; the im2col columns follow it).
    conv: Pointwise,
    in_channels: usize,
    kernel: usize,
    stride: usize,
    padding: [usize; 4],
}

/// A buffer from [`HostNet`]'s pool: the first `len` values of a vector that keeps its full
/// length in the pool, so that taking it again writes nothing (no zero-fill of memory that
/// is about to be overwritten).
struct Buf {
    vec: Vec<f32>,
    len: usize,
}

impl std::ops::Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.vec[..self.len]
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.vec[..self.len]
    }
}

/// An activation in host memory: `[height, width, channels]`.
struct Map {
    data: Buf,
    height: usize,
    width: usize,
    channels: usize,
}

impl Map {
    /// `[1, C, H, W]` tensor on `device`.
    fn to_nchw(&self, device: &burn::tensor::Device) -> Tensor<4> {
        let (h, w, c) = (self.height, self.width, self.channels);
        let mut out = vec![0.0f32; h * w * c];
        for (p, pixel) in self.data.chunks_exact(c).enumerate() {
            for (ch, &v) in pixel.iter().enumerate() {
                out[ch * h * w + p] = v;
            }
        }
        Tensor::from_data(burn::tensor::TensorData::new(out, [1, c, h, w]), device)
    }
}

/// What [`HostNet::run`] returns for one image.
pub(crate) struct HostOutput {
    pub embeddings: Option<Tensor<4>>,
    pub stages: Vec<Tensor<4>>,
    pub last_hidden_state: Tensor<4>,
    pub pooled: Vec<f32>,
}

/// The folded network's weights in host memory, ready for [`HostNet::run`]; see the module
/// documentation.
#[derive(Debug)]
pub(crate) struct HostNet {
    stem: Stem,
    blocks: Vec<HostBlock>,
    top: Option<Pointwise>,
    pooling: PoolingType,
    /// Scratch buffers, kept between calls (at their full length) so that their pages stay
    /// mapped.
    pool: Mutex<Vec<Vec<f32>>>,
}

fn values(param: &Param<Tensor<1>>) -> Option<Vec<f32>> {
    param.val().into_data().try_into_vec::<f32>().ok()
}

fn weights(param: &Param<Tensor<4>>) -> Option<(Vec<f32>, [usize; 4])> {
    let t = param.val();
    let dims = t.dims();
    Some((t.into_data().try_into_vec::<f32>().ok()?, dims))
}

/// A conv's weight `[out, in, kh, kw]` (with its dims) and bias, with `bn` folded in as
/// [`EfficientNet::fold_batch_norms`] does: `w * g / sqrt(var + eps)`,
/// `beta + (b - mean) * g / sqrt(var + eps)`.
fn folded(conv: &Conv2d, bn: &Option<BatchNorm>) -> Option<(Vec<f32>, [usize; 4], Vec<f32>)> {
    let (mut w, dims) = weights(&conv.weight)?;
    let out = dims[0];
    let mut bias = match &conv.bias {
        Some(b) => values(b)?,
        None => vec![0.0; out],
    };
    if let Some(bn) = bn {
        let state = |t: Tensor<1>| t.into_data().try_into_vec::<f32>().ok();
        let gamma = values(&bn.gamma)?;
        let beta = values(&bn.beta)?;
        let mean = state(bn.running_mean.value())?;
        let var = state(bn.running_var.value())?;
        let eps = bn.epsilon as f32;
        let per = w.len() / out.max(1);
        for (o, (row, b)) in w.chunks_exact_mut(per).zip(bias.iter_mut()).enumerate() {
            let scale = gamma[o] / (var[o] + eps).sqrt();
            row.iter_mut().for_each(|v| *v *= scale);
            *b = beta[o] + (*b - mean[o]) * scale;
        }
    }
    Some((w, dims, bias))
}

fn padding(conv: &Conv2d) -> [usize; 4] {
    match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r],
        _ => [0; 4],
    }
}

fn pointwise(conv: &Conv2d, bn: &Option<BatchNorm>) -> Option<Pointwise> {
    if conv.groups != 1 || conv.stride != [1, 1] || padding(conv) != [0; 4] {
        return None;
    }
    let (w, [n, k, kh, kw], bias) = folded(conv, bn)?;
    Some(Pointwise {
        weight: Packed::from_out_in(&w, n, k * kh * kw),
        bias,
    })
}

impl HostNet {
    /// Copies the weights of a SiLU network, folding the BatchNorms that are still there;
    /// `None` when the network is not one this path runs (other activations, non-f32
    /// weights, unusual convs).
    pub(crate) fn new(net: &EfficientNet) -> Option<Self> {
        if net.activation != crate::Activation::Silu {
            return None;
        }
        let conv = &net.embeddings.convolution;
        if conv.stride[0] != conv.stride[1] || conv.groups != 1 {
            return None;
        }
        let (w, dims, bias) = folded(conv, &net.embeddings.batchnorm)?;
        let [n, in_channels, kernel, kw] = dims;
        if kernel != kw {
            return None;
        }
        let stem = Stem {
            conv: Pointwise {
                weight: Packed::from_out_in(&w, n, in_channels * kernel * kernel),
                bias,
            },
            in_channels,
            kernel,
            stride: conv.stride[0],
            padding: padding(conv),
        };
        let blocks = net
            .encoder
            .blocks
            .par_iter()
            .map(HostBlock::new)
            .collect::<Option<Vec<_>>>()?;
        let top = match &net.encoder.top_conv {
            Some(c) => Some(pointwise(c, &net.encoder.top_bn)?),
            None => None,
        };
        Some(Self {
            stem,
            blocks,
            top,
            pooling: net.pooling,
            pool: Mutex::new(Vec::new()),
        })
    }

    /// A vector of at least `len` values from the pool: the shortest one that holds `len`,
    /// else the longest, grown (zeros only in the new part).
    fn take_vec(&self, len: usize) -> Vec<f32> {
        let mut vec = match self.pool.lock() {
            Ok(mut pool) => {
                let fits = (0..pool.len())
                    .filter(|&i| pool[i].len() >= len)
                    .min_by_key(|&i| pool[i].len());
                let pick = fits.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
                pick.map(|i| pool.swap_remove(i)).unwrap_or_default()
            }
            Err(_) => Vec::new(),
        };
        if vec.len() < len {
            vec.resize(len, 0.0);
        }
        vec
    }

    /// `len` values (of unspecified content) from the pool.
    fn take(&self, len: usize) -> Buf {
        Buf {
            vec: self.take_vec(len),
            len,
        }
    }

    fn give_vec(&self, vec: Vec<f32>) {
        if let Ok(mut p) = self.pool.lock() {
            p.push(vec);
        }
    }

    fn give(&self, buf: Buf) {
        self.give_vec(buf.vec);
    }

    /// Runs one image, `pixels` `[C, H, W]` (already checked against the network's input
    /// rules). `keep`: also return the stem and every stage's output (`stage_ends`).
    pub(crate) fn run(
        &self,
        pixels: &[f32],
        [height, width]: [usize; 2],
        stage_ends: &[usize],
        keep: bool,
        device: &burn::tensor::Device,
    ) -> HostOutput {
        let mut x = self.stem(pixels, height, width);
        let embeddings = keep.then(|| x.to_nchw(device));
        let mut stages = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(self, x);
            if keep && stage_ends.contains(&i) {
                stages.push(x.to_nchw(device));
            }
        }
        if let Some(top) = &self.top {
            let mut out = self.take(x.height * x.width * top.weight.n());
            top.apply(&x.data, &mut out, true, None);
            self.give(std::mem::replace(&mut x.data, out));
            x.channels = top.weight.n();
        }
        let c = x.channels;
        let pixels = (x.height * x.width) as f32;
        let pooled = match self.pooling {
            PoolingType::Mean => {
                let mut sum = vec![0.0f32; c];
                for p in x.data.chunks_exact(c) {
                    sum.iter_mut().zip(p).for_each(|(s, v)| *s += v);
                }
                sum.iter().map(|s| s / pixels).collect()
            }
            PoolingType::Max => {
                let mut max = vec![f32::NEG_INFINITY; c];
                for p in x.data.chunks_exact(c) {
                    max.iter_mut().zip(p).for_each(|(m, &v)| *m = m.max(v));
                }
                max
            }
        };
        let last_hidden_state = x.to_nchw(device);
        self.give(x.data);
        HostOutput {
            embeddings,
            stages,
            last_hidden_state,
            pooled,
        }
    }

    fn stem(&self, pixels: &[f32], height: usize, width: usize) -> Map {
        let s = &self.stem;
        let [pt, pl, pb, pr] = s.padding;
        let k = s.kernel;
        let ho = (height + pt + pb - k) / s.stride + 1;
        let wo = (width + pl + pr - k) / s.stride + 1;
        let cols = s.conv.weight.k();
        let mut patches = self.take(ho * wo * cols);
        patches
            .par_chunks_mut(wo * cols)
            .enumerate()
            .for_each(|(oy, row)| {
                // The input line of each (channel, tap row), `None` in the padding: a patch is
                // `[in_channels, k, k]`, written in that order.
                let lines: Vec<Option<&[f32]>> = (0..s.in_channels)
                    .flat_map(|ic| (0..k).map(move |ky| (ic, ky)))
                    .map(|(ic, ky)| {
                        let iy = (oy * s.stride + ky).checked_sub(pt)?;
                        (iy < height).then(|| &pixels[(ic * height + iy) * width..][..width])
                    })
                    .collect();
                for (ox, patch) in row.chunks_exact_mut(cols).enumerate() {
                    for (taps, line) in patch.chunks_exact_mut(k).zip(&lines) {
                        for (kx, tap) in taps.iter_mut().enumerate() {
                            let ix = (ox * s.stride + kx).checked_sub(pl);
                            *tap = match (line, ix) {
                                (Some(line), Some(ix)) if ix < width => line[ix],
                                _ => 0.0,
                            };
                        }
                    }
                }
            });
        let mut out = self.take(ho * wo * s.conv.weight.n());
        s.conv.apply(&patches, &mut out, true, None);
        self.give(patches);
        Map {
            data: out,
            height: ho,
            width: wo,
            channels: s.conv.weight.n(),
        }
    }
}

impl HostBlock {
    fn new(b: &Block) -> Option<Self> {
        let dw = &b.depthwise_conv.depthwise_conv;
        let (w, [c, one, kernel, kw], dw_bias) = folded(dw, &b.depthwise_conv.depthwise_norm)?;
        if one != 1 || kernel != kw || dw.groups != c || dw.stride[0] != dw.stride[1] {
            return None;
        }
        let padded = c.div_ceil(PANEL) * PANEL;
        let mut taps = vec![0.0; kernel * kernel * padded];
        for ch in 0..c {
            for t in 0..kernel * kernel {
                taps[t * padded + ch] = w[ch * kernel * kernel + t];
            }
        }
        let mut dw_bias = dw_bias;
        dw_bias.resize(padded, 0.0);
        let se = &b.squeeze_excite;
        Some(Self {
            expansion: match &b.expansion {
                Some(e) => Some(pointwise(&e.expand_conv, &e.expand_bn)?),
                None => None,
            },
            depthwise: Depthwise {
                weight: taps,
                bias: dw_bias,
                channels: c,
                kernel,
                stride: dw.stride[0],
                padding: padding(dw),
            },
            squeeze_excite: SqueezeExcite {
                reduce: pointwise(&se.reduce, &None)?,
                expand: pointwise(&se.expand, &None)?,
            },
            projection: pointwise(&b.projection.project_conv, &b.projection.project_bn)?,
            residual: b.residual,
        })
    }

    fn forward(&self, net: &HostNet, x: Map) -> Map {
        let dw = &self.depthwise;
        let (ho, wo) = dw.output_size(x.height, x.width);
        let (mut h, sums, h_panels) = match &self.expansion {
            Some(e) => {
                let band = (x.height * x.width >= BAND_MIN_PIXELS)
                    .then(|| BAND_PIXELS.div_ceil(wo.max(1)).max(1));
                dw.apply_expanded(net, e, &x, band)
            }
            None => {
                let (h, sums) = dw.apply(net, &x.data, x.height, x.width);
                (h, sums, false)
            }
        };
        let scale = self.squeeze_excite.scale(&sums, (ho * wo) as f32);

        let p = &self.projection;
        let (k, n) = (p.weight.k(), p.weight.n());
        let mut out = net.take(ho * wo * n);
        let residual = self.residual.then_some(&x.data[..]);
        if ho * wo >= n {
            // Scaling the projection's rows costs C * n; the activations, H * W * C.
            let scaled = p
                .weight
                .scale_rows_into(&scale, net.take_vec(p.weight.storage_len()));
            let epilogue = Epilogue {
                bias: Some(&p.bias),
                residual,
                silu: false,
            };
            if h_panels {
                gemm_from_panels(&h, &scaled, &mut out, epilogue);
            } else {
                gemm(&h, &scaled, &mut out, epilogue);
            }
            net.give_vec(scaled.into_storage());
        } else if h_panels {
            // [C / 16, H * W, 16]: each panel's pixels by its 16 scales (the padding
            // channels are zeros and stay so)
            h.par_chunks_mut(ho * wo * PANEL)
                .zip(scale.par_chunks(PANEL))
                .for_each(|(panel, scale)| {
                    for px in panel.chunks_exact_mut(PANEL) {
                        px.iter_mut().zip(scale).for_each(|(v, s)| *v *= s);
                    }
                });
            let epilogue = Epilogue {
                bias: Some(&p.bias),
                residual,
                silu: false,
            };
            gemm_from_panels(&h, &p.weight, &mut out, epilogue);
        } else {
            h.par_chunks_mut(k)
                .for_each(|px| px.iter_mut().zip(&scale).for_each(|(v, s)| *v *= s));
            p.apply(&h, &mut out, false, residual);
        }
        net.give(h);
        net.give(x.data);
        Map {
            data: out,
            height: ho,
            width: wo,
            channels: n,
        }
    }
}

/// Expansions whose input map has at least this many pixels run band by band (see
/// [`Depthwise::apply_expanded`]): the 144x144, 72x72 and 36x36 maps of align-base (expanded:
/// 16, 6 and 2.5 MB), whose expanded maps would otherwise go to memory and back whole (the
/// 144x144 block gains most); less memory for all. On smaller maps the weights are the larger
/// part, which bands would read once each.
const BAND_MIN_PIXELS: usize = 1024;
/// Output pixels per band, in whole rows (at least one): a product of about 300 rows, and a
/// ring of `(rows - 1) * stride + kernel` expansion rows (0.5 to 2.3 MB on align-base; the
/// 2.3 MB ring of the 36x36 stride-2 block holds 33 of its 36 rows).
const BAND_PIXELS: usize = 288;

impl SqueezeExcite {
    /// `sigmoid(expand(silu(reduce(mean))))`, per channel.
    fn scale(&self, sums: &[f32], pixels: f32) -> Vec<f32> {
        let mean: Vec<f32> = sums.iter().map(|s| s / pixels).collect();
        let mut reduced = vec![0.0; self.reduce.weight.n()];
        self.reduce.apply(&mean, &mut reduced, true, None);
        let mut z = vec![0.0; self.expand.weight.n()];
        self.expand.apply(&reduced, &mut z, false, None);
        z.iter_mut().for_each(|z| *z = 1.0 / (1.0 + (-*z).exp()));
        z
    }
}

impl Pointwise {
    /// `out = input · weight + bias (+ residual)`, then SiLU if `silu`.
    fn apply(&self, input: &[f32], out: &mut [f32], silu: bool, residual: Option<&[f32]>) {
        let epilogue = Epilogue {
            bias: Some(&self.bias),
            residual,
            silu,
        };
        gemm(input, &self.weight, out, epilogue);
    }
}

/// Channels per panel of an expansion's output (see [`host_ops::gemm::gemm_panels`]).
const PANEL: usize = 16;

/// One panel's pass of a depthwise panel kernel (see [`Depthwise::panel_pass`]): padded
/// channels, kernel size and stride, top and left padding, output width, the input values
/// per panel, the panel's first channel, and the output columns `oxl..oxr` whose taps all
/// fall inside the input.
#[cfg(target_arch = "x86_64")]
struct PanelPass {
    cp: usize,
    k: usize,
    s: usize,
    pt: usize,
    pl: usize,
    wo: usize,
    plane: usize,
    cb: usize,
    oxl: usize,
    oxr: usize,
}

/// The taps `t0..t1` of a `k`-tap kernel at stride `s` with `pad` padding before the input
/// whose input positions exist for output position `o`, along an input of `extent`.
#[cfg(target_arch = "x86_64")]
fn taps_inside(o: usize, s: usize, pad: usize, k: usize, extent: usize) -> (usize, usize) {
    (
        pad.saturating_sub(o * s),
        k.min((extent + pad).saturating_sub(o * s)),
    )
}

#[cfg(target_arch = "x86_64")]
impl PanelPass {
    /// For output row `oy`: the kernel rows `ky0..ky1` whose input rows exist, and where in
    /// the ring of `held` rows the first of them is (each next one in the next row).
    fn tap_rows(&self, oy: usize, held: usize, height: usize) -> (usize, usize, usize) {
        let (ky0, ky1) = taps_inside(oy, self.s, self.pt, self.k, height);
        (ky0, ky1, (oy * self.s + ky0 - self.pt) % held)
    }

    /// For output column `ox`: the kernel columns `kx0..kx1` whose input columns exist.
    fn tap_columns(&self, ox: usize, width: usize) -> (usize, usize) {
        taps_inside(ox, self.s, self.pl, self.k, width)
    }
}

/// One output row of a channels-last depthwise kernel (see [`Depthwise::row_pass`]):
/// channels, padded channels, kernel size and stride, top and left padding, output and input
/// widths, the output row, and the kernel rows `ky0..ky1` whose input rows exist.
#[cfg(target_arch = "x86_64")]
struct RowPass {
    c: usize,
    cp: usize,
    k: usize,
    s: usize,
    pt: usize,
    pl: usize,
    wo: usize,
    width: usize,
    oy: usize,
    ky0: usize,
    ky1: usize,
}

#[cfg(target_arch = "x86_64")]
impl RowPass {
    /// For output column `ox`: the kernel columns `kx0..kx1` whose input columns exist.
    fn tap_columns(&self, ox: usize) -> (usize, usize) {
        taps_inside(ox, self.s, self.pl, self.k, self.width)
    }

    /// Where tap (`ky`, `kx`) of output column `ox` reads the input (a tap inside it).
    fn tap(&self, ox: usize, ky: usize, kx: usize) -> usize {
        ((self.oy * self.s + ky - self.pt) * self.width + ox * self.s + kx - self.pl) * self.c
    }
}

/// How a depthwise convolution's input is laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// `[height, width, channels]`
    Nhwc,
    /// `[channels / 16, rows, width, 16]` (an expansion's output, written so by
    /// [`host_ops::gemm::gemm_panels`]): a panel's rows are contiguous, which keeps a block of
    /// channels and its weights in L1 while the kernel walks a row of pixels. Input row `y`
    /// is held at row `y % rows`: all `height` rows, or a ring of the rows a band of output
    /// rows reads.
    Panels { rows: usize },
}

impl Depthwise {
    /// Channels held by the weights: `channels` rounded up to whole panels.
    fn padded(&self) -> usize {
        self.channels.div_ceil(PANEL) * PANEL
    }

    /// Output height and width on a `height` x `width` input.
    fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        let [pt, pl, pb, pr] = self.padding;
        let (k, s) = (self.kernel, self.stride);
        (
            (height + pt + pb - k) / s + 1,
            (width + pl + pr - k) / s + 1,
        )
    }

    /// The expansion `e` of `x` (bias + SiLU, as panels of 16 channels), then the depthwise
    /// convolution on it (as [`Self::apply`] on a channels-last input); the output comes as
    /// panels too where the CPU has AVX2 (the third value: true), else channels-last. With
    /// `band`, the output rows go in bands of that many rows, each convolved from a ring
    /// buffer of the expansion rows it reads: the rows not yet expanded are computed
    /// into it first (each row once, wrapping around the ring), overwriting rows that no
    /// later band reads. Every value is computed by the same kernels with the same additions
    /// in the same order as without bands: only where the expanded rows live changes (a ring
    /// that stays in cache instead of the whole map in memory).
    fn apply_expanded(
        &self,
        net: &HostNet,
        e: &Pointwise,
        x: &Map,
        band: Option<usize>,
    ) -> (Buf, Vec<f32>, bool) {
        let (height, width, cin) = (x.height, x.width, x.channels);
        let (ho, wo) = self.output_size(height, width);
        let epilogue = Epilogue {
            bias: Some(&e.bias),
            residual: None,
            silu: true,
        };
        let band = band.unwrap_or(ho).clamp(1, ho.max(1));
        // Input rows a band reads: at most (band - 1) * stride + kernel.
        let held = ((band - 1) * self.stride + self.kernel).min(height);
        let row_len = width * PANEL;
        let mut ring = net.take(e.weight.n().div_ceil(PANEL) * held * row_len);
        let c = self.channels;
        // With AVX2 the output comes as panels of 16 channels (`[C / 16, ho * wo, 16]`, see
        // `panel_rows`), else channels-last.
        let panels = cfg!(target_arch = "x86_64") && host_ops::has_avx2_fma();
        let width_out = if panels { self.padded() } else { c };
        let mut out = net.take(ho * wo * width_out);
        let mut row_sums = vec![0.0f32; ho * width_out];
        let [pt, ..] = self.padding;
        // input rows expanded so far
        let mut done = 0;
        for oy0 in (0..ho).step_by(band) {
            let oy1 = (oy0 + band).min(ho);
            // this band reads input rows below `need` and none below `need - held`
            let need = ((oy1 - 1) * self.stride + self.kernel)
                .saturating_sub(pt)
                .min(height);
            while done < need {
                let slot = done % held;
                let end = need.min(done + held - slot);
                gemm_panels(
                    &x.data[done * width * cin..end * width * cin],
                    &e.weight,
                    &mut ring[slot * row_len..],
                    held * row_len,
                    epilogue,
                );
                done = end;
            }
            #[cfg(target_arch = "x86_64")]
            if panels {
                self.panel_rows(
                    &mut out,
                    &mut row_sums,
                    oy0..oy1,
                    &ring,
                    held,
                    height,
                    width,
                );
                continue;
            }
            let layout = Layout::Panels { rows: held };
            let (rows, sums) = (
                &mut out[oy0 * wo * c..oy1 * wo * c],
                &mut row_sums[oy0 * c..oy1 * c],
            );
            self.rows(rows, sums, oy0, &ring, layout, height, width);
        }
        net.give(ring);
        let sums = if panels {
            Self::sum_panel_rows(&row_sums, c)
        } else {
            Self::sum_rows(&row_sums, c)
        };
        (out, sums, panels)
    }

    /// Depthwise convolution + bias + SiLU of `input` (`[height, width, C]`, a block without
    /// expansion); returns the output (`[ho, wo, C]`) and its per-channel sums.
    fn apply(&self, net: &HostNet, input: &[f32], height: usize, width: usize) -> (Buf, Vec<f32>) {
        let c = self.channels;
        let (ho, wo) = self.output_size(height, width);
        let mut out = net.take(ho * wo * c);
        let mut row_sums = vec![0.0f32; ho * c];
        self.rows(
            &mut out,
            &mut row_sums,
            0,
            input,
            Layout::Nhwc,
            height,
            width,
        );
        (out, Self::sum_rows(&row_sums, c))
    }

    /// Output rows `rows` on a panel-layout input with AVX2, panel by panel in parallel, each
    /// panel through all the rows, into `out` as panels too (`[C / 16, ho * wo, 16]`) and
    /// the rows' channel sums into `row_sums` (`[C / 16, ho, 16]`, see
    /// [`Self::sum_panel_rows`]). A panel's input rows, weights and output rows stay in L1
    /// from one row to the next (row by row across all panels, the late blocks' maps and
    /// weights were read from L3 once per output row), and each panel's outputs are written
    /// in one stream (into channels-last rows, 64 bytes a pixel strided by the row length,
    /// the same work took markedly longer).
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn panel_rows(
        &self,
        out: &mut [f32],
        row_sums: &mut [f32],
        rows: std::ops::Range<usize>,
        input: &[f32],
        held: usize,
        height: usize,
        width: usize,
    ) {
        assert!(
            host_ops::has_avx2_fma(),
            "the panel kernel needs AVX2 and FMA"
        );
        let (ho, wo) = self.output_size(height, width);
        let wide = host_ops::has_avx512f();
        out.par_chunks_mut(ho * wo * PANEL)
            .zip(row_sums.par_chunks_mut(ho * PANEL))
            .enumerate()
            .for_each(|(panel, (out, sums))| {
                // SAFETY: the CPU has AVX2 and FMA (asserted above), and AVX-512F if `wide`.
                unsafe {
                    if wide {
                        self.panel_rows_avx512(
                            out,
                            sums,
                            rows.clone(),
                            panel,
                            input,
                            held,
                            height,
                            width,
                        )
                    } else {
                        self.panel_rows_avx2(
                            out,
                            sums,
                            rows.clone(),
                            panel,
                            input,
                            held,
                            height,
                            width,
                        )
                    }
                }
            });
    }

    /// The per-channel sums of the rows of `row_sums` (`[C / 16, rows, 16]`), added in row
    /// order (as [`Self::sum_rows`]).
    fn sum_panel_rows(row_sums: &[f32], c: usize) -> Vec<f32> {
        let rows = row_sums.len() / c.div_ceil(PANEL) / PANEL;
        (0..c)
            .map(|ch| {
                let panel = &row_sums[ch / PANEL * rows * PANEL..][..rows * PANEL];
                panel
                    .iter()
                    .skip(ch % PANEL)
                    .step_by(PANEL)
                    .fold(0.0, |s, v| s + v)
            })
            .collect()
    }

    /// Output rows `oy0..` (as many as `out` holds, `[rows, wo, C]`) in parallel, each row's
    /// channel sums into its row of `row_sums` (added up in row order by [`Self::sum_rows`],
    /// so that the result does not depend on how rayon splits the rows). (With AVX2 a
    /// panel-layout input goes through [`Self::panel_rows`] instead.)
    #[allow(clippy::too_many_arguments)]
    fn rows(
        &self,
        out: &mut [f32],
        row_sums: &mut [f32],
        oy0: usize,
        input: &[f32],
        layout: Layout,
        height: usize,
        width: usize,
    ) {
        let c = self.channels;
        let (_, wo) = self.output_size(height, width);
        let need = match layout {
            Layout::Nhwc => height * width * c,
            Layout::Panels { rows } => {
                assert!(rows > 0 && rows <= height, "panel rows outside 1..=height");
                rows * width * self.padded()
            }
        };
        assert!(input.len() >= need, "depthwise input too short");
        assert_eq!(
            out.len() / (wo * c),
            row_sums.len() / c,
            "one sum row per output row"
        );
        out.par_chunks_mut(wo * c)
            .zip(row_sums.par_chunks_mut(c))
            .enumerate()
            .for_each(|(i, (row, sums))| {
                self.row(row, sums, oy0 + i, input, layout, height, width)
            });
    }

    /// The per-channel sums of the rows of `row_sums` (`[rows, c]`), added in row order.
    fn sum_rows(row_sums: &[f32], c: usize) -> Vec<f32> {
        let mut sums = vec![0.0f32; c];
        for row in row_sums.chunks_exact(c) {
            sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        sums
    }

    /// Output row `oy` (`[wo, C]`): bias + the taps that fall inside the input (padding reads
    /// as zero), then SiLU; adds each channel's outputs to `sums`. (With AVX2, a panel-layout
    /// input goes panel by panel instead: [`Self::panel_rows`].)
    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        row: &mut [f32],
        sums: &mut [f32],
        oy: usize,
        input: &[f32],
        layout: Layout,
        height: usize,
        width: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if layout == Layout::Nhwc
            && self.channels.is_multiple_of(16)
            && host_ops::has_avx512f()
            && host_ops::has_avx2_fma()
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { self.row_avx512(row, sums, oy, input, height, width) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if layout == Layout::Nhwc && host_ops::has_avx2_fma() {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { self.row_avx2(row, sums, oy, input, height, width) };
            return;
        }
        self.row_generic(row, oy, input, layout, height, width);
        host::silu_inplace(row);
        for px in row.chunks_exact(self.channels) {
            sums.iter_mut().zip(px).for_each(|(s, v)| *s += v);
        }
    }

    /// [`Self::row`] on an NHWC input with the accumulators in AVX2 registers: pixel by
    /// pixel, 32 channels (then 8, then a masked remainder) at a time, all taps, bias, SiLU and
    /// the channel sums before the values are stored once.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_avx2(
        &self,
        row: &mut [f32],
        sums: &mut [f32],
        oy: usize,
        input: &[f32],
        height: usize,
        width: usize,
    ) {
        use std::arch::x86_64::*;
        let g = self.row_pass(row, sums, oy, input, height, width);
        let (c, cp, k, ky0, ky1) = (g.c, g.cp, g.k, g.ky0, g.ky1);
        let (inp, wt, bias) = (input.as_ptr(), self.weight.as_ptr(), self.bias.as_ptr());
        let (out, sum) = (row.as_mut_ptr(), sums.as_mut_ptr());
        let rem = c % 8;
        let lanes: [i32; 8] = std::array::from_fn(|i| if i < rem { -1 } else { 0 });
        // SAFETY (all loads and stores below): channel offsets stay below `c` (the masked
        // remainder touches only its `rem` lanes), taps lie inside the kernel and their input
        // pixels inside `input` (ky0..ky1, kx0..kx1), output pixels inside `row`: the
        // lengths asserted above.
        unsafe {
            let mask = _mm256_loadu_si256(lanes.as_ptr().cast());
            for ox in 0..g.wo {
                let (kx0, kx1) = g.tap_columns(ox);
                let tap = |ky: usize, kx: usize| g.tap(ox, ky, kx);
                let o = out.add(ox * c);
                let mut cb = 0;
                while cb + 32 <= c {
                    let mut a = [
                        _mm256_loadu_ps(bias.add(cb)),
                        _mm256_loadu_ps(bias.add(cb + 8)),
                        _mm256_loadu_ps(bias.add(cb + 16)),
                        _mm256_loadu_ps(bias.add(cb + 24)),
                    ];
                    for ky in ky0..ky1 {
                        for kx in kx0..kx1 {
                            let x = inp.add(tap(ky, kx) + cb);
                            let w = wt.add((ky * k + kx) * cp + cb);
                            for (j, a) in a.iter_mut().enumerate() {
                                *a = _mm256_fmadd_ps(
                                    _mm256_loadu_ps(x.add(8 * j)),
                                    _mm256_loadu_ps(w.add(8 * j)),
                                    *a,
                                );
                            }
                        }
                    }
                    for (j, a) in a.into_iter().enumerate() {
                        let y = host_ops::avx2::silu(a);
                        _mm256_storeu_ps(o.add(cb + 8 * j), y);
                        let sp = sum.add(cb + 8 * j);
                        _mm256_storeu_ps(sp, _mm256_add_ps(_mm256_loadu_ps(sp), y));
                    }
                    cb += 32;
                }
                while cb + 8 <= c {
                    let mut a = _mm256_loadu_ps(bias.add(cb));
                    for ky in ky0..ky1 {
                        for kx in kx0..kx1 {
                            let x = _mm256_loadu_ps(inp.add(tap(ky, kx) + cb));
                            let w = _mm256_loadu_ps(wt.add((ky * k + kx) * cp + cb));
                            a = _mm256_fmadd_ps(x, w, a);
                        }
                    }
                    let y = host_ops::avx2::silu(a);
                    _mm256_storeu_ps(o.add(cb), y);
                    let sp = sum.add(cb);
                    _mm256_storeu_ps(sp, _mm256_add_ps(_mm256_loadu_ps(sp), y));
                    cb += 8;
                }
                if rem > 0 {
                    let mut a = _mm256_maskload_ps(bias.add(cb), mask);
                    for ky in ky0..ky1 {
                        for kx in kx0..kx1 {
                            let x = _mm256_maskload_ps(inp.add(tap(ky, kx) + cb), mask);
                            let w = _mm256_maskload_ps(wt.add((ky * k + kx) * cp + cb), mask);
                            a = _mm256_fmadd_ps(x, w, a);
                        }
                    }
                    let y = host_ops::avx2::silu(a);
                    _mm256_maskstore_ps(o.add(cb), mask, y);
                    let sp = sum.add(cb);
                    _mm256_maskstore_ps(sp, mask, _mm256_add_ps(_mm256_maskload_ps(sp, mask), y));
                }
            }
        }
    }

    /// [`Self::row_avx2`] on sixteen lanes, for whole groups of 16 channels (AVX-512F): the
    /// taps pixel by pixel, 64 channels (then 16) at a time, the row stored before the
    /// activation, then SiLU + the channel sums over it on sixteen lanes: per lane the same
    /// multiply-adds, SiLU and sums in the same order, so the same values bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn row_avx512(
        &self,
        row: &mut [f32],
        sums: &mut [f32],
        oy: usize,
        input: &[f32],
        height: usize,
        width: usize,
    ) {
        use std::arch::x86_64::*;
        let g = self.row_pass(row, sums, oy, input, height, width);
        let (c, cp, k, ky0, ky1) = (g.c, g.cp, g.k, g.ky0, g.ky1);
        assert!(c.is_multiple_of(16));
        let (inp, wt, bias) = (input.as_ptr(), self.weight.as_ptr(), self.bias.as_ptr());
        let out = row.as_mut_ptr();
        // SAFETY (all loads and stores below): channel offsets stay below `c`, taps lie inside
        // the kernel and their input pixels inside `input` (ky0..ky1, kx0..kx1), output pixels
        // inside `row`: the lengths asserted above.
        unsafe {
            for ox in 0..g.wo {
                let (kx0, kx1) = g.tap_columns(ox);
                let tap = |ky: usize, kx: usize| g.tap(ox, ky, kx);
                let o = out.add(ox * c);
                let mut cb = 0;
                while cb < c {
                    // (64 channels at a time where they remain, else 16)
                    macro_rules! group {
                        ($n:expr) => {{
                            let mut a: [__m512; $n] =
                                std::array::from_fn(|j| _mm512_loadu_ps(bias.add(cb + 16 * j)));
                            for ky in ky0..ky1 {
                                for kx in kx0..kx1 {
                                    let x = inp.add(tap(ky, kx) + cb);
                                    let w = wt.add((ky * k + kx) * cp + cb);
                                    for (j, a) in a.iter_mut().enumerate() {
                                        *a = _mm512_fmadd_ps(
                                            _mm512_loadu_ps(x.add(16 * j)),
                                            _mm512_loadu_ps(w.add(16 * j)),
                                            *a,
                                        );
                                    }
                                }
                            }
                            for (j, a) in a.into_iter().enumerate() {
                                _mm512_storeu_ps(o.add(cb + 16 * j), a);
                            }
                            cb += 16 * $n;
                        }};
                    }
                    if cb + 64 <= c { group!(4) } else { group!(1) }
                }
            }
            host_ops::avx512::silu_sum(row, sums);
        }
    }

    /// Checks the arguments of the channels-last row kernels ([`Self::row_avx2`],
    /// [`Self::row_avx512`]) and works out what they share about output row `oy`.
    #[cfg(target_arch = "x86_64")]
    fn row_pass(
        &self,
        row: &[f32],
        sums: &[f32],
        oy: usize,
        input: &[f32],
        height: usize,
        width: usize,
    ) -> RowPass {
        let (c, cp) = (self.channels, self.padded());
        let (k, s) = (self.kernel, self.stride);
        let [pt, pl, ..] = self.padding;
        let wo = row.len() / c;
        assert!(row.len() == wo * c && sums.len() == c && input.len() >= height * width * c);
        assert!(self.weight.len() == k * k * cp && self.bias.len() == cp);
        let (ky0, ky1) = taps_inside(oy, s, pt, k, height);
        RowPass {
            c,
            cp,
            k,
            s,
            pt,
            pl,
            wo,
            width,
            oy,
            ky0,
            ky1,
        }
    }

    /// Checks the arguments of the panel kernels ([`Self::panel_rows_avx2`],
    /// [`Self::panel_rows_avx512`]) and works out what they share about the pass.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn panel_pass(
        &self,
        out: &[f32],
        sums: &[f32],
        rows: &std::ops::Range<usize>,
        panel: usize,
        input: &[f32],
        held: usize,
        height: usize,
        width: usize,
    ) -> PanelPass {
        let cp = self.padded();
        let (k, s) = (self.kernel, self.stride);
        let [pt, pl, ..] = self.padding;
        let (ho, wo) = self.output_size(height, width);
        let plane = held * width * PANEL;
        let cb = panel * PANEL;
        assert!(cb < self.channels && input.len() >= plane * (cp / PANEL));
        assert!(self.weight.len() == k * k * cp && self.bias.len() == cp && held > 0);
        assert!(out.len() == ho * wo * PANEL && sums.len() == ho * PANEL && rows.end <= ho);
        // Pixels oxl..oxr have all their taps' columns inside the input.
        let oxl = pl.div_ceil(s).min(wo);
        let oxr = match (width + pl).checked_sub(k) {
            Some(last) => (last / s + 1).min(wo),
            None => 0,
        }
        .max(oxl);
        PanelPass {
            cp,
            k,
            s,
            pt,
            pl,
            wo,
            plane,
            cb,
            oxl,
            oxr,
        }
    }

    /// Output rows `rows` of one panel (16 channels) on a panel-layout input, with AVX2
    /// registers, into the panel's plane `out` (`[ho * wo, 16]`) and its row sums `sums`
    /// (`[ho, 16]`): along each row four pixels at a time where all taps fall inside the input
    /// (each weight load serves four pixels), else pixel by pixel; bias, SiLU and the row's
    /// channel sums (in registers along the row) before each value is stored once. Per value,
    /// the same additions in the same order as [`Self::row_avx2`]; padding channels (past
    /// `C`) come out zero (their weights and bias are, and so are the expansion's padding
    /// columns). `input` holds `held` rows per panel ([`Layout::Panels`]).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn panel_rows_avx2(
        &self,
        out: &mut [f32],
        sums: &mut [f32],
        rows: std::ops::Range<usize>,
        panel: usize,
        input: &[f32],
        held: usize,
        height: usize,
        width: usize,
    ) {
        use std::arch::x86_64::*;
        const TILE: usize = 4;
        let g = self.panel_pass(out, sums, &rows, panel, input, held, height, width);
        let (cp, k, s, pl, wo, cb) = (g.cp, g.k, g.s, g.pl, g.wo, g.cb);
        let src = input[panel * g.plane..].as_ptr();
        let wt = self.weight[cb..].as_ptr();
        let (plane_out, row_sums) = (out.as_mut_ptr(), sums.as_mut_ptr());
        // SAFETY (all loads and stores below): the panel's input rows lie inside `input`
        // (taps inside the kernel, pixels inside ky0..ky1 and the columns checked per pixel or
        // tile), weights and bias are padded to whole panels, and the outputs and sums of
        // rows below `ho` inside `out` and `sums` (asserted by `panel_pass`).
        unsafe {
            let b = [
                _mm256_loadu_ps(self.bias.as_ptr().add(cb)),
                _mm256_loadu_ps(self.bias.as_ptr().add(cb + 8)),
            ];
            for oy in rows {
                let (ky0, ky1, first_row) = g.tap_rows(oy, held, height);
                let next_row = |r: usize| if r + 1 == held { 0 } else { r + 1 };
                let out = plane_out.add(oy * wo * PANEL);
                let sum = row_sums.add(oy * PANEL);
                let mut total = [_mm256_loadu_ps(sum), _mm256_loadu_ps(sum.add(8))];
                let mut ox = 0;
                while ox < wo {
                    if ox >= g.oxl && ox + TILE <= g.oxr {
                        let mut acc = [b; TILE];
                        let mut iy = first_row;
                        for ky in ky0..ky1 {
                            let xrow = src.add((iy * width + ox * s - pl) * PANEL);
                            iy = next_row(iy);
                            let wrow = wt.add(ky * k * cp);
                            for kx in 0..k {
                                let w0 = _mm256_loadu_ps(wrow.add(kx * cp));
                                let w1 = _mm256_loadu_ps(wrow.add(kx * cp + 8));
                                for (p, acc) in acc.iter_mut().enumerate() {
                                    let x = xrow.add((p * s + kx) * PANEL);
                                    acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(x), w0, acc[0]);
                                    acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(8)), w1, acc[1]);
                                }
                            }
                        }
                        for (p, acc) in acc.iter().enumerate() {
                            for h in 0..2 {
                                let y = host_ops::avx2::silu(acc[h]);
                                _mm256_storeu_ps(out.add((ox + p) * PANEL + 8 * h), y);
                                total[h] = _mm256_add_ps(total[h], y);
                            }
                        }
                        ox += TILE;
                    } else {
                        let (kx0, kx1) = g.tap_columns(ox, width);
                        let mut acc = b;
                        let mut iy = first_row;
                        for ky in ky0..ky1 {
                            let at = iy * width + ox * s;
                            iy = next_row(iy);
                            for kx in kx0..kx1 {
                                let x = src.add((at + kx - pl) * PANEL);
                                let w = wt.add((ky * k + kx) * cp);
                                acc[0] =
                                    _mm256_fmadd_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(w), acc[0]);
                                acc[1] = _mm256_fmadd_ps(
                                    _mm256_loadu_ps(x.add(8)),
                                    _mm256_loadu_ps(w.add(8)),
                                    acc[1],
                                );
                            }
                        }
                        for h in 0..2 {
                            let y = host_ops::avx2::silu(acc[h]);
                            _mm256_storeu_ps(out.add(ox * PANEL + 8 * h), y);
                            total[h] = _mm256_add_ps(total[h], y);
                        }
                        ox += 1;
                    }
                }
                _mm256_storeu_ps(sum, total[0]);
                _mm256_storeu_ps(sum.add(8), total[1]);
            }
        }
    }

    /// [`Self::panel_rows_avx2`] with each pixel's 16 channels in one AVX-512 register: the
    /// same multiply-adds, SiLU and sums per lane in the same order (the same values bit for
    /// bit but for the sign of an exact zero, see below), with half the instructions. At
    /// stride 1 with 3x3 or 5x5 taps the pixels go 8 (else 4) at a time through
    /// [`Self::window`], which loads each input column once per tap row (the 32 registers
    /// hold the row's columns and the accumulators): with 3x3 taps the pixels whose taps are
    /// all inside the input, with 5x5 the whole row, the columns outside the input as zeros
    /// (their products add zero: the same values, except that an exact zero could come out
    /// with the other sign). The loads saved pay off on align-base's 5x5 maps (and whole-row
    /// windows spare the edge pixels their one-pixel path); on its 3x3 ones about even.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn panel_rows_avx512(
        &self,
        out: &mut [f32],
        sums: &mut [f32],
        rows: std::ops::Range<usize>,
        panel: usize,
        input: &[f32],
        held: usize,
        height: usize,
        width: usize,
    ) {
        use std::arch::x86_64::*;
        const TILE: usize = 4;
        const WIDE: usize = 8;
        const NINE: usize = 9;
        let g = self.panel_pass(out, sums, &rows, panel, input, held, height, width);
        let (cp, k, s, pl, wo, cb) = (g.cp, g.k, g.s, g.pl, g.wo, g.cb);
        let src = input[panel * g.plane..].as_ptr();
        let wt = self.weight[cb..].as_ptr();
        let (plane_out, row_sums) = (out.as_mut_ptr(), sums.as_mut_ptr());
        // 9 pixels at a time where 9 remain, edges included: on 5x5 rows at stride 1
        // (align-base's maps are all a multiple of 9 wide: no short window), and on 3x3 rows too
        // narrow for an 8-pixel window inside (9 wide: one window instead of a 4-pixel one and
        // five single pixels). On wider 3x3 rows 9-pixel windows were slower than 8-pixel
        // interior ones.
        let nine = s == 1 && (k == 5 || (k == 3 && wo < WIDE + 2));
        // SAFETY: as in `panel_rows_avx2`, whose loads and stores these are, 16 lanes at once.
        unsafe {
            let b = _mm512_loadu_ps(self.bias.as_ptr().add(cb));
            for oy in rows {
                let (ky0, ky1, first_row) = g.tap_rows(oy, held, height);
                let next_row = |r: usize| if r + 1 == held { 0 } else { r + 1 };
                let out = plane_out.add(oy * wo * PANEL);
                let sum = row_sums.add(oy * PANEL);
                let mut total = _mm512_loadu_ps(sum);
                let mut ox = 0;
                while ox < wo {
                    if nine && ox + NINE <= wo {
                        let at = (src, width, held, ox as isize - pl as isize);
                        let (taps, o, sums) =
                            ((ky0, ky1, first_row), out.add(ox * PANEL), &mut total);
                        let o = (o, NINE);
                        if k == 3 {
                            Self::window::<NINE, 3, { NINE + 2 }, true>(
                                b, at, taps, wt, cp, o, sums,
                            )
                        } else {
                            Self::window::<NINE, 5, { NINE + 4 }, true>(
                                b, at, taps, wt, cp, o, sums,
                            )
                        }
                        ox += NINE;
                        continue;
                    }
                    // Otherwise, 5x5: the rest of the row in windows (8 pixels where 8
                    // remain, else 4, the last one possibly short; the edge pixels' 25
                    // dependent multiply-adds one pixel at a time cost more than their taps
                    // outside the input). 3x3: the pixels whose taps are all inside, 8 where
                    // they fit, else 4.
                    let interior = ox >= g.oxl && ox + TILE <= g.oxr;
                    if s == 1 && (k == 5 || (k == 3 && interior)) {
                        let fits = if k == 5 {
                            ox + WIDE <= wo
                        } else {
                            ox + WIDE <= g.oxr
                        };
                        let t = if fits { WIDE } else { TILE };
                        let pixels = t.min(wo - ox);
                        let at = (src, width, held, ox as isize - pl as isize);
                        let (taps, o, sums) =
                            ((ky0, ky1, first_row), out.add(ox * PANEL), &mut total);
                        let o = (o, pixels);
                        match (t, k) {
                            (WIDE, 3) => Self::window::<WIDE, 3, { WIDE + 2 }, false>(
                                b, at, taps, wt, cp, o, sums,
                            ),
                            (WIDE, _) => Self::window::<WIDE, 5, { WIDE + 4 }, true>(
                                b, at, taps, wt, cp, o, sums,
                            ),
                            (_, 3) => Self::window::<TILE, 3, { TILE + 2 }, false>(
                                b, at, taps, wt, cp, o, sums,
                            ),
                            _ => Self::window::<TILE, 5, { TILE + 4 }, true>(
                                b, at, taps, wt, cp, o, sums,
                            ),
                        }
                        ox += pixels;
                    } else if interior {
                        let mut acc = [b; TILE];
                        let mut iy = first_row;
                        for ky in ky0..ky1 {
                            let xrow = src.add((iy * width + ox * s - pl) * PANEL);
                            iy = next_row(iy);
                            let wrow = wt.add(ky * k * cp);
                            for kx in 0..k {
                                let w = _mm512_loadu_ps(wrow.add(kx * cp));
                                for (p, acc) in acc.iter_mut().enumerate() {
                                    let x = _mm512_loadu_ps(xrow.add((p * s + kx) * PANEL));
                                    *acc = _mm512_fmadd_ps(x, w, *acc);
                                }
                            }
                        }
                        for (p, &acc) in acc.iter().enumerate() {
                            let y = host_ops::avx512::silu(acc);
                            _mm512_storeu_ps(out.add((ox + p) * PANEL), y);
                            total = _mm512_add_ps(total, y);
                        }
                        ox += TILE;
                    } else {
                        let (kx0, kx1) = g.tap_columns(ox, width);
                        let mut acc = b;
                        let mut iy = first_row;
                        for ky in ky0..ky1 {
                            let at = iy * width + ox * s;
                            iy = next_row(iy);
                            for kx in kx0..kx1 {
                                let x = _mm512_loadu_ps(src.add((at + kx - pl) * PANEL));
                                let w = _mm512_loadu_ps(wt.add((ky * k + kx) * cp));
                                acc = _mm512_fmadd_ps(x, w, acc);
                            }
                        }
                        let y = host_ops::avx512::silu(acc);
                        _mm512_storeu_ps(out.add(ox * PANEL), y);
                        total = _mm512_add_ps(total, y);
                        ox += 1;
                    }
                }
                _mm512_storeu_ps(sum, total);
            }
        }
    }

    /// Up to `T` neighbouring output pixels of a panel at stride 1 with `K` x `K` taps (for
    /// [`Self::panel_rows_avx512`]): in each tap row the `C` = `T + K - 1` input columns the
    /// pixels read are loaded once each and used by every pixel that reads them (a tile of 4
    /// pixels loaded each column up to `K` times); each pixel gets the bias `b`, its taps in
    /// the same order as in [`Self::panel_rows_avx2`], SiLU, is stored to `out` and added to
    /// `total`, pixel after pixel. `at` is the panel's input (`held` ring rows of `width`
    /// pixels) and the input column of the first pixel's first tap, `taps` the kernel rows
    /// `ky0..ky1` and the ring row of the first, `wt` the panel's first weight (taps `cp`
    /// apart). With `EDGES`, columns outside the input are zeros (the taps that read them add
    /// zero) and only the first `pixels` of the `T` are stored; without, all `T` are and all
    /// columns must be inside.
    ///
    /// # Safety
    /// The CPU has AVX-512F; without `EDGES`, the `C` columns from `x0` of the tap rows lie
    /// inside the input; `wt` holds `K * K` taps `cp` apart, and the pixels stored (`pixels`
    /// with `EDGES`, else `T`) of 16 values from `out` are the caller's to write.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn window<const T: usize, const K: usize, const C: usize, const EDGES: bool>(
        b: std::arch::x86_64::__m512,
        (src, width, held, x0): (*const f32, usize, usize, isize),
        (ky0, ky1, first_row): (usize, usize, usize),
        wt: *const f32,
        cp: usize,
        (out, pixels): (*mut f32, usize),
        total: &mut std::arch::x86_64::__m512,
    ) {
        use std::arch::x86_64::*;
        debug_assert_eq!(C, T + K - 1);
        debug_assert!(pixels <= T && (EDGES || pixels == T));
        // Whether all C columns are inside the row (else those outside are zeros; known
        // without EDGES).
        let all_in = x0 >= 0 && x0 + C as isize <= width as isize;
        debug_assert!(
            all_in || EDGES,
            "a window without EDGES reads outside the row"
        );
        let inside = !EDGES || all_in;
        // (a constant without EDGES)
        let pixels = if EDGES { pixels } else { T };
        let mut acc = [b; T];
        let mut iy = first_row;
        // SAFETY: the caller's contract; a column is loaded only if it is inside the row.
        unsafe {
            for ky in ky0..ky1 {
                let xrow = src.add(iy * width * PANEL);
                iy = if iy + 1 == held { 0 } else { iy + 1 };
                let wrow = wt.add(ky * K * cp);
                let cols: [__m512; C] = if inside {
                    std::array::from_fn(|j| _mm512_loadu_ps(xrow.add((x0 as usize + j) * PANEL)))
                } else {
                    std::array::from_fn(|j| {
                        let x = x0 + j as isize;
                        if (0..width as isize).contains(&x) {
                            _mm512_loadu_ps(xrow.add(x as usize * PANEL))
                        } else {
                            _mm512_setzero_ps()
                        }
                    })
                };
                for kx in 0..K {
                    let w = _mm512_loadu_ps(wrow.add(kx * cp));
                    for (p, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(cols[p + kx], w, *acc);
                    }
                }
            }
            for (p, &acc) in acc.iter().enumerate().take(pixels) {
                let y = host_ops::avx512::silu(acc);
                _mm512_storeu_ps(out.add(p * PANEL), y);
                *total = _mm512_add_ps(*total, y);
            }
        }
    }

    /// Output row `oy` before the activation, portable code.
    fn row_generic(
        &self,
        row: &mut [f32],
        oy: usize,
        input: &[f32],
        layout: Layout,
        height: usize,
        width: usize,
    ) {
        let c = self.channels;
        let cp = self.padded();
        let (k, s) = (self.kernel, self.stride);
        let [pt, pl, ..] = self.padding;
        let wo = row.len() / c;
        row.chunks_exact_mut(c)
            .for_each(|px| px.copy_from_slice(&self.bias[..c]));
        for ky in 0..k {
            let Some(iy) = (oy * s + ky).checked_sub(pt).filter(|&iy| iy < height) else {
                continue;
            };
            for kx in 0..k {
                let taps = &self.weight[(ky * k + kx) * cp..][..c];
                // the output columns whose input column ox * s + kx - pl is inside
                let first = pl.saturating_sub(kx).div_ceil(s);
                let end = (width + pl).saturating_sub(kx).div_ceil(s).min(wo);
                for ox in first..end {
                    let ix = ox * s + kx - pl;
                    let acc = &mut row[ox * c..(ox + 1) * c];
                    // 16 channels at a time: contiguous in both layouts
                    for (j, (acc, taps)) in
                        acc.chunks_mut(PANEL).zip(taps.chunks(PANEL)).enumerate()
                    {
                        let at = match layout {
                            Layout::Nhwc => (iy * width + ix) * c + j * PANEL,
                            Layout::Panels { rows } => {
                                ((j * rows + iy % rows) * width + ix) * PANEL
                            }
                        };
                        let x = &input[at..at + acc.len()];
                        for ((a, &x), &w) in acc.iter_mut().zip(x).zip(taps) {
                            *a += x * w;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::values;

    /// `[h, w, c]` as panels of 16 channels, `[ceil(c / 16), h, w, 16]` (padding lanes zero,
    /// as an expansion writes them).
    fn to_panels(x: &[f32], pixels: usize, c: usize) -> Vec<f32> {
        let mut out = vec![0.0; c.div_ceil(PANEL) * pixels * PANEL];
        for p in 0..pixels {
            for ch in 0..c {
                out[(ch / PANEL) * pixels * PANEL + p * PANEL + ch % PANEL] = x[p * c + ch];
            }
        }
        out
    }

    /// A depthwise convolution of `c` channels with random weights and bias.
    fn depthwise(c: usize, k: usize, s: usize, padding: [usize; 4]) -> Depthwise {
        let padded = c.div_ceil(PANEL) * PANEL;
        let mut weight = vec![0.0; k * k * padded];
        for (t, taps) in weight.chunks_mut(padded).enumerate() {
            taps[..c].copy_from_slice(&values(c, 10 + t as u32));
        }
        let mut bias = values(c, 3);
        bias.resize(padded, 0.0);
        Depthwise {
            weight,
            bias,
            channels: c,
            kernel: k,
            stride: s,
            padding,
        }
    }

    /// Output rows and channel sums of `dw` on an `[h, w]` input, through `row`.
    fn run(
        dw: &Depthwise,
        (h, w): (usize, usize),
        row: impl Fn(&mut [f32], &mut [f32], usize),
    ) -> (Vec<f32>, Vec<f32>) {
        let [pt, pl, pb, pr] = dw.padding;
        let ho = (h + pt + pb - dw.kernel) / dw.stride + 1;
        let wo = (w + pl + pr - dw.kernel) / dw.stride + 1;
        let c = dw.channels;
        let mut out = vec![0.0; ho * wo * c];
        let mut sums = vec![0.0; c];
        for (oy, r) in out.chunks_mut(wo * c).enumerate() {
            row(r, &mut sums, oy);
        }
        (out, sums)
    }

    /// The depthwise kernels (AVX2 on channels-last and on panels, portable on both) agree
    /// with each other on awkward shapes: channel counts around 8, 16 and 32, both kernel
    /// sizes and strides, asymmetric padding, maps narrower than a tile of pixels.
    #[test]
    fn depthwise_kernels_agree_on_both_layouts() {
        for &(c, k, s, padding, (h, w)) in &[
            (13usize, 3, 1, [1, 1, 1, 1], (7, 9)),
            (16, 5, 1, [2, 2, 2, 2], (9, 9)),
            (40, 3, 2, [0, 0, 1, 1], (10, 11)),
            (24, 5, 2, [1, 1, 2, 2], (12, 9)),
            (33, 3, 1, [1, 1, 1, 1], (3, 2)),
            (8, 5, 1, [2, 2, 2, 2], (6, 14)),
            (20, 3, 1, [1, 1, 1, 1], (5, 12)),
            (16, 5, 1, [2, 2, 2, 2], (4, 18)),
            (80, 3, 2, [0, 0, 1, 1], (7, 9)),
            (64, 3, 1, [1, 1, 1, 1], (5, 6)),
        ] {
            let dw = depthwise(c, k, s, padding);
            let x = values(h * w * c, 7);
            let panels = to_panels(&x, h * w, c);
            let portable = |input: &[f32], layout| {
                run(&dw, (h, w), |r, sums, oy| {
                    dw.row_generic(r, oy, input, layout, h, w);
                    host::silu_inplace(r);
                    for px in r.chunks_exact(c) {
                        sums.iter_mut().zip(px).for_each(|(s, v)| *s += v);
                    }
                })
            };
            let want = portable(&x, Layout::Nhwc);
            let full = Layout::Panels { rows: h };
            let mut got = vec![("portable, panels", portable(&panels, full))];
            // Each output row from a ring of k + 1 rows holding the rows it reads (row y at
            // y % (k + 1)); the other rows NaN.
            let held = (k + 1).min(h);
            let ring_for = |oy: usize| {
                let row = w * PANEL;
                let mut ring = vec![f32::NAN; c.div_ceil(PANEL) * held * row];
                for ky in 0..k {
                    let Some(y) = (oy * s + ky).checked_sub(padding[0]).filter(|&y| y < h) else {
                        continue;
                    };
                    for p in 0..c.div_ceil(PANEL) {
                        let (src, dst) = ((p * h + y) * row, (p * held + y % held) * row);
                        ring[dst..dst + row].copy_from_slice(&panels[src..src + row]);
                    }
                }
                ring
            };
            let ring = Layout::Panels { rows: held };
            got.push((
                "portable, ring",
                run(&dw, (h, w), |r, sums, oy| {
                    dw.row_generic(r, oy, &ring_for(oy), ring, h, w);
                    host::silu_inplace(r);
                    for px in r.chunks_exact(c) {
                        sums.iter_mut().zip(px).for_each(|(s, v)| *s += v);
                    }
                }),
            ));
            #[cfg(target_arch = "x86_64")]
            if host_ops::has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA.
                let nhwc = run(&dw, (h, w), |r, sums, oy| unsafe {
                    dw.row_avx2(r, sums, oy, &x, h, w)
                });
                // Whole groups of 16 channels with AVX-512F: the sixteen-lane channels-last
                // kernel, bit for bit the eight-lane one.
                if c.is_multiple_of(16) && host_ops::has_avx512f() {
                    // SAFETY: the CPU has AVX2, FMA and AVX-512F.
                    let wide = run(&dw, (h, w), |r, sums, oy| unsafe {
                        dw.row_avx512(r, sums, oy, &x, h, w)
                    });
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert!(
                        bits(&wide.0) == bits(&nhwc.0) && bits(&wide.1) == bits(&nhwc.1),
                        "c {c} k {k} s {s}: channels-last AVX-512 differs"
                    );
                }
                // Panel by panel, out as panels: all the rows in one call, and each row from
                // its ring; back to channels-last to compare.
                let (ho, wo) = dw.output_size(h, w);
                let cp = c.div_ceil(PANEL) * PANEL;
                let by_panel = |rings: &dyn Fn(usize) -> Option<Vec<f32>>| {
                    let mut planes = vec![f32::NAN; ho * wo * cp];
                    let mut row_sums = vec![0.0; ho * cp];
                    match rings(0) {
                        None => dw.panel_rows(&mut planes, &mut row_sums, 0..ho, &panels, h, h, w),
                        Some(_) => {
                            for oy in 0..ho {
                                let ring = rings(oy).expect("a ring per row");
                                let rows = oy..oy + 1;
                                dw.panel_rows(&mut planes, &mut row_sums, rows, &ring, held, h, w);
                            }
                        }
                    }
                    // (padding channels zero)
                    for px in planes.chunks_exact(PANEL).skip(c / PANEL * ho * wo) {
                        assert!(px[c % PANEL..].iter().all(|&v| v == 0.0), "padding");
                    }
                    let mut out = vec![0.0; ho * wo * c];
                    for (px, o) in out.chunks_exact_mut(c).enumerate() {
                        for (ch, v) in o.iter_mut().enumerate() {
                            *v = planes[(ch / PANEL * ho * wo + px) * PANEL + ch % PANEL];
                        }
                    }
                    (out, Depthwise::sum_panel_rows(&row_sums, c))
                };
                let on_panels = by_panel(&|_| None);
                let on_ring = by_panel(&|oy| Some(ring_for(oy)));
                // Where the CPU has AVX-512F, `panel_rows` runs the 16-lane kernel: bit for
                // bit the 8-lane one, values and row sums (its edge windows add zero
                // products, which could flip the sign of an exact zero: none here).
                if host_ops::has_avx512f() {
                    let kernel = |wide: bool| {
                        let mut planes = vec![f32::NAN; ho * wo * cp];
                        let mut row_sums = vec![0.0f32; ho * cp];
                        let per_panel = planes
                            .chunks_exact_mut(ho * wo * PANEL)
                            .zip(row_sums.chunks_exact_mut(ho * PANEL));
                        for (panel, (o, sums)) in per_panel.enumerate() {
                            let (input, rows) = (&panels, 0..ho);
                            // SAFETY: the CPU has AVX2, FMA and AVX-512F.
                            unsafe {
                                if wide {
                                    dw.panel_rows_avx512(o, sums, rows, panel, input, h, h, w)
                                } else {
                                    dw.panel_rows_avx2(o, sums, rows, panel, input, h, h, w)
                                }
                            }
                        }
                        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect();
                        (bits(planes), bits(row_sums)) as (Vec<u32>, Vec<u32>)
                    };
                    assert!(
                        kernel(true) == kernel(false),
                        "c {c} k {k} s {s}: AVX-512 differs"
                    );
                }
                // The AVX2 kernels add the same values in the same order.
                assert_eq!(
                    nhwc.0, on_panels.0,
                    "c {c} k {k} s {s}: AVX2 layouts differ"
                );
                assert_eq!(
                    nhwc.0, on_ring.0,
                    "c {c} k {k} s {s}: AVX2 on a ring differs"
                );
                got.push(("AVX2, panels", on_panels));
                got.push(("AVX2, panels from a ring", on_ring));
                got.push(("AVX2", nhwc));
            }
            for (what, (out, sums)) in got {
                for (a, b) in out.iter().zip(&want.0).chain(sums.iter().zip(&want.1)) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "c {c} k {k} s {s} {what}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// Expansion + depthwise in bands of output rows (a ring of expansion rows, wrapping
    /// around) gives, bit for bit, what one pass over the whole map gives: both strides and
    /// kernel sizes, asymmetric padding, bands of one row up to more than the map.
    #[test]
    fn expansion_in_bands_equals_one_pass_over_the_map() {
        // a network without layers: its buffer pool only
        let net = HostNet {
            stem: Stem {
                conv: Pointwise {
                    weight: Packed::from_out_in(&[], 0, 0),
                    bias: Vec::new(),
                },
                in_channels: 0,
                kernel: 1,
                stride: 1,
                padding: [0; 4],
            },
            blocks: Vec::new(),
            top: None,
            pooling: PoolingType::Mean,
            pool: Mutex::new(Vec::new()),
        };
        for &(cin, cexp, k, s, padding, (h, w)) in &[
            (
                8usize,
                40usize,
                3usize,
                1usize,
                [1, 1, 1, 1],
                (23usize, 19usize),
            ),
            (6, 24, 5, 1, [2, 2, 2, 2], (17, 11)),
            (5, 33, 3, 2, [0, 0, 1, 1], (21, 13)),
            (7, 16, 5, 2, [1, 1, 2, 2], (18, 9)),
        ] {
            let e = Pointwise {
                weight: Packed::from_out_in(&values(cexp * cin, 1), cexp, cin),
                bias: values(cexp, 2),
            };
            let dw = depthwise(cexp, k, s, padding);
            let x = Map {
                data: Buf {
                    vec: values(h * w * cin, 4),
                    len: h * w * cin,
                },
                height: h,
                width: w,
                channels: cin,
            };
            let (whole, whole_sums, _) = dw.apply_expanded(&net, &e, &x, None);
            for band in [1, 2, 3, 7, 40] {
                let (out, sums, _) = dw.apply_expanded(&net, &e, &x, Some(band));
                let same = |a: &[f32], b: &[f32]| {
                    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
                };
                assert!(
                    same(&out, &whole),
                    "k {k} s {s} band {band}: outputs differ"
                );
                assert!(
                    same(&sums, &whole_sums),
                    "k {k} s {s} band {band}: sums differ"
                );
                net.give(out);
            }
        }
    }
}
