//! The depthwise kernels on AVX-512F: the same values as [`super::avx2`]'s, sixteen lanes at a
//! time, and the windows of neighbouring pixels that load each input column once per tap row.

use super::{Depthwise, PANEL};

impl Depthwise {
    /// [`Self::row_avx2`] on sixteen lanes, for whole groups of 16 channels (AVX-512F): the
    /// taps pixel by pixel, 64 channels (then 16) at a time, the row stored before the
    /// activation, then SiLU + the channel sums over it on sixteen lanes: per lane the same
    /// multiply-adds, SiLU and sums in the same order, so the same values bit for bit.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub(super) unsafe fn row_avx512(
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
            crate::activation::avx512::silu_sum(row, sums);
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
    #[target_feature(enable = "avx2,fma,avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn panel_rows_avx512(
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
                            let y = crate::activation::avx512::silu(acc);
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
                        let y = crate::activation::avx512::silu(acc);
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
                let y = crate::activation::avx512::silu(acc);
                _mm512_storeu_ps(out.add(p * PANEL), y);
                *total = _mm512_add_ps(*total, y);
            }
        }
    }
}
