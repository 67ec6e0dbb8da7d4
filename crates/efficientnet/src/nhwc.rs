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
//!   channels (`[C / 16, H, W, 16]`, [`host_ops::gemm::gemm_panels`]);
//! * depthwise: direct convolution, padding read as zeros, + bias + SiLU, summing each
//!   channel for squeeze-excite on the way, with the accumulators in registers (AVX2 where the
//!   CPU has it): on an expansion's panels, panel by panel along each row, four pixels at a
//!   time (a panel's rows and weights stay in L1: on channels-last input, a pixel's 25 taps
//!   of 1344 channels did not); on a channels-last input (blocks without expansion), pixel
//!   by pixel;
//! * squeeze-excite: the two small products (packed too); its per-channel scale is folded
//!   into the projection weights (or applied to the activations, whichever is less work);
//! * projection: product + bias + residual add in registers.
//!
//! The arithmetic is the reference's up to the order of float additions: the parity tests run
//! this path on flex (`parity_tiny`, `align_base_random`).

use std::sync::Mutex;

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::Tensor;
use host_ops::gemm::{Epilogue, Packed, gemm, gemm_panels};
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
                for (ox, patch) in row.chunks_exact_mut(cols).enumerate() {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * s.stride + ky).checked_sub(pt);
                            let ix = (ox * s.stride + kx).checked_sub(pl);
                            for ic in 0..s.in_channels {
                                patch[(ic * k + ky) * k + kx] = match (iy, ix) {
                                    (Some(iy), Some(ix)) if iy < height && ix < width => {
                                        pixels[(ic * height + iy) * width + ix]
                                    }
                                    _ => 0.0,
                                };
                            }
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
        let pixels = x.height * x.width;
        // The expansion's output in panels of 16 channels (the layout the depthwise kernel
        // reads best), SiLU applied.
        let expanded = self.expansion.as_ref().map(|e| {
            let mut out = net.take(pixels * e.weight.n().div_ceil(PANEL) * PANEL);
            let epilogue = Epilogue {
                bias: Some(&e.bias),
                residual: None,
                silu: true,
            };
            gemm_panels(&x.data, &e.weight, &mut out, epilogue);
            out
        });
        let (input, layout) = match &expanded {
            Some(buf) => (&buf[..], Layout::Panels),
            None => (&x.data[..], Layout::Nhwc),
        };
        let (mut h, sums) = self.depthwise.apply(net, input, layout, x.height, x.width);
        let dw = &self.depthwise;
        let [pt, pl, pb, pr] = dw.padding;
        let ho = (x.height + pt + pb - dw.kernel) / dw.stride + 1;
        let wo = (x.width + pl + pr - dw.kernel) / dw.stride + 1;
        if let Some(buf) = expanded {
            net.give(buf);
        }
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
            gemm(&h, &scaled, &mut out, epilogue);
            net.give_vec(scaled.into_storage());
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

/// How a depthwise convolution's input is laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// `[height, width, channels]`
    Nhwc,
    /// `[channels / 16, height, width, 16]` (an expansion's output, written so by
    /// [`host_ops::gemm::gemm_panels`]): a panel's rows are contiguous, which keeps a block of
    /// channels and its weights in L1 while the kernel walks a row of pixels.
    Panels,
}

impl Depthwise {
    /// Channels held by the weights: `channels` rounded up to whole panels.
    fn padded(&self) -> usize {
        self.channels.div_ceil(PANEL) * PANEL
    }

    /// Depthwise convolution + bias + SiLU of `input` (`[height, width, C]` or panels, see
    /// [`Layout`]); returns the output (`[ho, wo, C]`) and its per-channel sums.
    fn apply(
        &self,
        net: &HostNet,
        input: &[f32],
        layout: Layout,
        height: usize,
        width: usize,
    ) -> (Buf, Vec<f32>) {
        let c = self.channels;
        let [pt, pl, pb, pr] = self.padding;
        let (k, s) = (self.kernel, self.stride);
        let ho = (height + pt + pb - k) / s + 1;
        let wo = (width + pl + pr - k) / s + 1;
        let need = match layout {
            Layout::Nhwc => height * width * c,
            Layout::Panels => height * width * self.padded(),
        };
        assert!(input.len() >= need, "depthwise input too short");
        let mut out = net.take(ho * wo * c);
        // Per-row channel sums, added up in row order afterwards so that the result does not
        // depend on how rayon splits the rows.
        let mut row_sums = vec![0.0f32; ho * c];
        out.par_chunks_mut(wo * c)
            .zip(row_sums.par_chunks_mut(c))
            .enumerate()
            .for_each(|(oy, (row, sums))| self.row(row, sums, oy, input, layout, height, width));
        let mut sums = vec![0.0f32; c];
        for row in row_sums.chunks_exact(c) {
            sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        (out, sums)
    }

    /// Output row `oy` (`[wo, C]`): bias + the taps that fall inside the input (padding reads
    /// as zero), then SiLU; adds each channel's outputs to `sums`.
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
        if host_ops::has_avx2_fma() {
            // SAFETY: the CPU supports the features the functions are compiled for.
            unsafe {
                match layout {
                    Layout::Nhwc => self.row_avx2(row, sums, oy, input, height, width),
                    Layout::Panels => self.row_panels_avx2(row, sums, oy, input, height, width),
                }
            }
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
        let c = self.channels;
        let cp = self.padded();
        let (k, s) = (self.kernel, self.stride);
        let [pt, pl, ..] = self.padding;
        let wo = row.len() / c;
        assert!(row.len() == wo * c && sums.len() == c && input.len() >= height * width * c);
        assert!(self.weight.len() == k * k * cp && self.bias.len() == cp);
        // The taps inside the input: rows ky0..ky1 of the kernel, and per pixel kx0..kx1.
        let ky0 = pt.saturating_sub(oy * s);
        let ky1 = k.min((height + pt).saturating_sub(oy * s));
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
            for ox in 0..wo {
                let kx0 = pl.saturating_sub(ox * s);
                let kx1 = k.min((width + pl).saturating_sub(ox * s));
                // input offset of tap (ky, kx): (oy*s + ky - pt) * width * c + (ox*s + kx - pl) * c
                let tap =
                    |ky: usize, kx: usize| ((oy * s + ky - pt) * width + ox * s + kx - pl) * c;
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

    /// [`Self::row`] on a panel-layout input, with AVX2 registers: panel by panel (16
    /// channels, whose weights stay in L1), along the row four pixels at a time where all
    /// taps fall inside the input (each weight load serves four pixels), else pixel by pixel;
    /// bias, SiLU and the channel sums (in registers for the whole row) before each value is
    /// stored once. Per value, the same additions in the same order as [`Self::row_avx2`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_panels_avx2(
        &self,
        row: &mut [f32],
        sums: &mut [f32],
        oy: usize,
        input: &[f32],
        height: usize,
        width: usize,
    ) {
        use std::arch::x86_64::*;
        const TILE: usize = 4;
        let c = self.channels;
        let cp = self.padded();
        let (k, s) = (self.kernel, self.stride);
        let [pt, pl, ..] = self.padding;
        let wo = row.len() / c;
        let plane = height * width * PANEL;
        assert!(row.len() == wo * c && sums.len() == c && input.len() >= plane * (cp / PANEL));
        assert!(self.weight.len() == k * k * cp && self.bias.len() == cp);
        let ky0 = pt.saturating_sub(oy * s);
        let ky1 = k.min((height + pt).saturating_sub(oy * s));
        // Pixels oxl..oxr have all their taps' columns inside the input.
        let oxl = pl.div_ceil(s).min(wo);
        let oxr = match (width + pl).checked_sub(k) {
            Some(last) => (last / s + 1).min(wo),
            None => 0,
        }
        .max(oxl);
        let (inp, wt, bias) = (input.as_ptr(), self.weight.as_ptr(), self.bias.as_ptr());
        let (out, sum) = (row.as_mut_ptr(), sums.as_mut_ptr());
        // SAFETY (all loads and stores below): a panel's input rows lie inside `input` (taps
        // inside the kernel, pixels inside ky0..ky1 and the columns checked per pixel or
        // tile), weights and bias are padded to whole panels, and outputs and sums are stored
        // with the panel's real channels only (`mask`): the lengths asserted above.
        unsafe {
            for cb in (0..c).step_by(PANEL) {
                let real = (c - cb).min(PANEL) as i32;
                let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let mask = [
                    _mm256_cmpgt_epi32(_mm256_set1_epi32(real), lanes),
                    _mm256_cmpgt_epi32(_mm256_set1_epi32(real - 8), lanes),
                ];
                let full = real == PANEL as i32;
                let store = |p: *mut f32, h: usize, v: __m256| {
                    if full {
                        _mm256_storeu_ps(p, v)
                    } else {
                        _mm256_maskstore_ps(p, mask[h], v)
                    }
                };
                let src = inp.add((cb / PANEL) * plane);
                let b = [
                    _mm256_loadu_ps(bias.add(cb)),
                    _mm256_loadu_ps(bias.add(cb + 8)),
                ];
                let mut total = [
                    _mm256_maskload_ps(sum.add(cb), mask[0]),
                    _mm256_maskload_ps(sum.add(cb + 8), mask[1]),
                ];
                let mut ox = 0;
                while ox < wo {
                    if ox >= oxl && ox + TILE <= oxr {
                        let mut acc = [b; TILE];
                        for ky in ky0..ky1 {
                            let xrow = src.add(((oy * s + ky - pt) * width + ox * s - pl) * PANEL);
                            let wrow = wt.add(ky * k * cp + cb);
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
                                store(out.add((ox + p) * c + cb + 8 * h), h, y);
                                total[h] = _mm256_add_ps(total[h], y);
                            }
                        }
                        ox += TILE;
                    } else {
                        let kx0 = pl.saturating_sub(ox * s);
                        let kx1 = k.min((width + pl).saturating_sub(ox * s));
                        let mut acc = b;
                        for ky in ky0..ky1 {
                            for kx in kx0..kx1 {
                                let x = src
                                    .add(((oy * s + ky - pt) * width + ox * s + kx - pl) * PANEL);
                                let w = wt.add((ky * k + kx) * cp + cb);
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
                            store(out.add(ox * c + cb + 8 * h), h, y);
                            total[h] = _mm256_add_ps(total[h], y);
                        }
                        ox += 1;
                    }
                }
                _mm256_maskstore_ps(sum.add(cb), mask[0], total[0]);
                _mm256_maskstore_ps(sum.add(cb + 8), mask[1], total[1]);
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
                            Layout::Panels => ((j * height + iy) * width + ix) * PANEL,
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

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// `[h, w, c]` as panels of 16 channels, `[ceil(c / 16), h, w, 16]` (padding lanes NaN:
    /// they must not reach the output).
    fn to_panels(x: &[f32], pixels: usize, c: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; c.div_ceil(PANEL) * pixels * PANEL];
        for p in 0..pixels {
            for ch in 0..c {
                out[(ch / PANEL) * pixels * PANEL + p * PANEL + ch % PANEL] = x[p * c + ch];
            }
        }
        out
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
        ] {
            let padded = c.div_ceil(PANEL) * PANEL;
            let mut weight = vec![0.0; k * k * padded];
            for (t, taps) in weight.chunks_mut(padded).enumerate() {
                taps[..c].copy_from_slice(&values(c, 10 + t as u32));
            }
            let mut bias = values(c, 3);
            bias.resize(padded, 0.0);
            let dw = Depthwise {
                weight,
                bias,
                channels: c,
                kernel: k,
                stride: s,
                padding,
            };
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
            let mut got = vec![("portable, panels", portable(&panels, Layout::Panels))];
            #[cfg(target_arch = "x86_64")]
            if host_ops::has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA.
                let nhwc = run(&dw, (h, w), |r, sums, oy| unsafe {
                    dw.row_avx2(r, sums, oy, &x, h, w)
                });
                // SAFETY: as above.
                let on_panels = run(&dw, (h, w), |r, sums, oy| unsafe {
                    dw.row_panels_avx2(r, sums, oy, &panels, h, w)
                });
                // The two AVX2 kernels add the same values in the same order.
                assert_eq!(nhwc, on_panels, "c {c} k {k} s {s}: AVX2 layouts differ");
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
}
