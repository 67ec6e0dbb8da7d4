//! The depthwise kernels on AVX2 + FMA: channels-last rows and panel rows.

use super::{Depthwise, PANEL};

impl Depthwise {
    /// [`Self::row`] on an NHWC input with the accumulators in AVX2 registers: pixel by
    /// pixel, 32 channels (then 8, then a masked remainder) at a time, all taps, bias, SiLU and
    /// the channel sums before the values are stored once.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_avx2(
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
                        let y = crate::activation::avx2::silu(a);
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
                    let y = crate::activation::avx2::silu(a);
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
                    let y = crate::activation::avx2::silu(a);
                    _mm256_maskstore_ps(o.add(cb), mask, y);
                    let sp = sum.add(cb);
                    _mm256_maskstore_ps(sp, mask, _mm256_add_ps(_mm256_maskload_ps(sp, mask), y));
                }
            }
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
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn panel_rows_avx2(
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
                                let y = crate::activation::avx2::silu(acc[h]);
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
                            let y = crate::activation::avx2::silu(acc[h]);
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
}
