//! The products on AVX2 + FMA: the pass over `k` blocks and panels shared with the AVX-512
//! kernel ([`super::avx512`]), the 6 x 16 register kernel and its epilogue.

use std::arch::x86_64::*;

use super::avx512::kernel_wide;
use super::{Epilogue, Input, KC, Layout, MR, MR_WIDE, NR, Packed};

/// [`super::task`] on AVX2+FMA: `k` in blocks of at most [`KC`]; per block, each panel
/// once, with every 6-row block of `rows` passing over it (with `wide`, two or three
/// panels at a time with 9-row blocks of the AVX-512 kernel, [`kernel_wide`]).
///
/// # Safety
/// As [`super::task`], on a CPU with AVX2 and FMA, and AVX-512F if `wide`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn task(
    a: &[f32],
    w: &Packed,
    out: *mut f32,
    m: usize,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    epilogue: Epilogue,
    input: Input,
    layout: Layout,
    wide: bool,
) {
    let (k, n) = (w.k, w.n);
    // (with AVX-512, the task's rows in blocks of equal height up to 9: 64 rows as 8 x 8,
    // not 7 x 9 and a single row that would load two panels per two multiply-adds)
    let mr = if wide {
        rows.len().div_ceil(rows.len().div_ceil(MR_WIDE)).max(1)
    } else {
        MR
    };
    assert!(rows.end <= m && a.len() >= m * input.row_len(k));
    let blocks = k.div_ceil(KC).max(1);
    // (on panels, blocks of `k` start at a panel)
    let kc = match input {
        Input::Rows => k.div_ceil(blocks),
        Input::Panels => k.div_ceil(blocks).next_multiple_of(NR),
    };
    let blocks = k.div_ceil(kc).max(1);
    // Where a row of `a` starts in the block of `k` from `k0`, the rows' stride, and the
    // stride from one group of 16 values of `k` to the next.
    let row0 = |r: usize, k0: usize| match input {
        Input::Rows => r * k + k0,
        Input::Panels => k0 * m + r * NR,
    };
    let (lda, group) = match input {
        Input::Rows => (k, NR),
        Input::Panels => (NR, m * NR),
    };
    // With AVX-512F, SiLU runs on sixteen lanes over each panel's finished rows (the same
    // values bit for bit, in less time) instead of on eight in the epilogue.
    let wide_silu = epilogue.silu && crate::cpu::has_avx512f();
    // Panels per pass: with AVX-512 two at a time (a 9 x 32 block of the output in
    // eighteen accumulators: 11 loads per 18 multiply-adds where one panel takes 10 per
    // 9, too many loads for a CPU that issues two 512-bit multiply-adds a cycle), the
    // last three together where their number is odd (9 x 48, as fast as pairs); one alone
    // only where the task has one.
    let width = |panel: usize| match panels.end - panel {
        _ if !wide => 1,
        3 => 3,
        left => left.min(2),
    };
    let step_for = |panel: usize, b: usize| {
        let col = panel * NR;
        let cols = NR.min(n - col);
        let mut bias = [0.0f32; NR];
        if let Some(src) = epilogue.bias {
            bias[..cols].copy_from_slice(&src[col..col + cols]);
        }
        // (the panel layout has room for the padding columns: zeros are stored)
        let full = cols == NR || layout != Layout::Rows;
        let later_silu = wide_silu && full && b + 1 == blocks;
        Step {
            first: b == 0,
            last: b + 1 == blocks,
            bias,
            cols,
            full,
            col,
            n,
            ldo: match layout {
                Layout::Rows => n,
                Layout::Panels { .. } => NR,
            },
            silu: epilogue.silu && !later_silu,
            later_silu,
            residual: epilogue.residual,
        }
    };
    // Where row `r` of `panel` starts in `out`.
    let out_at = |panel: usize, r: usize| match layout {
        Layout::Rows => out.wrapping_add(r * n + panel * NR),
        Layout::Panels { stride } => out.wrapping_add(panel * stride + r * NR),
    };
    for b in 0..blocks {
        let k0 = b * kc;
        let k1 = k.min(k0 + kc);
        let mut panel = panels.start;
        while panel < panels.end {
            let np = width(panel);
            // The pass's panels' blocks: the first at the start, each next `k * 16` on.
            let bp = &w.data[panel * k * NR + k0 * NR..][..(np - 1) * k * NR + (k1 - k0) * NR];
            // The blocks the next pass will read (the next panels, or the first panels of
            // the next block of k): fetched a share per row block of this pass, so that
            // they are in cache when its first rows start (the weights come from memory
            // once per image; read on demand, the first pass over a panel waited on
            // them). The 6-row kernel's share is fetched before each call; the 9-row
            // kernel fetches its share itself, a line (per panel) every four steps of `k`
            // (issued in one burst, the larger share of a 9-row block made the 81-row
            // projections slower than with the 6-row kernel; spread out, they are faster).
            let next = if panel + np < panels.end {
                Some((panel + np, k0, k1))
            } else if b + 1 < blocks {
                Some((panels.start, k1, k.min(k1 + kc)))
            } else {
                None
            };
            let (ahead, lines) = match next {
                Some((p, n0, n1)) => (
                    Ahead {
                        at: w.data[p * k * NR + n0 * NR..].as_ptr(),
                        lines: 0,
                        panels: width(p),
                    },
                    n1 - n0,
                ),
                None => (
                    Ahead {
                        at: w.data.as_ptr(),
                        lines: 0,
                        panels: 0,
                    },
                    0,
                ),
            };
            let share = lines.div_ceil(rows.len().div_ceil(mr));
            // (padded with the last panel's to a fixed length; the kernel reads `np`)
            let last = panel + np - 1;
            let steps = [
                step_for(panel, b),
                step_for(last.min(panel + 1), b),
                step_for(last, b),
            ];
            let mut r = rows.start;
            // This row block's share of the next blocks: its first line and line count.
            let mut first = 0;
            while r < rows.end {
                let ahead = Ahead {
                    at: ahead.at.wrapping_add(first * NR),
                    lines: share.min(lines - first),
                    ..ahead
                };
                if !wide {
                    for line in 0..ahead.lines {
                        // SAFETY: `line` < `ahead.lines`: inside the next block.
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.at.add(line * NR).cast()) };
                    }
                }
                // SAFETY: rows r.. up to rows.end of `out` belong to this task; `a` holds
                // m >= rows.end rows of k values (row-major, or as panels of 16 of them:
                // `Input::row_len`, asserted above).
                unsafe {
                    let a0 = a.as_ptr().add(row0(r, k0));
                    let o: [*mut f32; 3] = std::array::from_fn(|j| out_at(panel + j, r));
                    // (one instance per row count: the accumulators are an array of `R`)
                    macro_rules! six {
                        ($r:expr) => {
                            kernel::<$r>(a0, lda, group, bp, o[0], r, &steps[0])
                        };
                    }
                    macro_rules! nine {
                        ($r:expr) => {
                            match np {
                                1 => nine!($r, 1),
                                2 => nine!($r, 2),
                                _ => nine!($r, 3),
                            }
                        };
                        ($r:expr, $p:expr) => {
                            kernel_wide::<$r, $p>(
                                a0,
                                lda,
                                group,
                                bp,
                                k * NR,
                                k1 - k0,
                                *o.first_chunk().unwrap(),
                                r,
                                steps.first_chunk().unwrap(),
                                ahead,
                            )
                        };
                    }
                    match (wide, (rows.end - r).min(mr)) {
                        (false, 1) => six!(1),
                        (false, 2) => six!(2),
                        (false, 3) => six!(3),
                        (false, 4) => six!(4),
                        (false, 5) => six!(5),
                        (false, _) => six!(MR),
                        (true, 1) => nine!(1),
                        (true, 2) => nine!(2),
                        (true, 3) => nine!(3),
                        (true, 4) => nine!(4),
                        (true, 5) => nine!(5),
                        (true, 6) => nine!(6),
                        (true, 7) => nine!(7),
                        (true, 8) => nine!(8),
                        (true, _) => nine!(MR_WIDE),
                    }
                }
                r += mr;
                first = lines.min(first + share);
            }
            // GELU over the panels' rows just finished (still in L1): in the epilogue it made
            // the kernels' finishing code too large to inline.
            if epilogue.gelu && b + 1 == blocks {
                for p in panel..panel + np {
                    let ld = match layout {
                        Layout::Rows => n,
                        Layout::Panels { .. } => NR,
                    };
                    let cols = NR.min(n - p * NR);
                    for r in rows.clone() {
                        // SAFETY: the panel's real columns of these rows are this task's and
                        // inside `out`.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(
                                out_at(p, rows.start).add((r - rows.start) * ld),
                                cols,
                            )
                        };
                        crate::activation::avx2::gelu_slice(row);
                    }
                }
            }
            for (p, step) in (panel..panel + np).zip(&steps) {
                if step.later_silu {
                    let ld = match layout {
                        Layout::Rows => n,
                        Layout::Panels { .. } => NR,
                    };
                    // SAFETY: the CPU has AVX-512F (`wide_silu`); the panel's 16 columns
                    // of these rows are this task's and inside `out` (`full`).
                    unsafe {
                        crate::activation::avx512::silu_rows(out_at(p, rows.start), rows.len(), ld)
                    };
                }
            }
            panel += np;
        }
    }
}

/// What a kernel prefetches for the next pass: `lines` lines of 16 values from `at` in
/// each of that pass's `panels` panels (their blocks a panel's length apart).
#[derive(Clone, Copy)]
pub(super) struct Ahead {
    pub(super) at: *const f32,
    pub(super) lines: usize,
    pub(super) panels: usize,
}

/// Where a kernel call sits in the product and what it finishes.
#[derive(Clone, Copy)]
pub(super) struct Step<'a> {
    /// First block of `k`: the output is not read.
    pub(super) first: bool,
    /// Last block of `k`: the epilogue is applied.
    pub(super) last: bool,
    /// The panel's bias (zero where there is none).
    pub(super) bias: [f32; NR],
    /// The panel's real columns, and whether it has all 16 (or the layout has room for
    /// all 16: the masked loads and stores below only where it does not).
    pub(super) cols: usize,
    pub(super) full: bool,
    /// The panel's first column, the number of columns (the residual's row stride) and the
    /// output's row stride.
    pub(super) col: usize,
    pub(super) n: usize,
    pub(super) ldo: usize,
    /// SiLU in the epilogue, or over the panel's rows once they are finished (sixteen
    /// lanes, AVX-512F).
    pub(super) silu: bool,
    pub(super) later_silu: bool,
    pub(super) residual: Option<&'a [f32]>,
}

/// `R` rows (`R <= MR`) of one panel over one block of `k`: `a` points to the block's
/// first value in the first row (row stride `lda`), `b` is the panel's `[kc, 16]` block;
/// the 2 x `R` accumulators stay in registers.
///
/// # Safety
/// `a` covers `R` rows of the block; `out` points to row `row`, column `step.col` of the
/// output and rows `row..row + R` of the panel's columns are this caller's.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize>(
    a: *const f32,
    lda: usize,
    group: usize,
    b: &[f32],
    out: *mut f32,
    row: usize,
    step: &Step,
) {
    let kc = b.len() / NR;
    // The lines the epilogue will read, fetched now so that they are in L1 when the
    // multiply-adds end: the residual's rows (one line per row in memory, where the
    // hardware's prefetcher does not look: the rows are a whole output row apart) and the
    // sums of the blocks of `k` before, else waited on once the multiply-adds end. (A row's
    // 16 values may straddle two lines; a prefetch past the output's end does not fault.)
    if step.last
        && let Some(res) = step.residual
    {
        for i in 0..R {
            let at = res.as_ptr().wrapping_add((row + i) * step.n + step.col);
            // SAFETY: a prefetch reads nothing and faults on no address.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(at.cast());
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(NR - 1).cast());
            }
        }
    }
    if !step.first {
        for i in 0..R {
            let at = out.wrapping_add(i * step.ldo);
            // SAFETY: as above.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(at.cast());
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(NR - 1).cast());
            }
        }
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY: p < kc and i < R stay inside the block of `a` (each group of 16 values of
    // `k` `group` values after the one before) and inside `b`.
    unsafe {
        let mut rows: [*const f32; R] = std::array::from_fn(|i| a.add(i * lda));
        let mut bp = b.as_ptr();
        // `$n` steps at offset `$t` of the rows (`$t..$t + $n`), then `bp` to the next.
        macro_rules! steps {
            ($t:expr, $n:expr) => {
                for u in 0..$n {
                    let b0 = _mm256_loadu_ps(bp.add(u * NR));
                    let b1 = _mm256_loadu_ps(bp.add(u * NR + 8));
                    for (acc, row) in acc.iter_mut().zip(&rows) {
                        let x = _mm256_broadcast_ss(&*row.add($t + u));
                        acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
                    }
                }
                bp = bp.add($n * NR);
            };
        }
        k_loop!(kc, group, rows, steps);
    }
    // The epilogue, unrolled by hand (`R` is at most 6) so that the accumulators stay in
    // registers: as a loop, LLVM stored them to the stack and looped over them.
    macro_rules! finish_row {
        ($i:literal) => {
            if let Some(acc) = acc.get($i) {
                // SAFETY: row `row + $i` of the panel's columns is the caller's, and
                // inside `residual` (checked to be [m, n]).
                unsafe { finish(acc, out.add($i * step.ldo), row + $i, step) };
            }
        };
    }
    finish_row!(0);
    finish_row!(1);
    finish_row!(2);
    finish_row!(3);
    finish_row!(4);
    finish_row!(5);
}

/// The epilogue of one row of a panel: the two accumulators `acc` added to what `out`
/// holds unless this is the first block of `k`, then on the last block bias, residual and
/// SiLU, and stored (masked loads and stores, slow on some CPUs, only in a partial panel).
///
/// # Safety
/// `out` points to row `row`, column `step.col` of the output, whose panel columns are
/// the caller's; the row is inside `step.residual` if there is one.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn finish(acc: &[__m256; 2], out: *mut f32, row: usize, step: &Step) {
    for (h, &v) in acc.iter().enumerate() {
        // (wrapping: past the last real column the lanes are masked off)
        let d = out.wrapping_add(8 * h);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(step.cols as i32 - 8 * h as i32), lanes);
        // SAFETY: masked loads and stores touch only the panel's real columns; `bias`
        // holds 16 values.
        unsafe {
            let load = |p: *const f32| {
                if step.full {
                    _mm256_loadu_ps(p)
                } else {
                    _mm256_maskload_ps(p, mask)
                }
            };
            let mut v = v;
            if !step.first {
                v = _mm256_add_ps(v, load(d));
            }
            if step.last {
                v = _mm256_add_ps(v, _mm256_loadu_ps(step.bias.as_ptr().add(8 * h)));
                if let Some(res) = step.residual {
                    let at = row * step.n + step.col + 8 * h;
                    v = _mm256_add_ps(v, load(res.as_ptr().wrapping_add(at)));
                }
                if step.silu {
                    v = crate::activation::avx2::silu(v);
                }
            }
            if step.full {
                _mm256_storeu_ps(d, v);
            } else {
                _mm256_maskstore_ps(d, mask, v);
            }
        }
    }
}
