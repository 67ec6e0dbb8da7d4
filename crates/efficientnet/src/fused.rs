//! The fused path: the forward pass in host memory, channels-last, on the flex backend.
//!
//! On flex, burn runs the network op by op on NCHW tensors: each 1x1 convolution is a `gemm`
//! call, then bias, SiLU, the squeeze-excite scaling and the residual add are separate passes
//! over memory, and the depthwise convolutions walk NCHW planes with a padded copy of their
//! input. [`FusedNet`] holds the folded network ([`FoldedNet`]) laid out for the kernels (made
//! once, by [`crate::EfficientNet::prepare`] or the first forward pass; 1x1 weights packed for
//! [`kernels::gemm`]) and runs an image as a sequence of fused steps on NHWC buffers that are
//! reused from one call to the next:
//!
//! * stem: im2col (the fixed `(0, 1, 0, 1)` padding read as zeros) + product with bias and
//!   SiLU applied in registers;
//! * expansion: product on `[H*W, C]` rows, bias + SiLU in registers, written as panels of 16
//!   channels (`[C / 16, H, W, 16]`, [`kernels::gemm::gemm_panels`]); on the large early
//!   maps, band by band into a ring of the rows the depthwise convolution needs next (see
//!   [`expand_depthwise`]), so that the expanded map (up to 16 MB) never goes to
//!   memory whole;
//! * depthwise: direct convolution, padding read as zeros, + bias + SiLU, summing each
//!   channel for squeeze-excite on the way ([`kernels::depthwise`]): on an expansion's panels,
//!   panel by panel, written as panels too; on a channels-last input (blocks without
//!   expansion), pixel by pixel, written channels-last;
//! * squeeze-excite: the two small products (packed too); its per-channel scale is folded
//!   into the projection weights (or applied to the activations, whichever is less work);
//! * projection: product + bias + residual add in registers, reading the depthwise output as
//!   it comes ([`kernels::gemm::gemm_from_panels`] for panels).
//!
//! The arithmetic is the reference's up to the order of float additions: the parity tests run
//! this path on flex (`parity_tiny`, `align_base_random`).

use std::sync::Mutex;

use burn::tensor::Tensor;
use kernels::depthwise::{Depthwise, Layout, PANEL};
use kernels::gemm::{Epilogue, Packed, gemm, gemm_from_panels, gemm_panels};
use rayon::prelude::*;

use crate::config::{Activation, PoolingType};
use crate::folded::{FoldedBlock, FoldedConv, FoldedNet};

/// A 1x1 convolution (or an im2col'd one): `out[M, n] = in[M, k] · weight + bias`.
#[derive(Debug)]
struct Pointwise {
    /// Packed once for [`gemm`].
    weight: Packed,
    bias: Vec<f32>,
}

#[derive(Debug)]
struct SqueezeExcite {
    /// `channels -> se`, with its bias, then SiLU
    reduce: Pointwise,
    /// `se -> channels`, with its bias, then sigmoid
    expand: Pointwise,
}

#[derive(Debug)]
struct FusedBlock {
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

/// A buffer from [`FusedNet`]'s pool: the first `len` values of a vector that keeps its full
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

/// What [`FusedNet::run`] returns for one image.
pub(crate) struct FusedOutput {
    pub embeddings: Option<Tensor<4>>,
    pub stages: Vec<Tensor<4>>,
    pub last_hidden_state: Tensor<4>,
    pub pooled: Vec<f32>,
}

/// The folded network's weights in host memory, ready for [`FusedNet::run`]; see the module
/// documentation.
#[derive(Debug)]
pub(crate) struct FusedNet {
    stem: Stem,
    blocks: Vec<FusedBlock>,
    top: Option<Pointwise>,
    pooling: PoolingType,
    /// Scratch buffers, kept between calls (at their full length) so that their pages stay
    /// mapped.
    pool: Mutex<Vec<Vec<f32>>>,
}

/// `conv` packed for [`gemm`]; `None` unless it is ungrouped, stride 1 and unpadded.
fn pointwise(conv: FoldedConv) -> Option<Pointwise> {
    if conv.groups != 1 || conv.stride != [1, 1] || conv.padding != [0; 4] {
        return None;
    }
    let [n, k, kh, kw] = conv.dims;
    Some(Pointwise {
        weight: Packed::from_out_in(&conv.weight, n, k * kh * kw),
        bias: conv.bias,
    })
}

impl FusedNet {
    /// Packs the folded weights of a SiLU network; `None` when the network is not one this
    /// path runs (other activations, unusual convs).
    pub(crate) fn new(
        folded: FoldedNet,
        activation: Activation,
        pooling: PoolingType,
    ) -> Option<Self> {
        if activation != Activation::Silu {
            return None;
        }
        let FoldedNet { stem, blocks, top } = folded;
        let [n, in_channels, kernel, kw] = stem.dims;
        if stem.stride[0] != stem.stride[1] || stem.groups != 1 || kernel != kw {
            return None;
        }
        let stem = Stem {
            conv: Pointwise {
                weight: Packed::from_out_in(&stem.weight, n, in_channels * kernel * kernel),
                bias: stem.bias,
            },
            in_channels,
            kernel,
            stride: stem.stride[0],
            padding: stem.padding,
        };
        let blocks = blocks
            .into_par_iter()
            .map(FusedBlock::new)
            .collect::<Option<Vec<_>>>()?;
        let top = match top {
            Some(c) => Some(pointwise(c)?),
            None => None,
        };
        Some(Self {
            stem,
            blocks,
            top,
            pooling,
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
    ) -> FusedOutput {
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
        FusedOutput {
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

impl FusedBlock {
    fn new(b: FoldedBlock) -> Option<Self> {
        let dw = b.depthwise;
        let [c, one, kernel, kw] = dw.dims;
        if one != 1 || kernel != kw || dw.groups != c || dw.stride[0] != dw.stride[1] {
            return None;
        }
        Some(Self {
            expansion: match b.expansion {
                Some(e) => Some(pointwise(e)?),
                None => None,
            },
            depthwise: Depthwise::new(&dw.weight, dw.bias, kernel, dw.stride[0], dw.padding),
            squeeze_excite: SqueezeExcite {
                reduce: pointwise(b.reduce)?,
                expand: pointwise(b.expand)?,
            },
            projection: pointwise(b.projection)?,
            residual: b.residual,
        })
    }

    fn forward(&self, net: &FusedNet, x: Map) -> Map {
        let dw = &self.depthwise;
        let (ho, wo) = dw.output_size(x.height, x.width);
        let (mut h, sums, h_panels) = match &self.expansion {
            Some(e) => {
                let band = (x.height * x.width >= BAND_MIN_PIXELS)
                    .then(|| BAND_PIXELS.div_ceil(wo.max(1)).max(1));
                expand_depthwise(net, e, dw, &x, band)
            }
            None => {
                let (h, sums) = depthwise(net, dw, &x.data, x.height, x.width);
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
                gelu: false,
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
                gelu: false,
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
/// [`expand_depthwise`]): the 144x144, 72x72 and 36x36 maps of align-base (expanded:
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
            gelu: false,
        };
        gemm(input, &self.weight, out, epilogue);
    }
}

/// The expansion `e` of `x` (bias + SiLU, as panels of 16 channels), then the depthwise
/// convolution `dw` on it (as [`depthwise`] on a channels-last input); the output comes as
/// panels too where the CPU has AVX2 (the third value: true), else channels-last. With
/// `band`, the output rows go in bands of that many rows, each convolved from a ring
/// buffer of the expansion rows it reads: the rows not yet expanded are computed
/// into it first (each row once, wrapping around the ring), overwriting rows that no
/// later band reads. Every value is computed by the same kernels with the same additions
/// in the same order as without bands: only where the expanded rows live changes (a ring
/// that stays in cache instead of the whole map in memory).
fn expand_depthwise(
    net: &FusedNet,
    e: &Pointwise,
    dw: &Depthwise,
    x: &Map,
    band: Option<usize>,
) -> (Buf, Vec<f32>, bool) {
    let (height, width, cin) = (x.height, x.width, x.channels);
    let (ho, wo) = dw.output_size(height, width);
    let epilogue = Epilogue {
        bias: Some(&e.bias),
        residual: None,
        silu: true,
        gelu: false,
    };
    let band = band.unwrap_or(ho).clamp(1, ho.max(1));
    // Input rows a band reads: at most (band - 1) * stride + kernel.
    let held = ((band - 1) * dw.stride + dw.kernel).min(height);
    let row_len = width * PANEL;
    let mut ring = net.take(e.weight.n().div_ceil(PANEL) * held * row_len);
    let c = dw.channels;
    // With AVX2 the output comes as panels of 16 channels (`[C / 16, ho * wo, 16]`, see
    // `panel_rows`), else channels-last.
    let panels = Depthwise::panel_output();
    let width_out = if panels { dw.padded() } else { c };
    let mut out = net.take(ho * wo * width_out);
    let mut row_sums = vec![0.0f32; ho * width_out];
    let [pt, ..] = dw.padding;
    // input rows expanded so far
    let mut done = 0;
    for oy0 in (0..ho).step_by(band) {
        let oy1 = (oy0 + band).min(ho);
        // this band reads input rows below `need` and none below `need - held`
        let need = ((oy1 - 1) * dw.stride + dw.kernel)
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
        if panels {
            dw.panel_rows(
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
        dw.rows(rows, sums, oy0, &ring, layout, height, width);
    }
    net.give(ring);
    let sums = if panels {
        Depthwise::sum_panel_rows(&row_sums, c)
    } else {
        Depthwise::sum_rows(&row_sums, c)
    };
    (out, sums, panels)
}

/// Depthwise convolution `dw` + bias + SiLU of `input` (`[height, width, C]`, a block without
/// expansion); returns the output (`[ho, wo, C]`) and its per-channel sums.
fn depthwise(
    net: &FusedNet,
    dw: &Depthwise,
    input: &[f32],
    height: usize,
    width: usize,
) -> (Buf, Vec<f32>) {
    let c = dw.channels;
    let (ho, wo) = dw.output_size(height, width);
    let mut out = net.take(ho * wo * c);
    let mut row_sums = vec![0.0f32; ho * c];
    dw.rows(
        &mut out,
        &mut row_sums,
        0,
        input,
        Layout::Nhwc,
        height,
        width,
    );
    (out, Depthwise::sum_rows(&row_sums, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::values;

    /// Expansion + depthwise in bands of output rows (a ring of expansion rows, wrapping
    /// around) gives, bit for bit, what one pass over the whole map gives: both strides and
    /// kernel sizes, asymmetric padding, bands of one row up to more than the map.
    #[test]
    fn expansion_in_bands_equals_one_pass_over_the_map() {
        // a network without layers: its buffer pool only
        let net = FusedNet {
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
            let dw = Depthwise::new(&values(cexp * k * k, 10), values(cexp, 3), k, s, padding);
            let x = Map {
                data: Buf {
                    vec: values(h * w * cin, 4),
                    len: h * w * cin,
                },
                height: h,
                width: w,
                channels: cin,
            };
            let (whole, whole_sums, _) = expand_depthwise(&net, &e, &dw, &x, None);
            for band in [1, 2, 3, 7, 40] {
                let (out, sums, _) = expand_depthwise(&net, &e, &dw, &x, Some(band));
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
