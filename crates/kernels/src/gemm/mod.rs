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
/// The largest `a` a task of panels reads whole (once per pass over its panels): about
/// half a core's L2.
const CACHED_A_BYTES: usize = 1 << 20;
/// Products of fewer multiply-adds run on the calling thread (about 10 us: less than handing
/// tasks to the pool costs; e.g. the squeeze-excite products of the early blocks).
const SERIAL_MACS: usize = 1 << 17;
/// Weights of fewer values are packed on the calling thread.
const SERIAL_PACK: usize = 1 << 16;
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
        Self::from_out_in_strided(w, n, k, k)
    }

    /// [`Self::from_out_in`] with row `c` of the `[n, k]` weight at `w[c * stride..][..k]`
    /// (e.g. one attention head's keys inside the rows of all heads' queries, keys and values).
    pub fn from_out_in_strided(w: &[f32], n: usize, k: usize, stride: usize) -> Self {
        assert!(
            n == 0 || w.len() >= (n - 1) * stride + k,
            "weight is not n rows of k at the stride"
        );
        Self::pack(k, n, |panel, dst| {
            for c in 0..NR.min(n - panel * NR) {
                let row = &w[(panel * NR + c) * stride..][..k];
                for (p, &v) in row.iter().enumerate() {
                    dst[p * NR + c] = v;
                }
            }
        })
    }

    /// Packs `w` given as `[k, n]` row-major with row `p` at `w[p * stride..][..n]` (an `[in,
    /// out]` weight as burn's `Linear` holds it with `stride = n`; one attention head's
    /// values inside the rows of all heads').
    pub fn from_in_out_strided(w: &[f32], k: usize, n: usize, stride: usize) -> Self {
        assert!(
            k == 0 || w.len() >= (k - 1) * stride + n,
            "weight is not k rows of n at the stride"
        );
        Self::pack(k, n, |panel, dst| {
            let (col, cols) = (panel * NR, NR.min(n - panel * NR));
            for (p, dst) in dst.chunks_exact_mut(NR).enumerate() {
                dst[..cols].copy_from_slice(&w[p * stride + col..][..cols]);
            }
        })
    }

    /// The weights' columns side by side (`[k, n1 + n2 + ...]`: one product for layers that
    /// read the same input), each but the last a whole number of panels wide.
    pub fn side_by_side(parts: &[Packed]) -> Self {
        let k = parts.first().map_or(0, |p| p.k);
        assert!(parts.iter().all(|p| p.k == k), "parts differ in k");
        assert!(
            parts.iter().rev().skip(1).all(|p| p.n % NR == 0),
            "a part before the last is not a whole number of panels wide"
        );
        let data = parts
            .iter()
            .flat_map(|p| &p.data[..p.storage_len()])
            .copied()
            .collect();
        Self {
            data,
            k,
            n: parts.iter().map(|p| p.n).sum(),
        }
    }

    /// Fills the panels with `fill(panel, [k, 16] block)`, in parallel where the weight is
    /// large (an attention head's is packed inside a task of the pool).
    fn pack(k: usize, n: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Self {
        let mut data = vec![0.0; n.div_ceil(NR) * k * NR];
        if k > 0 {
            let chunks = data.chunks_mut(k * NR).enumerate();
            if n * k < SERIAL_PACK {
                chunks.for_each(|(panel, dst)| fill(panel, dst));
            } else {
                data.par_chunks_mut(k * NR)
                    .enumerate()
                    .for_each(|(panel, dst)| fill(panel, dst));
            }
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
                    if crate::cpu::has_avx2_fma() {
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

/// A weight for [`gemm_weight`]: packed for the float32 kernels, and where the CPU runs
/// the AMX products ([`amx`]: float32's accuracy, faster on many rows) also split for them.
#[derive(Debug, Clone)]
pub struct Weight {
    packed: Packed,
    #[cfg(target_arch = "x86_64")]
    split: Option<amx::Split>,
}

impl Weight {
    /// `packed`, and split where this CPU runs the AMX products.
    pub fn new(packed: Packed) -> Self {
        Self {
            #[cfg(target_arch = "x86_64")]
            split: amx::available().then(|| amx::Split::new(&packed)),
            packed,
        }
    }
}

/// The fewest rows [`gemm_weight`] hands to the AMX products: on fewer, each split weight
/// value serves too few rows to beat the float32 kernels (which read 4 bytes per weight
/// value where the split reads 6).
pub const AMX_ROWS: usize = 128;

/// `out[m, n] = a[m, k] · w` then `epilogue`, as [`gemm()`]: through the AMX products where
/// `w` was split for them and `a` has at least [`AMX_ROWS`] rows, else the float32 kernels;
/// `parts` is storage the AMX products split `a` into (grown as needed, reused across calls).
pub fn gemm_weight(
    a: &[f32],
    w: &Weight,
    out: &mut [f32],
    epilogue: Epilogue,
    parts: &mut Vec<u16>,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(split) = &w.split
        && w.packed.k > 0
        && a.len() >= AMX_ROWS * w.packed.k
    {
        return amx::gemm(a, split, out, epilogue, parts);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = parts;
    gemm(a, &w.packed, out, epilogue)
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
    /// `x = gelu(x)` (the exact one, [`crate::gelu_inplace`]'s); not with `silu`.
    pub gelu: bool,
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
        true,
    );
}

/// [`gemm()`] on the calling thread only: for small products inside tasks of the pool (an
/// attention head's).
pub fn gemm_serial(a: &[f32], w: &Packed, out: &mut [f32], epilogue: Epilogue) {
    let (input, layout, kernel) = (Input::Rows, Layout::Rows, Kernel::best());
    gemm_on(a, w, out, epilogue, input, layout, kernel, false);
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
        true,
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
        true,
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
        if crate::cpu::has_avx512f() {
            Kernel::Avx512
        } else if crate::cpu::has_avx2_fma() {
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

/// [`gemm()`] / [`gemm_panels`] / [`gemm_from_panels`] with `kernel` (one this CPU runs), on
/// rayon's pool if `parallel` (and the product is not small).
#[allow(clippy::too_many_arguments)]
fn gemm_on(
    a: &[f32],
    w: &Packed,
    out: &mut [f32],
    epilogue: Epilogue,
    input: Input,
    layout: Layout,
    kernel: Kernel,
    parallel: bool,
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
    assert!(!(epilogue.silu && epilogue.gelu), "two activations");
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
    // Tasks of rows when there are more rows than columns, or when `a` is too large to stay
    // in cache while a task passes over it once per panel (each task reads all of `w`);
    // else of panels (each task reads all of `a`).
    let (rows_per_task, panels_per_task) = if m >= n || m * k * 4 > CACHED_A_BYTES {
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
    if !parallel || m * n * k < SERIAL_MACS {
        (0..row_tiles * panel_groups).for_each(run);
    } else {
        (0..row_tiles * panel_groups).into_par_iter().for_each(run);
    }
}

struct SharedOut(*mut f32);
// SAFETY: only used to hand disjoint blocks of one buffer to rayon tasks.
unsafe impl Sync for SharedOut {}

/// One task: `rows` x the columns of `panels` with `kernel`: the AVX2 and AVX-512 ones ([`avx2`],
/// [`avx512`]), or (portable) the `gemm` crate panel by panel and the epilogue in a second
/// pass.
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
                    crate::activation::silu_inplace(row);
                }
                if epilogue.gelu {
                    crate::activation::gelu_inplace(&mut row[..real]);
                }
            }
        }
    }
}

/// The kernels' loop over a block of `kc` steps of `k`: `$steps!(t, n)` does `n` (4 or 1)
/// steps at offset `t` of the row pointers `$rows`, whose values of `k` come in groups of
/// 16, `$group` values apart (one group for the whole block where `$group` is 16: rows
/// given row-major). Four steps at a time, the row pointers moved on after each group:
/// per step the loop then costs little beyond its loads and multiply-adds (stepping the
/// row pointers every step made it ~29 instructions for 12 multiply-adds, near the front
/// end's limit; the offset computed from the step's index, half as fast).
#[cfg(target_arch = "x86_64")]
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

#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

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

    /// `a` (`[m, k]`) times `w` through `kernel`, rows in and out.
    fn row_product(
        a: &[f32],
        w: &Packed,
        m: usize,
        epilogue: Epilogue,
        kernel: Kernel,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; m * w.n];
        gemm_on(
            a,
            w,
            &mut out,
            epilogue,
            Input::Rows,
            Layout::Rows,
            kernel,
            true,
        );
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
                if (simd && !crate::cpu::has_avx2_fma())
                    || (kernel == Kernel::Avx512 && !crate::cpu::has_avx512f())
                {
                    continue;
                }
                let epilogue = Epilogue {
                    bias: bias_on.then_some(&bias[..]),
                    residual: res_on.then_some(&residual[..]),
                    silu,
                    gelu: false,
                };
                let out = row_product(&a, &packed, m, epilogue, kernel);
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
                    true,
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
                        true,
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
                    gemm_on(
                        &a, &packed, &mut plain, no_silu, input, layout, kernel, true,
                    );
                    for (i, (&got, &x)) in out.iter().zip(&plain).enumerate() {
                        let mut lanes = [0.0f32; 8];
                        // SAFETY: the CPU has AVX2 and FMA (`simd`); `lanes` holds eight values.
                        unsafe {
                            use std::arch::x86_64::*;
                            let y = crate::activation::avx2::silu(_mm256_set1_ps(x));
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
    fn gelu_in_the_epilogue_is_gelu_of_the_finished_product() {
        for (m, n, k) in [(13, 40, 24), (64, 48, 300), (1, 21, 7)] {
            let a = values(m * k, 1);
            let packed = Packed::from_out_in(&values(n * k, 2), n, k);
            let (bias, residual) = (values(n, 3), values(m * n, 4));
            for kernel in [Kernel::Portable, Kernel::Avx2, Kernel::Avx512] {
                if (kernel != Kernel::Portable && !crate::cpu::has_avx2_fma())
                    || (kernel == Kernel::Avx512 && !crate::cpu::has_avx512f())
                {
                    continue;
                }
                let epilogue = Epilogue {
                    bias: Some(&bias),
                    residual: Some(&residual),
                    ..Epilogue::default()
                };
                let mut want = row_product(&a, &packed, m, epilogue, kernel);
                crate::gelu_inplace(&mut want);
                let gelu = Epilogue {
                    gelu: true,
                    ..epilogue
                };
                let got = row_product(&a, &packed, m, gelu, kernel);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "[{m}, {n}, {k}] {kernel:?}");
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

    #[test]
    fn strided_packings_and_the_serial_product_equal_the_plain_ones() {
        // (an attention head: keys and values inside rows of three heads, 40 rows of 24)
        let (rows, k, n, stride) = (40, 24, 40, 72);
        let qkv = values(rows * stride, 8);
        let a = values(rows * k, 9);
        let keys: Vec<f32> = qkv
            .chunks_exact(stride)
            .flat_map(|r| &r[24..48])
            .copied()
            .collect();
        let mut want = vec![0.0; rows * n];
        gemm(
            &a,
            &Packed::from_out_in(&keys, n, k),
            &mut want,
            Epilogue::default(),
        );
        let mut got = vec![0.0; rows * n];
        let strided = Packed::from_out_in_strided(&qkv[24..], n, k, stride);
        gemm_serial(&a, &strided, &mut got, Epilogue::default());
        assert_eq!(got, want);
        // [in, out] = the transpose of [out, in]
        let (k, n) = (rows, 24);
        let a = values(7 * k, 10);
        let values_t: Vec<f32> = (0..n * k)
            .map(|i| qkv[(i % k) * stride + 48 + i / k])
            .collect();
        let mut want = vec![0.0; 7 * n];
        gemm(
            &a,
            &Packed::from_out_in(&values_t, n, k),
            &mut want,
            Epilogue::default(),
        );
        let mut got = vec![0.0; 7 * n];
        gemm(
            &a,
            &Packed::from_in_out_strided(&qkv[48..], k, n, stride),
            &mut got,
            Epilogue::default(),
        );
        assert_eq!(got, want);
    }

    #[test]
    fn weights_side_by_side_equal_the_joined_weight() {
        let (k, n1, n2) = (30, 32, 21);
        let (w1, w2) = (values(k * n1, 11), values(k * n2, 12));
        let joined: Vec<f32> = (0..k)
            .flat_map(|p| w1[p * n1..][..n1].iter().chain(&w2[p * n2..][..n2]))
            .copied()
            .collect();
        let parts = [
            Packed::from_in_out_strided(&w1, k, n1, n1),
            Packed::from_in_out_strided(&w2, k, n2, n2),
        ];
        let n = n1 + n2;
        let a = values(5 * k, 13);
        let mut want = vec![0.0; 5 * n];
        let whole = Packed::from_in_out_strided(&joined, k, n, n);
        gemm(&a, &whole, &mut want, Epilogue::default());
        let mut got = vec![0.0; 5 * n];
        gemm(
            &a,
            &Packed::side_by_side(&parts),
            &mut got,
            Epilogue::default(),
        );
        assert_eq!(got, want);
    }
}
