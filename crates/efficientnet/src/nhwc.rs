//! The forward pass in host memory, channels-last, for the flex backend.
//!
//! On flex, burn runs the network op by op on NCHW tensors: each 1x1 convolution is a `gemm`
//! call, then bias, SiLU, the squeeze-excite scaling and the residual add are separate passes
//! over memory, and the depthwise convolutions walk NCHW planes with a padded copy of their
//! input. [`HostNet`] holds the weights, BatchNorms folded in, as plain `f32` arrays (made
//! once, by [`EfficientNet::prepare`](crate::EfficientNet::prepare) or the first forward
//! pass) and runs an image as a sequence of fused steps on NHWC buffers that are reused from
//! one call to the next:
//!
//! * stem: im2col (the fixed `(0, 1, 0, 1)` padding read as zeros) + `gemm` + bias + SiLU;
//! * expansion: `gemm` on `[H*W, C]` rows + bias + SiLU, tile by tile while the tile is in cache;
//! * depthwise: direct NHWC convolution, vectorised over channels, padding read as zeros,
//!   + bias + SiLU, summing each channel for squeeze-excite on the way;
//! * squeeze-excite: the two small matrix-vector products; its per-channel scale is folded
//!   into the projection weights (or applied to the activations, whichever is less work);
//! * projection: `gemm` + bias + residual add, tile by tile.
//!
//! The arithmetic is the reference's up to the order of float additions: the parity tests run
//! this path on flex (`parity_tiny`, `align_base_random`).

use std::sync::Mutex;

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::config::PoolingType;
use crate::host;
use crate::model::{Block, EfficientNet};

/// A 1x1 convolution (or an im2col'd one): `out[M, n] = in[M, k] · weight + bias`.
#[derive(Debug)]
struct Pointwise {
    /// `[k, n]`: the transpose of burn's `[out, in, 1, 1]` (with burn's layout, `gemm` spent
    /// 40 % longer packing: measured).
    weight: Vec<f32>,
    bias: Vec<f32>,
    k: usize,
    n: usize,
}

#[derive(Debug)]
struct Depthwise {
    /// `[kernel * kernel, channels]`: tap-major, channels contiguous.
    weight: Vec<f32>,
    bias: Vec<f32>,
    channels: usize,
    kernel: usize,
    stride: usize,
    /// top, left, bottom, right
    padding: [usize; 4],
}

#[derive(Debug)]
struct SqueezeExcite {
    /// `[se, channels]`
    reduce: Vec<f32>,
    reduce_bias: Vec<f32>,
    /// `[channels, se]`
    expand: Vec<f32>,
    expand_bias: Vec<f32>,
    se: usize,
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

/// An activation in host memory: `[height, width, channels]`.
struct Map {
    data: Vec<f32>,
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
    /// Scratch buffers, kept between calls so that their pages stay mapped.
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

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` matrix, in cache-sized tiles,
/// tiles of output rows in parallel.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut t = vec![0.0; w.len()];
    if rows == 0 {
        return t;
    }
    t.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(tile, out)| {
            let c0 = tile * TILE;
            for r0 in (0..rows).step_by(TILE) {
                let r1 = (r0 + TILE).min(rows);
                for (dc, dst) in out.chunks_exact_mut(rows).enumerate() {
                    let c = c0 + dc;
                    let src = w[r0 * cols + c..].iter().step_by(cols);
                    for (d, s) in dst[r0..r1].iter_mut().zip(src) {
                        *d = *s;
                    }
                }
            }
        });
    t
}

fn pointwise(conv: &Conv2d, bn: &Option<BatchNorm>) -> Option<Pointwise> {
    if conv.groups != 1 || conv.stride != [1, 1] || padding(conv) != [0; 4] {
        return None;
    }
    let (w, [n, k, kh, kw], bias) = folded(conv, bn)?;
    Some(Pointwise {
        weight: transpose(&w, n, k * kh * kw),
        bias,
        k: k * kh * kw,
        n,
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
                weight: transpose(&w, n, in_channels * kernel * kernel),
                bias,
                k: in_channels * kernel * kernel,
                n,
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

    /// A buffer of `len` values from the pool: the smallest one that holds `len` without
    /// growing, else the largest (grown).
    fn take(&self, len: usize) -> Vec<f32> {
        let mut buf = match self.pool.lock() {
            Ok(mut pool) => {
                let fits = (0..pool.len())
                    .filter(|&i| pool[i].capacity() >= len)
                    .min_by_key(|&i| pool[i].capacity());
                let pick = fits.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
                pick.map(|i| pool.swap_remove(i)).unwrap_or_default()
            }
            Err(_) => Vec::new(),
        };
        buf.resize(len, 0.0);
        buf
    }

    fn give(&self, buf: Vec<f32>) {
        if let Ok(mut p) = self.pool.lock() {
            p.push(buf);
        }
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
            let mut out = self.take(x.height * x.width * top.n);
            top.apply(&x.data, &mut out, Epilogue::Silu);
            self.give(std::mem::replace(&mut x.data, out));
            x.channels = top.n;
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
        let cols = s.conv.k;
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
        let mut out = self.take(ho * wo * s.conv.n);
        s.conv.apply(&patches, &mut out, Epilogue::Silu);
        self.give(patches);
        Map {
            data: out,
            height: ho,
            width: wo,
            channels: s.conv.n,
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
        let mut taps = vec![0.0; w.len()];
        for ch in 0..c {
            for t in 0..kernel * kernel {
                taps[t * c + ch] = w[ch * kernel * kernel + t];
            }
        }
        let se = &b.squeeze_excite;
        let (reduce, [se_dim, ..]) = weights(&se.reduce.weight)?;
        let (expand, _) = weights(&se.expand.weight)?;
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
                reduce,
                reduce_bias: values(se.reduce.bias.as_ref()?)?,
                expand,
                expand_bias: values(se.expand.bias.as_ref()?)?,
                se: se_dim,
            },
            projection: pointwise(&b.projection.project_conv, &b.projection.project_bn)?,
            residual: b.residual,
        })
    }

    fn forward(&self, net: &HostNet, x: Map) -> Map {
        let pixels = x.height * x.width;
        let expanded = self.expansion.as_ref().map(|e| {
            let mut out = net.take(pixels * e.n);
            e.apply(&x.data, &mut out, Epilogue::Silu);
            out
        });
        let input = expanded.as_deref().unwrap_or(&x.data);
        let (mut h, sums) = self.depthwise.apply(net, input, x.height, x.width);
        let dw = &self.depthwise;
        let [pt, pl, pb, pr] = dw.padding;
        let ho = (x.height + pt + pb - dw.kernel) / dw.stride + 1;
        let wo = (x.width + pl + pr - dw.kernel) / dw.stride + 1;
        if let Some(buf) = expanded {
            net.give(buf);
        }
        let scale = self.squeeze_excite.scale(&sums, (ho * wo) as f32);

        let p = &self.projection;
        let mut out = net.take(ho * wo * p.n);
        let residual = self.residual.then_some(&x.data[..]);
        if ho * wo >= p.n {
            // Scaling the projection's rows costs C * n; the activations, H * W * C.
            let mut weight = net.take(p.k * p.n);
            weight
                .par_chunks_mut(p.n)
                .zip(p.weight.par_chunks(p.n))
                .zip(scale.par_iter())
                .for_each(|((dst, src), &s)| {
                    dst.iter_mut().zip(src).for_each(|(d, &w)| *d = w * s)
                });
            let scaled = Pointwise {
                weight,
                bias: Vec::new(),
                k: p.k,
                n: p.n,
            };
            scaled.gemm_with(&h, &mut out, &p.bias, Epilogue::Add(residual));
            net.give(scaled.weight);
        } else {
            h.par_chunks_mut(p.k)
                .for_each(|px| px.iter_mut().zip(&scale).for_each(|(v, s)| *v *= s));
            p.apply(&h, &mut out, Epilogue::Add(residual));
        }
        net.give(h);
        net.give(x.data);
        Map {
            data: out,
            height: ho,
            width: wo,
            channels: p.n,
        }
    }
}

impl SqueezeExcite {
    /// `sigmoid(expand(silu(reduce(mean))))`, per channel.
    fn scale(&self, sums: &[f32], pixels: f32) -> Vec<f32> {
        let c = sums.len();
        let mean: Vec<f32> = sums.iter().map(|s| s / pixels).collect();
        let mut reduced: Vec<f32> = (0..self.se)
            .map(|s| {
                let row = &self.reduce[s * c..(s + 1) * c];
                self.reduce_bias[s] + row.iter().zip(&mean).map(|(w, m)| w * m).sum::<f32>()
            })
            .collect();
        host::silu_inplace(&mut reduced);
        (0..c)
            .map(|ch| {
                let row = &self.expand[ch * self.se..(ch + 1) * self.se];
                let z = self.expand_bias[ch]
                    + row.iter().zip(&reduced).map(|(w, r)| w * r).sum::<f32>();
                1.0 / (1.0 + (-z).exp())
            })
            .collect()
    }
}

/// What follows a `gemm` tile.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    /// `silu(x + bias)`
    Silu,
    /// `x + bias (+ residual)`
    Add(Option<&'a [f32]>),
}

impl Pointwise {
    fn apply(&self, input: &[f32], out: &mut [f32], epilogue: Epilogue) {
        self.gemm_with(input, out, &self.bias, epilogue);
    }

    /// `out = input · weight`, then `epilogue` with `bias`, in tiles of rows (or of columns
    /// when there are few rows) processed in parallel, each tile finished while in cache.
    fn gemm_with(&self, input: &[f32], out: &mut [f32], bias: &[f32], epilogue: Epilogue) {
        let (k, n) = (self.k, self.n);
        let m = input.len() / k;
        let threads = rayon::current_num_threads().max(1);
        let tiles = 4 * threads;
        if m >= n {
            let rows = m.div_ceil(tiles).max(16);
            out.par_chunks_mut(rows * n)
                .enumerate()
                .for_each(|(t, dst)| {
                    let r0 = t * rows;
                    let mr = dst.len() / n;
                    // SAFETY: dst is mr x n row-major, input rows r0..r0 + mr are mr x k, the
                    // weight is k x n; all in bounds.
                    unsafe {
                        gemm(
                            mr,
                            n,
                            k,
                            dst.as_mut_ptr(),
                            n,
                            input[r0 * k..].as_ptr(),
                            self.weight.as_ptr(),
                            n,
                        )
                    };
                    finish(dst, n, 0, bias, epilogue, r0 * n);
                });
        } else {
            let cols = n.div_ceil(tiles).next_multiple_of(16).min(n);
            let out_ptr = SendPtr(out.as_mut_ptr());
            (0..n.div_ceil(cols)).into_par_iter().for_each(|t| {
                let c0 = t * cols;
                let nc = cols.min(n - c0);
                let out_ptr = &out_ptr;
                // SAFETY: each task writes only columns c0..c0 + nc of the m x n output.
                unsafe {
                    let dst = out_ptr.0.add(c0);
                    gemm(
                        m,
                        nc,
                        k,
                        dst,
                        n,
                        input.as_ptr(),
                        self.weight.as_ptr().add(c0),
                        n,
                    );
                    for r in 0..m {
                        let row = std::slice::from_raw_parts_mut(dst.add(r * n), nc);
                        finish(row, nc, c0, bias, epilogue, r * n + c0);
                    }
                }
            });
        }
    }
}

struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint column ranges of one buffer to rayon tasks.
unsafe impl Sync for SendPtr {}

/// `dst` (rows of `width` values, columns `c0..` of the full output) += bias, then the
/// epilogue; `at`: offset of `dst[0]` in the full output (for the residual).
fn finish(dst: &mut [f32], width: usize, c0: usize, bias: &[f32], epilogue: Epilogue, at: usize) {
    let bias = &bias[c0..c0 + width];
    let full = match epilogue {
        Epilogue::Add(Some(res)) => Some(res),
        _ => None,
    };
    for (r, row) in dst.chunks_exact_mut(width).enumerate() {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        if let Some(res) = full {
            let start = at + r * width;
            row.iter_mut()
                .zip(&res[start..start + width])
                .for_each(|(v, x)| *v += x);
        }
    }
    if let Epilogue::Silu = epilogue {
        host::silu_inplace(dst);
    }
}

/// `dst[m, n] (row stride dst_rs) = lhs[m, k] (row-major) · rhs[k, n] (row stride rhs_rs)`.
///
/// # Safety
/// The pointers must cover those extents.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    rhs: *const f32,
    rhs_rs: usize,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs,
            1,
            k as isize,
            rhs,
            1,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

impl Depthwise {
    /// Depthwise convolution + bias + SiLU of `input` `[height, width, C]`; returns the output
    /// and its per-channel sums.
    fn apply(
        &self,
        net: &HostNet,
        input: &[f32],
        height: usize,
        width: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let c = self.channels;
        let [pt, pl, pb, pr] = self.padding;
        let (k, s) = (self.kernel, self.stride);
        let ho = (height + pt + pb - k) / s + 1;
        let wo = (width + pl + pr - k) / s + 1;
        let mut out = net.take(ho * wo * c);
        // Per-row channel sums, added up in row order afterwards so that the result does not
        // depend on how rayon splits the rows.
        let mut row_sums = vec![0.0f32; ho * c];
        out.par_chunks_mut(wo * c)
            .zip(row_sums.par_chunks_mut(c))
            .enumerate()
            .for_each(|(oy, (row, sums))| {
                self.row(row, oy, input, height, width);
                host::silu_inplace(row);
                for px in row.chunks_exact(c) {
                    sums.iter_mut().zip(px).for_each(|(s, v)| *s += v);
                }
            });
        let mut sums = vec![0.0f32; c];
        for row in row_sums.chunks_exact(c) {
            sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        (out, sums)
    }

    /// Output row `oy` (`[wo, C]`) before the activation: bias + the taps that fall inside
    /// the input (padding reads as zero), with FMA where the CPU has it.
    fn row(&self, row: &mut [f32], oy: usize, input: &[f32], height: usize, width: usize) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { self.row_fma(row, oy, input, height, width) };
            return;
        }
        self.row_generic::<false>(row, oy, input, height, width);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_fma(
        &self,
        row: &mut [f32],
        oy: usize,
        input: &[f32],
        height: usize,
        width: usize,
    ) {
        self.row_generic::<true>(row, oy, input, height, width);
    }

    #[inline(always)]
    fn row_generic<const FMA: bool>(
        &self,
        row: &mut [f32],
        oy: usize,
        input: &[f32],
        height: usize,
        width: usize,
    ) {
        let c = self.channels;
        let (k, s) = (self.kernel, self.stride);
        let [pt, pl, ..] = self.padding;
        let wo = row.len() / c;
        row.chunks_exact_mut(c)
            .for_each(|px| px.copy_from_slice(&self.bias));
        for ky in 0..k {
            let Some(iy) = (oy * s + ky).checked_sub(pt).filter(|&iy| iy < height) else {
                continue;
            };
            let in_row = &input[iy * width * c..(iy + 1) * width * c];
            for kx in 0..k {
                let taps = &self.weight[(ky * k + kx) * c..][..c];
                // the output columns whose input column ox * s + kx - pl is inside
                let first = pl.saturating_sub(kx).div_ceil(s);
                let end = (width + pl).saturating_sub(kx).div_ceil(s).min(wo);
                for ox in first..end {
                    let ix = ox * s + kx - pl;
                    let acc = &mut row[ox * c..(ox + 1) * c];
                    let x = &in_row[ix * c..(ix + 1) * c];
                    for ((a, &x), &w) in acc.iter_mut().zip(x).zip(taps) {
                        *a = if FMA { x.mul_add(w, *a) } else { *a + x * w };
                    }
                }
            }
        }
    }
}
