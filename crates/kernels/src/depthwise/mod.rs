//! Depthwise convolution + bias + SiLU in host memory, summing each channel's outputs (for
//! squeeze-excite) on the way, with the accumulators in registers.
//!
//! Two input layouts ([`Layout`]): channels-last `[H, W, C]`, convolved pixel by pixel and
//! written channels-last ([`Depthwise::rows`]), and panels of 16 channels
//! (`[C / 16, rows, W, 16]`, as [`crate::gemm::gemm_panels`] writes an expansion), convolved
//! panel by panel, each panel through all the output rows, four pixels at a time, and written
//! as panels too ([`Depthwise::panel_rows`]): a panel's rows and weights stay in L1 (on
//! channels-last input, a pixel's 25 taps of 1344 channels did not, nor did a row's taps of
//! all panels). The kernels: `avx2` (eight lanes), `avx512` (sixteen lanes, the same values
//! bit for bit but for the sign of an exact zero; at stride 1 with 3x3 or 5x5 taps, windows
//! of eight or nine pixels that load each input column once per tap row) and `portable`
//! code; which one runs is decided here, from [`crate::cpu`].

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;

use rayon::prelude::*;

use crate::activation::silu_inplace;
use crate::cpu::has_avx2_fma;
#[cfg(target_arch = "x86_64")]
use crate::cpu::has_avx512f;

/// A depthwise convolution's weights, BatchNorm folded in, laid out for the kernels.
#[derive(Debug)]
pub struct Depthwise {
    /// `[kernel * kernel, padded]`: tap-major, channels contiguous, zero-padded to
    /// [`Self::padded`] channels (a whole number of 16-channel panels).
    pub weight: Vec<f32>,
    /// `[padded]`, zero-padded.
    pub bias: Vec<f32>,
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// top, left, bottom, right
    pub padding: [usize; 4],
}

/// Channels per panel of a panel-layout input or output (as [`crate::gemm::gemm_panels`]
/// writes them).
pub const PANEL: usize = 16;

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
pub enum Layout {
    /// `[height, width, channels]`
    Nhwc,
    /// `[channels / 16, rows, width, 16]` (an expansion's output, written so by
    /// [`crate::gemm::gemm_panels`]): a panel's rows are contiguous, which keeps a block of
    /// channels and its weights in L1 while the kernel walks a row of pixels. Input row `y`
    /// is held at row `y % rows`: all `height` rows, or a ring of the rows a band of output
    /// rows reads.
    Panels { rows: usize },
}

impl Depthwise {
    /// From a depthwise convolution's weight `[channels, 1, kernel, kernel]` (row-major) and
    /// bias `[channels]`, BatchNorm folded in: the weights re-laid tap-major and both
    /// zero-padded to whole panels.
    pub fn new(
        weight: &[f32],
        mut bias: Vec<f32>,
        kernel: usize,
        stride: usize,
        padding: [usize; 4],
    ) -> Self {
        let c = bias.len();
        assert_eq!(
            weight.len(),
            c * kernel * kernel,
            "weight is not [C, 1, k, k]"
        );
        let padded = c.div_ceil(PANEL) * PANEL;
        let mut taps = vec![0.0; kernel * kernel * padded];
        for ch in 0..c {
            for t in 0..kernel * kernel {
                taps[t * padded + ch] = weight[ch * kernel * kernel + t];
            }
        }
        bias.resize(padded, 0.0);
        Self {
            weight: taps,
            bias,
            channels: c,
            kernel,
            stride,
            padding,
        }
    }

    /// Whether [`Self::panel_rows`] runs on this CPU (AVX2 and FMA): callers then convolve
    /// panel-layout inputs into panels, else through [`Self::rows`] into channels-last rows.
    pub fn panel_output() -> bool {
        has_avx2_fma()
    }

    /// Channels held by the weights: `channels` rounded up to whole panels.
    pub fn padded(&self) -> usize {
        self.channels.div_ceil(PANEL) * PANEL
    }

    /// Output height and width on a `height` x `width` input.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        let [pt, pl, pb, pr] = self.padding;
        let (k, s) = (self.kernel, self.stride);
        (
            (height + pt + pb - k) / s + 1,
            (width + pl + pr - k) / s + 1,
        )
    }

    /// Output rows `rows` on a panel-layout input with AVX2, panel by panel in parallel, each
    /// panel through all the rows, into `out` as panels too (`[C / 16, ho * wo, 16]`) and
    /// the rows' channel sums into `row_sums` (`[C / 16, ho, 16]`, see
    /// [`Self::sum_panel_rows`]). A panel's input rows, weights and output rows stay in L1
    /// from one row to the next (row by row across all panels, the late blocks' maps and
    /// weights were read from L3 once per output row), and each panel's outputs are written
    /// in one stream (into channels-last rows, 64 bytes a pixel strided by the row length,
    /// the same work took markedly longer).
    #[allow(clippy::too_many_arguments)]
    pub fn panel_rows(
        &self,
        out: &mut [f32],
        row_sums: &mut [f32],
        rows: std::ops::Range<usize>,
        input: &[f32],
        held: usize,
        height: usize,
        width: usize,
    ) {
        assert!(Self::panel_output(), "the panel kernel needs AVX2 and FMA");
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (out, row_sums, rows, input, held, height, width);
        #[cfg(target_arch = "x86_64")]
        {
            let (ho, wo) = self.output_size(height, width);
            let wide = has_avx512f();
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
    }

    /// The per-channel sums of the rows of `row_sums` (`[C / 16, rows, 16]`), added in row
    /// order (as [`Self::sum_rows`]).
    pub fn sum_panel_rows(row_sums: &[f32], c: usize) -> Vec<f32> {
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
    pub fn rows(
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
    pub fn sum_rows(row_sums: &[f32], c: usize) -> Vec<f32> {
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
            && has_avx512f()
            && has_avx2_fma()
        {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { self.row_avx512(row, sums, oy, input, height, width) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if layout == Layout::Nhwc && has_avx2_fma() {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { self.row_avx2(row, sums, oy, input, height, width) };
            return;
        }
        self.row_generic(row, oy, input, layout, height, width);
        silu_inplace(row);
        for px in row.chunks_exact(self.channels) {
            sums.iter_mut().zip(px).for_each(|(s, v)| *s += v);
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
                    silu_inplace(r);
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
                    silu_inplace(r);
                    for px in r.chunks_exact(c) {
                        sums.iter_mut().zip(px).for_each(|(s, v)| *s += v);
                    }
                }),
            ));
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA.
                let nhwc = run(&dw, (h, w), |r, sums, oy| unsafe {
                    dw.row_avx2(r, sums, oy, &x, h, w)
                });
                // Whole groups of 16 channels with AVX-512F: the sixteen-lane channels-last
                // kernel, bit for bit the eight-lane one.
                if c.is_multiple_of(16) && has_avx512f() {
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
                if has_avx512f() {
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
}
