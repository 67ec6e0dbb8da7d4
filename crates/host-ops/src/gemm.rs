//! Matrix products against weights packed once at load time, with the bias, SiLU and
//! residual add applied while the results are still in registers.
//!
//! `out[m, n] = a[m, k] · w[k, n]` where `w` is a [`Packed`] weight: panels of 16 columns,
//! each `[k, 16]` contiguous (the last panel zero-padded), so the kernel streams it without
//! packing anything per call. The kernel keeps a 6 x 16 block of the output in registers
//! (twelve 8-lane AVX2 accumulators), or with AVX-512F a 9 x 32 block of two panels (eighteen
//! 16-lane ones; 9 x 48 where the panels are odd in number; the same values bit for bit),
//! broadcasting `a` straight from its rows; `k` is cut into blocks of at most 256 so that a
//! pass's panel blocks stay in L1 while every row block of a tile of rows passes over them,
//! and the next pass's blocks are prefetched meanwhile. Work is split into tasks of rows or
//! of panels on rayon's pool. On CPUs without AVX2+FMA each panel goes through the `gemm`
//! crate and the epilogue is a second pass. [`gemm()`] writes `out` row-major;
//! [`gemm_panels`] writes it as panels of 16 columns (what the vision tower's depthwise
//! kernel reads best); [`gemm_from_panels`] reads `a` as panels of 16 columns (what that
//! kernel writes best).

use rayon::prelude::*;

/// Columns per panel.
const NR: usize = 16;
/// Rows per register block of the AVX2 kernel (twelve 8-lane accumulators).
const MR: usize = 6;
/// Rows per register block of the AVX-512 kernel (nine 16-lane accumulators per panel):
/// align-base's maps (144, 72, 36, 18 and 9 pixels square) all have a multiple of 9 pixels, so
/// no block of it is short (the 81-row products of the 9x9 maps left 3 rows to a short block
/// of 6).
const MR_WIDE: usize = 9;
/// Rows of a task of rows (at most; a multiple of the register block).
const TILE_ROWS: usize = 96;
/// Products of fewer multiply-adds run on the calling thread (about 10 us: less than handing
/// tasks to the pool costs; e.g. the squeeze-excite products of the early blocks).
const SERIAL_MACS: usize = 1 << 17;
/// Largest block of `k` (a panel's block is `KC * NR * 4` bytes = 16 KiB).
const KC: usize = 256;

/// A `[k, n]` weight packed for [`gemm()`]: `ceil(n / 16)` panels of `[k, 16]`.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The panels, then possibly unused values (storage reused by [`Self::scale_rows_into`]).
    data: Vec<f32>,
    k: usize,
    n: usize,
}

impl Packed {
    /// Packs `w` given as `[n, k]` row-major (an `[out, in]` linear or 1x1 convolution weight,
    /// PyTorch's layout), transposing it on the way.
    pub fn from_out_in(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight is not [n, k]");
        let mut data = vec![0.0; n.div_ceil(NR) * k * NR];
        if k > 0 {
            data.par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(panel, dst)| {
                    for c in 0..NR.min(n - panel * NR) {
                        let row = &w[(panel * NR + c) * k..][..k];
                        for (p, &v) in row.iter().enumerate() {
                            dst[p * NR + c] = v;
                        }
                    }
                });
        }
        Self { data, k, n }
    }

    /// Rows of the product (the inner dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of the product.
    pub fn n(&self) -> usize {
        self.n
    }

    /// This weight with row `p` multiplied by `scale[p]`, into `buf` (reused storage: grown
    /// if shorter than [`Self::storage_len`], else overwritten in its first values).
    pub fn scale_rows_into(&self, scale: &[f32], mut buf: Vec<f32>) -> Self {
        assert_eq!(scale.len(), self.k, "one scale per row");
        let len = self.storage_len();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        if self.k > 0 {
            buf[..len]
                .par_chunks_mut(self.k * NR)
                .zip(self.data.par_chunks(self.k * NR))
                .for_each(|(dst, src)| {
                    #[cfg(target_arch = "x86_64")]
                    if crate::has_avx2_fma() {
                        // SAFETY: the CPU has AVX2.
                        return unsafe { scale_panel_avx2(dst, src, scale) };
                    }
                    scale_panel(dst, src, scale)
                });
        }
        Self {
            data: buf,
            k: self.k,
            n: self.n,
        }
    }

    /// Values in the panels (the padded size: what [`Self::scale_rows_into`] needs of its
    /// buffer).
    pub fn storage_len(&self) -> usize {
        self.n.div_ceil(NR) * self.k * NR
    }

    /// The storage, for reuse.
    pub fn into_storage(self) -> Vec<f32> {
        self.data
    }
}

/// Row `p` of the `[k, 16]` panel `src` times `scale[p]`, into `dst`.
#[inline]
fn scale_panel(dst: &mut [f32], src: &[f32], scale: &[f32]) {
    for ((d, s), &f) in dst
        .chunks_exact_mut(NR)
        .zip(src.chunks_exact(NR))
        .zip(scale)
    {
        let (d, s): (&mut [f32; NR], &[f32; NR]) = (d.try_into().unwrap(), s.try_into().unwrap());
        for (d, s) in d.iter_mut().zip(s) {
            *d = s * f;
        }
    }
}

/// [`scale_panel`] compiled for AVX2 (two 8-lane multiplies per row; the compiler left the
/// portable loop as sixteen scalar multiplies).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scale_panel_avx2(dst: &mut [f32], src: &[f32], scale: &[f32]) {
    scale_panel(dst, src, scale)
}

/// What is applied to each output value `x` at column `j`, row `i`, in this order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// `x += bias[j]`
    pub bias: Option<&'a [f32]>,
    /// `x += residual[i * n + j]`
    pub residual: Option<&'a [f32]>,
    /// `x = silu(x)`
    pub silu: bool,
}

/// `out[m, n] = a[m, k] · w` then `epilogue`; `a` and `out` row-major and contiguous
/// (`m = a.len() / k`), in parallel on rayon's pool. Deterministic: each output value is
/// summed in the same order whatever the split.
pub fn gemm(a: &[f32], w: &Packed, out: &mut [f32], epilogue: Epilogue) {
    gemm_on(
        a,
        w,
        out,
        epilogue,
        Input::Rows,
        Layout::Rows,
        Kernel::best(),
    );
}

/// [`gemm()`] with `a` given as panels of 16 of its columns: `[ceil(k / 16), m, 16]`, value
/// `(i, p)` at `(p / 16) * m * 16 + i * 16 + p % 16` (what the vision tower's depthwise kernel
/// writes best: each panel's values contiguous); the last panel's padding columns are not
/// read. With AVX2 the same sums in the same order as [`gemm()`] wherever `gemm()` cuts `k`
/// at multiples of 16 (on align-base, everywhere); without it, `k` goes through the `gemm`
/// crate 16 columns at a time (the same result up to rounding).
pub fn gemm_from_panels(a: &[f32], w: &Packed, out: &mut [f32], epilogue: Epilogue) {
    gemm_on(
        a,
        w,
        out,
        epilogue,
        Input::Panels,
        Layout::Rows,
        Kernel::best(),
    );
}

/// [`gemm()`] with `out` written as panels of 16 columns, each `[m, 16]`, panel `p` starting
/// at `p * stride` (`stride >= m * 16`): value `(i, j)` at `(j / 16) * stride + i * 16 + j % 16`
/// (what a kernel walking 16 channels of an image at a time reads contiguously; with
/// `stride = m * 16` the panels are `[ceil(n / 16), m, 16]`, a larger stride writes `m` rows
/// into panels of more rows). The last panel's padding columns are the epilogue of zero
/// (zero, or SiLU of zero: also zero). No residual.
pub fn gemm_panels(a: &[f32], w: &Packed, out: &mut [f32], stride: usize, epilogue: Epilogue) {
    assert!(
        epilogue.residual.is_none(),
        "no residual in the panel layout"
    );
    gemm_on(
        a,
        w,
        out,
        epilogue,
        Input::Rows,
        Layout::Panels { stride },
        Kernel::best(),
    );
}

/// How `a` is laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    /// `[m, k]` row-major
    Rows,
    /// panels of 16 columns, `[ceil(k / 16), m, 16]`
    Panels,
}

impl Input {
    /// Values of `a` per row of `k`, padding included.
    fn row_len(self, k: usize) -> usize {
        match self {
            Input::Rows => k,
            Input::Panels => k.div_ceil(NR) * NR,
        }
    }
}

/// How the output is laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// `[m, n]` row-major
    Rows,
    /// panels of `[m, 16]`, `stride` values apart
    Panels { stride: usize },
}

/// Which kernel runs the products.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kernel {
    /// The `gemm` crate panel by panel, the epilogue in a second pass.
    Portable,
    /// 6 rows x 16 columns in twelve 8-lane accumulators (AVX2 + FMA).
    Avx2,
    /// 9 rows x 32 columns (two panels) in eighteen 16-lane accumulators (AVX-512F), the last
    /// three panels together where their number is odd (9 x 16 only for a task of one panel):
    /// the same multiply-adds in the same order as [`Kernel::Avx2`], so the same values bit
    /// for bit.
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    fn best() -> Self {
        if crate::has_avx512f() {
            Kernel::Avx512
        } else if crate::has_avx2_fma() {
            Kernel::Avx2
        } else {
            Kernel::Portable
        }
    }

    /// Rows per register block.
    fn rows(self) -> usize {
        match self {
            Kernel::Avx512 => MR_WIDE,
            Kernel::Avx2 | Kernel::Portable => MR,
        }
    }
}

/// [`gemm()`] / [`gemm_panels`] / [`gemm_from_panels`] with `kernel` (one this CPU runs).
fn gemm_on(
    a: &[f32],
    w: &Packed,
    out: &mut [f32],
    epilogue: Epilogue,
    input: Input,
    layout: Layout,
    kernel: Kernel,
) {
    let (k, n) = (w.k, w.n);
    let m = match a.len().checked_div(input.row_len(k)) {
        Some(m) => m,
        None => match layout {
            Layout::Rows => out.len().checked_div(n).unwrap_or(0),
            Layout::Panels { stride } => stride / NR,
        },
    };
    assert_eq!(a.len(), m * input.row_len(k), "a is not [m, k]");
    match layout {
        Layout::Rows => assert_eq!(out.len(), m * n, "out is not [m, n]"),
        Layout::Panels { stride } => {
            assert!(stride >= m * NR, "panel stride below m * 16");
            assert!(
                n == 0 || out.len() >= (n.div_ceil(NR) - 1) * stride + m * NR,
                "out does not hold n / 16 panels of [m, 16] at the stride"
            );
        }
    }
    if let Some(b) = epilogue.bias {
        assert_eq!(b.len(), n, "bias is not [n]");
    }
    if let Some(r) = epilogue.residual {
        assert_eq!(r.len(), m * n, "residual is not [m, n]");
    }
    if m == 0 || n == 0 {
        return;
    }
    let panels = n.div_ceil(NR);
    let mr = kernel.rows();
    let blocks = m.div_ceil(mr);
    let tasks = 4 * rayon::current_num_threads().max(1);
    // Tasks of rows when there are more rows than columns (each task reads all of `w`), else
    // of panels (each task reads all of `a`).
    let (rows_per_task, panels_per_task) = if m >= n {
        (mr * blocks.div_ceil(tasks).clamp(1, TILE_ROWS / mr), panels)
    } else {
        (m, panels.div_ceil(tasks))
    };
    let out = SharedOut(out.as_mut_ptr());
    let row_tiles = m.div_ceil(rows_per_task);
    let panel_groups = panels.div_ceil(panels_per_task);
    let run = |t: usize| {
        let (rt, pg) = (t / panel_groups, t % panel_groups);
        let rows = rt * rows_per_task..(m.min((rt + 1) * rows_per_task));
        let panels = pg * panels_per_task..panels.min((pg + 1) * panels_per_task);
        let out = &out;
        // SAFETY: tasks write disjoint (row range, panel range) blocks of `out`, whose
        // extent `m * n` was checked above.
        unsafe {
            task(
                a, w, out.0, m, rows, panels, epilogue, input, layout, kernel,
            )
        };
    };
    if m * n * k < SERIAL_MACS {
        (0..row_tiles * panel_groups).for_each(run);
    } else {
        (0..row_tiles * panel_groups).into_par_iter().for_each(run);
    }
}

struct SharedOut(*mut f32);
// SAFETY: only used to hand disjoint blocks of one buffer to rayon tasks.
unsafe impl Sync for SharedOut {}

/// One task: `rows` x the columns of `panels` with `kernel` (the AVX2 and AVX-512 ones below,
/// or the `gemm` crate panel by panel and the epilogue in a second pass).
///
/// # Safety
/// `out` points to the output (`layout`, checked against `m` and `w.n`), of which this task
/// alone writes its block; `kernel` is one this CPU runs.
#[allow(clippy::too_many_arguments)]
unsafe fn task(
    a: &[f32],
    w: &Packed,
    out: *mut f32,
    m: usize,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    epilogue: Epilogue,
    input: Input,
    layout: Layout,
    kernel: Kernel,
) {
    #[cfg(target_arch = "x86_64")]
    if kernel != Kernel::Portable {
        let wide = kernel == Kernel::Avx512;
        // SAFETY: forwarded from the caller.
        unsafe { avx2::task(a, w, out, m, rows, panels, epilogue, input, layout, wide) };
        return;
    }
    let _ = kernel;
    let (k, n) = (w.k, w.n);
    debug_assert!(rows.end <= m);
    for panel in panels {
        let col = panel * NR;
        // Output columns of this panel, their offset from the panel's row `r`, the row stride
        // (in the panel layout the zero-padded columns are computed too).
        let (cols, ld) = match layout {
            Layout::Rows => (NR.min(n - col), n),
            Layout::Panels { .. } => (NR, NR),
        };
        let at = |r: usize| match layout {
            Layout::Rows => r * n + col,
            Layout::Panels { stride } => panel * stride + r * NR,
        };
        let real = NR.min(n - col);
        // SAFETY: the block (rows, col..col + cols) of the output is this task's; the panel
        // is [k, 16] row-major, `a`'s rows are [k].
        unsafe {
            let dst = out.add(at(rows.start));
            // `a`'s rows as one block of `k` (row-major) or a block per panel of 16 columns,
            // each added to what the blocks before it left in `dst`.
            let (depth, lhs, lhs_rs, step) = match input {
                Input::Rows => (k, a.as_ptr().add(rows.start * k), k, 0),
                Input::Panels => (NR.min(k), a.as_ptr().add(rows.start * NR), NR, m * NR),
            };
            let mut p0 = 0;
            while p0 < k {
                let depth = depth.min(k - p0);
                ::gemm::gemm(
                    rows.len(),
                    cols,
                    depth,
                    dst,
                    1,
                    ld as isize,
                    p0 > 0,
                    lhs.add(p0 / NR * step),
                    1,
                    lhs_rs as isize,
                    w.data.as_ptr().add(panel * k * NR + p0 * NR),
                    1,
                    NR as isize,
                    if p0 > 0 { 1.0 } else { 0.0 },
                    1.0,
                    false,
                    false,
                    false,
                    ::gemm::Parallelism::None,
                );
                p0 += depth;
            }
            for r in rows.clone() {
                let row = std::slice::from_raw_parts_mut(out.add(at(r)), cols);
                for (j, v) in row[..real].iter_mut().enumerate() {
                    if let Some(b) = epilogue.bias {
                        *v += b[col + j];
                    }
                    if let Some(res) = epilogue.residual {
                        *v += res[r * n + col + j];
                    }
                }
                if epilogue.silu {
                    crate::silu_inplace(row);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Epilogue, Input, KC, Layout, MR, MR_WIDE, NR, Packed};

    /// The kernels' loop over a block of `kc` steps of `k`: `$steps!(t, n)` does `n` (4 or 1)
    /// steps at offset `t` of the row pointers `$rows`, whose values of `k` come in groups of
    /// 16, `$group` values apart (one group for the whole block where `$group` is 16: rows
    /// given row-major). Four steps at a time, the row pointers moved on after each group:
    /// per step the loop then costs little beyond its loads and multiply-adds (stepping the
    /// row pointers every step made it ~29 instructions for 12 multiply-adds, near the front
    /// end's limit; the offset computed from the step's index, half as fast).
    macro_rules! k_loop {
        ($kc:expr, $group:expr, $rows:ident, $steps:ident) => {{
            let (kc, group) = ($kc, $group);
            let mut p = 0;
            // (row-major, the whole block is one group: a single loop, as fast as before
            // groups existed; the loop below is slower on it)
            let whole = if group == NR { kc / 4 * 4 } else { 0 };
            let mut t = 0;
            while t < whole {
                $steps!(t, 4);
                t += 4;
            }
            $rows = $rows.map(|row| row.add(whole));
            p += whole;
            while p + NR <= kc {
                let mut t = 0;
                while t < NR {
                    $steps!(t, 4);
                    t += 4;
                }
                $rows = $rows.map(|row| row.add(group));
                p += NR;
            }
            // the rest of a group: four steps at a time, then one
            let mut t = 0;
            while p + 4 <= kc {
                $steps!(t, 4);
                t += 4;
                p += 4;
            }
            while p < kc {
                $steps!(t, 1);
                t += 1;
                p += 1;
            }
        }};
    }

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
        let mr = if wide { MR_WIDE } else { MR };
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
        let wide_silu = epilogue.silu && crate::has_avx512f();
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
                        match (wide, rows.end - r) {
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
                for (p, step) in (panel..panel + np).zip(&steps) {
                    if step.later_silu {
                        let ld = match layout {
                            Layout::Rows => n,
                            Layout::Panels { .. } => NR,
                        };
                        // SAFETY: the CPU has AVX-512F (`wide_silu`); the panel's 16 columns
                        // of these rows are this task's and inside `out` (`full`).
                        unsafe { crate::avx512::silu_rows(out_at(p, rows.start), rows.len(), ld) };
                    }
                }
                panel += np;
            }
        }
    }

    /// What a kernel prefetches for the next pass: `lines` lines of 16 values from `at` in
    /// each of that pass's `panels` panels (their blocks a panel's length apart).
    #[derive(Clone, Copy)]
    struct Ahead {
        at: *const f32,
        lines: usize,
        panels: usize,
    }

    /// Where a kernel call sits in the product and what it finishes.
    #[derive(Clone, Copy)]
    struct Step<'a> {
        /// First block of `k`: the output is not read.
        first: bool,
        /// Last block of `k`: the epilogue is applied.
        last: bool,
        /// The panel's bias (zero where there is none).
        bias: [f32; NR],
        /// The panel's real columns, and whether it has all 16 (or the layout has room for
        /// all 16: the masked loads and stores below only where it does not).
        cols: usize,
        full: bool,
        /// The panel's first column, the number of columns (the residual's row stride) and the
        /// output's row stride.
        col: usize,
        n: usize,
        ldo: usize,
        /// SiLU in the epilogue, or over the panel's rows once they are finished (sixteen
        /// lanes, AVX-512F).
        silu: bool,
        later_silu: bool,
        residual: Option<&'a [f32]>,
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
            let mask =
                _mm256_cmpgt_epi32(_mm256_set1_epi32(step.cols as i32 - 8 * h as i32), lanes);
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
                        v = crate::avx2::silu(v);
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

    /// [`kernel`] on AVX-512F: `R` rows (`R <= MR_WIDE`) of `P` panels (1 to 3) over one
    /// block of `kc` steps of `k`, one 16-lane accumulator per row and panel, `a` broadcast by
    /// the multiply-adds' memory operand. Each lane does the multiply-adds of [`kernel`] in the
    /// same order, and [`finish_wide`] [`finish`]'s additions, so the values are the same bit
    /// for bit. `b` holds the first panel's `[kc, 16]` block, each next panel's `apart` values
    /// after the one before (a panel's length); `out[j]` and `steps[j]` are panel `j`'s. Also
    /// prefetches `ahead` (the next pass's weights, its panels also `apart` values apart), a
    /// line per panel every four steps of `k`.
    ///
    /// # Safety
    /// As [`kernel`], on a CPU with AVX-512F; `ahead`'s lines lie inside one allocation.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn kernel_wide<const R: usize, const P: usize>(
        a: *const f32,
        lda: usize,
        group: usize,
        b: &[f32],
        apart: usize,
        kc: usize,
        out: [*mut f32; P],
        row: usize,
        steps: &[Step; P],
        ahead: Ahead,
    ) {
        assert!(b.len() >= (P - 1) * apart + kc * NR);
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        let mut pl = 0;
        // SAFETY: as in `kernel`: p < kc and i < R stay inside the block of `a`, and each
        // panel's block inside `b` (asserted).
        unsafe {
            let mut rows: [*const f32; R] = std::array::from_fn(|i| a.add(i * lda));
            let mut bp = b.as_ptr();
            let prefetch = |pl: usize| {
                for j in 0..ahead.panels {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.at.add(j * apart + pl * NR).cast());
                }
            };
            // (as in `kernel`, and a prefetch every four steps)
            macro_rules! steps {
                ($t:expr, $n:expr) => {
                    for u in 0..$n {
                        let w: [__m512; P] =
                            std::array::from_fn(|j| _mm512_loadu_ps(bp.add(j * apart + u * NR)));
                        for (acc, row) in acc.iter_mut().zip(&rows) {
                            let x = _mm512_set1_ps(*row.add($t + u));
                            for (acc, &w) in acc.iter_mut().zip(&w) {
                                *acc = _mm512_fmadd_ps(x, w, *acc);
                            }
                        }
                    }
                    bp = bp.add($n * NR);
                    if $n == 4 && pl < ahead.lines {
                        prefetch(pl);
                        pl += 1;
                    }
                };
            }
            k_loop!(kc, group, rows, steps);
            // (lines the loop had no room for: a short block of `k`)
            while pl < ahead.lines {
                prefetch(pl);
                pl += 1;
            }
        }
        // (unrolled by hand, as in `kernel`)
        macro_rules! finish_row {
            ($i:literal) => {
                if let Some(acc) = acc.get($i) {
                    for ((&acc, &out), step) in acc.iter().zip(&out).zip(steps) {
                        // SAFETY: as in `kernel`.
                        unsafe { finish_wide(acc, out.add($i * step.ldo), row + $i, step) };
                    }
                }
            };
        }
        finish_row!(0);
        finish_row!(1);
        finish_row!(2);
        finish_row!(3);
        finish_row!(4);
        finish_row!(5);
        finish_row!(6);
        finish_row!(7);
        finish_row!(8);
    }

    /// [`finish`] on one 16-lane accumulator (AVX-512F), the same additions in the same order.
    ///
    /// # Safety
    /// As [`finish`], on a CPU with AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn finish_wide(acc: __m512, out: *mut f32, row: usize, step: &Step) {
        let mask = ((1u32 << step.cols) - 1) as __mmask16;
        // SAFETY: masked loads and stores touch only the panel's real columns.
        unsafe {
            let load = |p: *const f32| {
                if step.full {
                    _mm512_loadu_ps(p)
                } else {
                    _mm512_maskz_loadu_ps(mask, p)
                }
            };
            let mut v = acc;
            if !step.first {
                v = _mm512_add_ps(v, load(out));
            }
            if step.last {
                v = _mm512_add_ps(v, _mm512_loadu_ps(step.bias.as_ptr()));
                if let Some(res) = step.residual {
                    let at = row * step.n + step.col;
                    v = _mm512_add_ps(v, load(res.as_ptr().wrapping_add(at)));
                }
                if step.silu {
                    v = crate::avx512::silu(v);
                }
            }
            if step.full {
                _mm512_storeu_ps(out, v);
            } else {
                _mm512_mask_storeu_ps(out, mask, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::values;

    /// `[m, n]` from a float64 triple loop over `a` `[m, k]` and `w` `[n, k]`.
    fn reference(a: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| a[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn products_match_a_float64_reference_on_awkward_shapes() {
        // Row and column counts around the 6 x 16 and 9 x 32 blocks (odd and even panel
        // counts, full and partial last panels), k around the 256 block, few and many rows
        // (tasks of rows and of panels).
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 17, 3),
            (7, 16, 256),
            (13, 33, 257),
            (81, 40, 600),
            (200, 24, 27),
            (3, 300, 64),
            (10, 20, 512),
            (17, 48, 80),
            (199, 40, 48),
        ] {
            let a = values(m * k, 1);
            let w = values(n * k, 2);
            let bias = values(n, 3);
            let residual = values(m * n, 4);
            let packed = Packed::from_out_in(&w, n, k);
            let want = reference(&a, &w, m, n, k);
            let tol = 1e-6 * k as f64;
            // The AVX2 kernel's results, which the AVX-512 one must equal bit for bit.
            let mut avx2_results = Vec::new();
            for (bias_on, res_on, silu, kernel) in [
                (false, false, false, Kernel::Portable),
                (true, true, false, Kernel::Portable),
                (true, false, true, Kernel::Portable),
                (false, false, false, Kernel::Avx2),
                (true, true, false, Kernel::Avx2),
                (true, false, true, Kernel::Avx2),
                (false, false, false, Kernel::Avx512),
                (true, true, false, Kernel::Avx512),
                (true, false, true, Kernel::Avx512),
            ] {
                let simd = kernel != Kernel::Portable;
                if (simd && !crate::has_avx2_fma())
                    || (kernel == Kernel::Avx512 && !crate::has_avx512f())
                {
                    continue;
                }
                let mut out = vec![f32::NAN; m * n];
                let epilogue = Epilogue {
                    bias: bias_on.then_some(&bias[..]),
                    residual: res_on.then_some(&residual[..]),
                    silu,
                };
                gemm_on(
                    &a,
                    &packed,
                    &mut out,
                    epilogue,
                    Input::Rows,
                    Layout::Rows,
                    kernel,
                );
                // `a` as panels of 16 columns (padding NaN: never read); with AVX2 bit for bit
                // the same where both cut `k` at the same places (one block, or blocks of a
                // multiple of 16); otherwise (and the portable path, which goes through `gemm`
                // 16 columns at a time) checked against the reference below. (The same with
                // AVX-512, whose kernel must also give the AVX2 kernel's values.)
                let mut a_panels = vec![f32::NAN; m * k.div_ceil(NR) * NR];
                for (i, row) in a.chunks_exact(k).enumerate() {
                    for (p, &v) in row.iter().enumerate() {
                        a_panels[(p / NR * m + i) * NR + p % NR] = v;
                    }
                }
                let mut from_panels = vec![f32::NAN; m * n];
                let (input, layout) = (Input::Panels, Layout::Rows);
                gemm_on(
                    &a_panels,
                    &packed,
                    &mut from_panels,
                    epilogue,
                    input,
                    layout,
                    kernel,
                );
                if simd && (k <= KC || k.div_ceil(k.div_ceil(KC)) % NR == 0) {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&from_panels),
                        bits(&out),
                        "[{m}, {n}, {k}] from panels"
                    );
                }
                // The panel layout (no residual there), back in rows, with panels of m
                // rows and with panels of m + 3 rows (the last 3 not written); the padding
                // columns must be zeros.
                let panels = n.div_ceil(NR);
                for stride in [m * NR, (m + 3) * NR] {
                    if res_on {
                        break;
                    }
                    let mut in_panels = vec![f32::NAN; (panels - 1) * stride + m * NR];
                    let layout = Layout::Panels { stride };
                    gemm_on(
                        &a,
                        &packed,
                        &mut in_panels,
                        epilogue,
                        Input::Rows,
                        layout,
                        kernel,
                    );
                    for (at, v) in in_panels.iter().enumerate() {
                        let (i, j) = ((at % stride) / NR, (at / stride) * NR + at % NR);
                        if i >= m {
                            assert!(v.is_nan(), "row {i} past m written");
                        } else if j < n {
                            assert_eq!(v.to_bits(), out[i * n + j].to_bits(), "panel layout");
                        } else {
                            assert_eq!(*v, 0.0, "padding column {j}");
                        }
                    }
                }
                // With AVX2, SiLU (in the epilogue on eight lanes, or with AVX-512F on sixteen
                // over the finished rows) is bit for bit the eight-lane SiLU of the product
                // without it.
                #[cfg(target_arch = "x86_64")]
                if simd && silu {
                    let mut plain = vec![f32::NAN; m * n];
                    let no_silu = Epilogue {
                        silu: false,
                        ..epilogue
                    };
                    let (input, layout) = (Input::Rows, Layout::Rows);
                    gemm_on(&a, &packed, &mut plain, no_silu, input, layout, kernel);
                    for (i, (&got, &x)) in out.iter().zip(&plain).enumerate() {
                        let mut lanes = [0.0f32; 8];
                        // SAFETY: the CPU has AVX2 and FMA (`simd`); `lanes` holds eight values.
                        unsafe {
                            use std::arch::x86_64::*;
                            let y = crate::avx2::silu(_mm256_set1_ps(x));
                            _mm256_storeu_ps(lanes.as_mut_ptr(), y);
                        }
                        assert_eq!(
                            got.to_bits(),
                            lanes[0].to_bits(),
                            "[{m}, {n}, {k}] SiLU {i}"
                        );
                    }
                }
                let both = out.iter().zip(&want).chain(from_panels.iter().zip(&want));
                for (idx, (&got, &x)) in both.enumerate() {
                    let idx = idx % (m * n);
                    let (i, j) = (idx / n, idx % n);
                    let mut x = x;
                    if bias_on {
                        x += bias[j] as f64;
                    }
                    if res_on {
                        x += residual[i * n + j] as f64;
                    }
                    if silu {
                        x /= 1.0 + (-x).exp();
                    }
                    assert!(
                        (got as f64 - x).abs() <= tol,
                        "[{m}, {n}, {k}] {kernel:?} ({i}, {j}): {got} vs {x}"
                    );
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                match kernel {
                    Kernel::Avx2 => avx2_results.push((bits(&out), bits(&from_panels))),
                    Kernel::Avx512 => {
                        let (rows, panels) = avx2_results.remove(0);
                        assert_eq!(bits(&out), rows, "[{m}, {n}, {k}] AVX-512 vs AVX2");
                        assert_eq!(bits(&from_panels), panels, "[{m}, {n}, {k}] from panels");
                    }
                    Kernel::Portable => {}
                }
            }
        }
    }

    #[test]
    fn row_scaling_scales_the_inner_dimension() {
        let (m, n, k) = (9, 20, 30);
        let a = values(m * k, 5);
        let w = values(n * k, 6);
        let scale = values(k, 7);
        let scaled_w: Vec<f32> = w
            .chunks_exact(k)
            .flat_map(|row| row.iter().zip(&scale).map(|(w, s)| w * s))
            .collect();
        let mut got = vec![0.0; m * n];
        let mut want = vec![0.0; m * n];
        // (into a reused buffer longer than needed, whose values must not matter)
        let packed = Packed::from_out_in(&w, n, k);
        let packed = packed.scale_rows_into(&scale, vec![f32::NAN; packed.storage_len() + 37]);
        gemm(&a, &packed, &mut got, Epilogue::default());
        gemm(
            &a,
            &Packed::from_out_in(&scaled_w, n, k),
            &mut want,
            Epilogue::default(),
        );
        assert_eq!(got, want);
    }
}
