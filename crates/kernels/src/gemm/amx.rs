//! Float32 matrix products on AMX tiles (AMX-BF16), as accurate as float32's own: each
//! operand is split into three bfloat16 parts (`x = hi + mid + lo`, exact), and the product
//! is the sum of the six part products down to `2^-16` of the leading one (`hi·hi`, `hi·mid`,
//! `mid·hi`, `hi·lo`, `lo·hi`, `mid·mid`), each bfloat16 product exact in the tiles' float32
//! sums (Henry, Tang & Heinecke, "Leveraging the bfloat16 Artificial Intelligence Datatype
//! For Higher-Precision Computations", 2019: "bf16x6"). A tile multiply-add does 16 x 16 x 32
//! of them in 16 cycles, sixteen times a core's float32 rate with AVX-512.
//!
//! `out[m, n] = a[m, k] · w[k, n]` with `w` a [`Split`] weight (split once, at load) and `a`
//! split per call into a buffer of the caller's (its rows an odd number of cache lines
//! apart); `k` in chunks of 768, whose sums are carried in the output; per task (a tile of
//! rows small enough that its part of `a` stays in L2, and a range of columns), per pair of
//! panels (the next pair fetched into L2 meanwhile), every block of 32 rows in four
//! accumulator tiles, fourteen tile loads per 24 multiply-adds; each block is finished by
//! the [`Epilogue`] on the vector units while the tiles multiply the next one (its output
//! rows fetched ahead). On align-base's text shapes (2048 rows) 1.1 to 1.5 times the float32
//! kernels' rate (`cargo bench -p kernels --bench products -- text_products`): the tiles wait
//! on L2.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::{Epilogue, NR, Packed, SharedOut};

/// bfloat16 parts per operand.
const PARTS: usize = 3;
/// Rows and columns of a tile of float32 sums; `k` per tile step is 32.
const T: usize = 16;
/// `k` per tile step.
const TK: usize = 32;
/// Rows (and columns) of the output block in four accumulator tiles.
const B: usize = 2 * T;
/// The most bytes of `a`'s parts a task reads (whole, once per pair of panels): they stay in
/// L2 while the panels pass.
const TASK_A_BYTES: usize = 1 << 20;
/// The most row blocks of a task.
const TASK_BLOCKS: usize = 8;
/// The largest chunk of `k` (a multiple of 32).
const KC: usize = 768;
/// Products of fewer multiply-adds run on the calling thread.
const SERIAL_MACS: usize = 1 << 17;

/// Whether this CPU runs the AMX kernel (AMX-TILE, AMX-BF16, AVX512-BW and AVX512-BF16, and
/// Linux has granted this process the tile state; `ALIGN_KERNELS` caps below `amx` turn it
/// off).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if !crate::cpu::allows_amx()
            || !crate::cpu::has_avx512f()
            || !std::arch::is_x86_feature_detected!("avx512bw")
            || !std::arch::is_x86_feature_detected!("avx512bf16")
        {
            return false;
        }
        // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
        let edx = __cpuid_count(7, 0).edx;
        edx & (1 << 22) != 0 && edx & (1 << 24) != 0 && request_tile_state()
    })
}

/// Asks Linux for the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`),
/// without which the first tile instruction faults.
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call; it fails on kernels without AMX support.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// A `[k, n]` weight split for [`gemm`]: per chunk of `k` (of [`KC`], the last shorter),
/// each panel of 16 columns as `[PARTS, kc / 2, 16, 2]` (rows `2i` and `2i + 1` side by side
/// in each column: AMX's layout for the right operand), the panels in pairs (the last one's
/// partner zero), `k` padded with zeros to a multiple of 32.
#[derive(Debug, Clone)]
pub struct Split {
    data: Vec<u16>,
    k: usize,
    kp: usize,
    n: usize,
    panels: usize,
}

impl Split {
    /// Splits a float32 weight packed for the other kernels.
    ///
    /// # Panics
    /// If [`available`] is false.
    pub fn new(w: &Packed) -> Self {
        assert!(available(), "the AMX kernel on a CPU without it");
        let (k, n) = (w.k, w.n);
        let kp = k.div_ceil(TK) * TK;
        let panels = n.div_ceil(B) * 2;
        let mut data = vec![0u16; panels * PARTS * kp * NR];
        let mut dsts = Vec::with_capacity(panels * kp.div_ceil(KC));
        let mut rest = &mut data[..];
        for k0 in (0..kp).step_by(KC) {
            for _ in 0..panels {
                let (dst, tail) = rest.split_at_mut(PARTS * KC.min(kp - k0) * NR);
                dsts.push(dst);
                rest = tail;
            }
        }
        dsts.into_par_iter().enumerate().for_each(|(i, dst)| {
            let (c, panel) = (i / panels, i % panels);
            let (k0, k1) = (c * KC, k.min((c + 1) * KC));
            if panel < n.div_ceil(NR) {
                let src = &w.data[panel * k * NR..][k0 * NR..k1 * NR];
                // SAFETY: `available` checked AVX512-BW and AVX512-BF16.
                unsafe { split_panel(src, k1 - k0, dst) }
            }
        });
        Self {
            data,
            k,
            kp,
            n,
            panels,
        }
    }
}

/// `out = a · w` then `epilogue`, as [`super::gemm()`] (`a` and `out` row-major), on
/// rayon's pool; `parts` is storage for `a`'s parts, grown as needed and reused across
/// calls. Deterministic: each value is summed in the same order whatever the split.
///
/// # Panics
/// If [`available`] is false, or the shapes disagree.
pub fn gemm(a: &[f32], w: &Split, out: &mut [f32], epilogue: Epilogue, parts: &mut Vec<u16>) {
    assert!(available(), "the AMX kernel on a CPU without it");
    let (k, n, kp) = (w.k, w.n, w.kp);
    let m = a
        .len()
        .checked_div(k)
        .unwrap_or(out.len().checked_div(n).unwrap_or(0));
    assert_eq!(a.len(), m * k, "a is not [m, k]");
    assert_eq!(out.len(), m * n, "out is not [m, n]");
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
    let mp = m.div_ceil(B) * B;
    let row = row_len(kp);
    let panels = w.panels;
    if parts.len() < mp * row {
        parts.resize(mp * row, 0);
    }
    let parts = &mut parts[..mp * row];
    let serial = m * n * k < SERIAL_MACS;
    let split_w = &w.data[..];
    // (row `i`'s parts side by side, the padding zero)
    let split = |(i, dst): (usize, &mut [u16])| {
        let row = a.get(i * k..(i + 1) * k).unwrap_or(&[]);
        // SAFETY: `available` checked AVX512-BF16.
        unsafe { split_row(row, &mut dst[..PARTS * kp]) }
    };
    if serial {
        parts.chunks_mut(row).enumerate().for_each(split);
    } else {
        parts.par_chunks_mut(row).enumerate().for_each(split);
    }
    let parts = &*parts;
    let row_blocks = mp / B;
    let col_blocks = n.div_ceil(B);
    let threads = rayon::current_num_threads().max(1);
    let fit = (TASK_A_BYTES / (B * PARTS * KC.min(kp) * 2)).clamp(1, TASK_BLOCKS);
    let rows_per_task = fit.min(row_blocks.div_ceil(threads)).max(1);
    let row_tasks = row_blocks.div_ceil(rows_per_task);
    let cols_per_task = col_blocks
        .div_ceil((4 * threads).div_ceil(row_tasks))
        .max(1);
    let col_tasks = col_blocks.div_ceil(cols_per_task);
    let out = SharedOut(out.as_mut_ptr());
    // `k` in chunks, each product's sums carried to the next in `out` (the epilogue on the
    // last): a task's rows of `a` in L2, whatever `k`.
    let chunks = kp.div_ceil(KC);
    for c in 0..chunks {
        let k0 = c * KC;
        let chunk = Chunk {
            k0,
            kc: KC.min(kp - k0),
            first: c == 0,
            last: c + 1 == chunks,
        };
        let run = |t: usize| {
            let (rt, ct) = (t / col_tasks, t % col_tasks);
            let rows = rt * rows_per_task..row_blocks.min((rt + 1) * rows_per_task);
            let cols = ct * cols_per_task..col_blocks.min((ct + 1) * cols_per_task);
            let out = &out;
            // SAFETY: tasks write disjoint blocks of `out` (`m * n`, checked); AMX available.
            let w = &split_w[panels * PARTS * NR * k0..][..panels * PARTS * NR * chunk.kc];
            unsafe { task(parts, kp, chunk, w, m, n, out.0, rows, cols, epilogue) };
        };
        if serial {
            (0..row_tasks * col_tasks).for_each(run);
        } else {
            (0..row_tasks * col_tasks).into_par_iter().for_each(run);
        }
    }
}

/// Values of a row of `a`'s parts: its `PARTS` parts of `kp`, then 32 unused (rows an odd
/// number of cache lines apart: a tile's 16 rows fall in distinct sets of L1, where whole
/// multiples of 4 KiB put them in two).
fn row_len(kp: usize) -> usize {
    PARTS * kp + TK
}

/// A chunk of `k`: `kc` values (a multiple of 32) from `k0`.
#[derive(Clone, Copy)]
struct Chunk {
    k0: usize,
    kc: usize,
    /// The sums start at zero (else from the output).
    first: bool,
    /// The epilogue follows (else the sums are stored as they are).
    last: bool,
}

/// 32 values (`x[0]` then `x[1]`) as `PARTS` vectors of 32 bfloat16, `x = hi + mid + lo`:
/// each part the nearest bfloat16 (ties to even) to what the parts before it left; exact
/// where no part falls below bfloat16's normal range (flushed to zero there, as the tiles
/// read it).
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn split32(mut x: [__m512; 2]) -> [__m512i; PARTS] {
    std::array::from_fn(|part| {
        // SAFETY: a bf16 vector is 32 u16 lanes.
        let bits: __m512i = unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(x[1], x[0])) };
        if part + 1 < PARTS {
            let halves = [
                _mm512_castsi512_si256(bits),
                _mm512_extracti64x4_epi64::<1>(bits),
            ];
            for (x, half) in x.iter_mut().zip(halves) {
                let back = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(half));
                *x = _mm512_sub_ps(*x, _mm512_castsi512_ps(back));
            }
        }
        bits
    })
}

/// Splits `row` into `parts`, `[PARTS, kp]` (`kp` at least the row's length: the rest is
/// zero).
///
/// # Safety
/// The CPU has AVX-512F and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn split_row(row: &[f32], parts: &mut [u16]) {
    let kp = parts.len() / PARTS;
    for p in (0..kp).step_by(TK) {
        let load = |from: usize| {
            let n = row.len().saturating_sub(from).min(16);
            // SAFETY: the mask keeps the load inside `row`.
            unsafe {
                _mm512_maskz_loadu_ps(
                    ((1u32 << n) - 1) as __mmask16,
                    row.as_ptr().add(from.min(row.len())),
                )
            }
        };
        for (part, bits) in split32([load(p), load(p + 16)]).into_iter().enumerate() {
            // SAFETY: `p + 32 <= kp`.
            unsafe { _mm512_storeu_si512(parts.as_mut_ptr().add(part * kp + p).cast(), bits) };
        }
    }
}

/// Splits the `[k, 16]` float32 panel `panel` into `parts`, `[PARTS, kp / 2, 16, 2]`: rows
/// `2i` and `2i + 1` side by side in each column (AMX's layout for the right operand), the
/// rows from `k` to `kp` zero.
///
/// # Safety
/// The CPU has AVX-512F, AVX512-BW and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn split_panel(panel: &[f32], k: usize, parts: &mut [u16]) {
    let kp = parts.len() / PARTS / NR;
    // (lane 2c from row 2i's column c, lane 2c + 1 from row 2i + 1's)
    let pairs = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    for i in 0..kp / 2 {
        let row = |p: usize| {
            if p < k {
                // SAFETY: row `p < k` of the panel.
                unsafe { _mm512_loadu_ps(panel.as_ptr().add(p * NR)) }
            } else {
                _mm512_setzero_ps()
            }
        };
        for (part, bits) in split32([row(2 * i), row(2 * i + 1)])
            .into_iter()
            .enumerate()
        {
            let interleaved = _mm512_permutexvar_epi16(pairs, bits);
            // SAFETY: `i < kp / 2`.
            unsafe {
                let dst = parts.as_mut_ptr().add((part * kp / 2 + i) * 2 * NR);
                _mm512_storeu_si512(dst.cast(), interleaved)
            };
        }
    }
}

/// The tile configuration: palette 1, tiles 0-7 all 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    const fn new() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = T as u8;
            t += 1;
        }
        Self(c)
    }
}

static CONFIG: TileConfig = TileConfig::new();

/// The blocks `rows` x `cols` (in blocks of 32) of the output: per column block, every row
/// block over the whole of `k`, in tiles 0-3 (sums), 4-5 (`a`), 6-7 (`w`).
///
/// # Safety
/// AMX is [`available`]; `out` is the `[m, n]` output, of which this task alone writes
/// these blocks; `parts` holds `a`'s rows of parts ([`row_len`]).
#[allow(clippy::too_many_arguments)]
unsafe fn task(
    parts: &[u16],
    kp: usize,
    chunk: Chunk,
    w: &[u16],
    m: usize,
    n: usize,
    out: *mut f32,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    epilogue: Epilogue,
) {
    let Chunk {
        k0,
        kc,
        first,
        last,
    } = chunk;
    let lda = row_len(kp) * 2;
    let steps = kc / TK;
    let epilogue = if last { epilogue } else { Epilogue::default() };
    // Rows of the previous block finished per step of `k` of the next one: its epilogue
    // runs on the vector units while the tiles multiply (and long after its tiles were
    // stored: reading values just stored from tiles stalls).
    let rows_per_step = B.div_ceil(steps);
    // Two blocks of sums: the one being stored, the previous one being finished.
    let (mut stored, mut finishing) = ([0f32; B * B], [0f32; B * B]);
    let mut pending: Option<Block> = None;
    // SAFETY: the configuration is valid; released below.
    unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack)) };
    let panel_len = PARTS * kc * NR;
    let block = |rb: usize, cb: usize| Block {
        r0: rb * B,
        c0: cb * B,
        h: B.min(m - rb * B),
        w: B.min(n - cb * B),
    };
    for cb in cols.clone() {
        let b = |part: usize| {
            let p = w[2 * cb * panel_len + part * kc * NR..].as_ptr();
            [p, p.wrapping_add(panel_len)]
        };
        let bp: [_; PARTS] = std::array::from_fn(b);
        // The next column block's panels, fetched into L2 over this one's steps.
        let next = w
            .get(2 * (cb + 1) * panel_len..(2 * cb + 4) * panel_len)
            .unwrap_or(&[]);
        let lines_per_step = (next.len() / 32).div_ceil(rows.len() * steps);
        let mut line = 0;
        for rb in rows.clone() {
            let a = |part: usize| {
                let p = parts[rb * B * row_len(kp) + part * kp + k0..].as_ptr();
                [p, p.wrapping_add(T * row_len(kp))]
            };
            let ap: [_; PARTS] = std::array::from_fn(a);
            let current = block(rb, cb);
            // The block whose rows of the output to fetch: this one's, for its epilogue
            // (the first chunk); else the next one's, for its sums so far (and then its
            // epilogue).
            let fetched = if first {
                Some(current)
            } else if rb + 1 < rows.end {
                Some(block(rb + 1, cb))
            } else if cb + 1 < cols.end {
                Some(block(rows.start, cb + 1))
            } else {
                None
            };
            // SAFETY: the tiles read whole steps inside `parts` and the panels; the block's
            // sums so far inside `out` (a whole block) or `stored`.
            unsafe {
                if first {
                    asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack)
                    );
                } else if current.h == B && current.w == B {
                    load_sums(out.add(current.r0 * n + current.c0), n);
                } else {
                    stored.fill(0.0);
                    for i in 0..current.h {
                        let row = std::slice::from_raw_parts(
                            out.add((current.r0 + i) * n + current.c0),
                            current.w,
                        );
                        stored[i * B..][..current.w].copy_from_slice(row);
                    }
                    load_sums(stored.as_ptr(), B);
                }
                for step in 0..steps {
                    let s = step * TK;
                    let a = ap.map(|[top, bottom]| [top.add(s), bottom.add(s)]);
                    let w = bp.map(|[left, right]| [left.add(s * T), right.add(s * T)]);
                    multiply_step(a, w, lda);
                    for _ in 0..lines_per_step {
                        if let Some(v) = next.get(line * 32) {
                            _mm_prefetch::<_MM_HINT_T1>((v as *const u16).cast());
                        }
                        line += 1;
                    }
                    let row0 = step * rows_per_step;
                    let these = row0..row0 + rows_per_step;
                    if let Some(block) = &pending {
                        block.finish(&finishing, these.clone(), out, n, epilogue);
                    }
                    if let Some(block) = &fetched {
                        block.fetch(these, out, n, epilogue);
                    }
                }
                store(stored.as_mut_ptr(), B);
            }
            pending = Some(current);
            std::mem::swap(&mut stored, &mut finishing);
        }
    }
    if let Some(block) = &pending {
        // SAFETY: as above.
        unsafe { block.finish(&finishing, 0..B, out, n, epilogue) };
    }
    // SAFETY: the tiles are done.
    unsafe { asm!("tilerelease", options(nostack)) };
}

/// One step of `k` (32 values) of the six products into the four sums (tiles 0-3), in the
/// order that reloads least: `mid·mid` (`a`'s part in tiles 4-5, `w`'s in 6-7), `hi·mid`,
/// `hi·lo`, `hi·hi`, `mid·hi`, `lo·hi`, each replacing one operand: fourteen tile loads per
/// 24 multiply-adds. `a` holds each part's rows 0-15 and 16-31 (`lda` bytes apart), `w`
/// each part's two panels.
#[inline(always)]
unsafe fn multiply_step(a: [[*const u16; 2]; PARTS], w: [[*const u16; 2]; PARTS], lda: usize) {
    let [hi, mid, lo] = [0, 1, 2];
    // SAFETY: the caller's (tiles configured; the steps inside `a`'s parts and the panels).
    unsafe {
        asm!(
            "tileloadd tmm4, [{am0} + {lda}*1]",
            "tileloadd tmm5, [{am1} + {lda}*1]",
            "tileloadd tmm6, [{wm0} + {s64}*1]",
            "tileloadd tmm7, [{wm1} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm4, [{ah0} + {lda}*1]",
            "tileloadd tmm5, [{ah1} + {lda}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm6, [{wl0} + {s64}*1]",
            "tileloadd tmm7, [{wl1} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            am0 = in(reg) a[mid][0], am1 = in(reg) a[mid][1],
            ah0 = in(reg) a[hi][0], ah1 = in(reg) a[hi][1],
            wm0 = in(reg) w[mid][0], wm1 = in(reg) w[mid][1],
            wl0 = in(reg) w[lo][0], wl1 = in(reg) w[lo][1],
            lda = in(reg) lda, s64 = in(reg) 64usize,
            options(nostack, readonly),
        );
        asm!(
            "tileloadd tmm6, [{wh0} + {s64}*1]",
            "tileloadd tmm7, [{wh1} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm4, [{am0} + {lda}*1]",
            "tileloadd tmm5, [{am1} + {lda}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm4, [{al0} + {lda}*1]",
            "tileloadd tmm5, [{al1} + {lda}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            am0 = in(reg) a[mid][0], am1 = in(reg) a[mid][1],
            al0 = in(reg) a[lo][0], al1 = in(reg) a[lo][1],
            wh0 = in(reg) w[hi][0], wh1 = in(reg) w[hi][1],
            lda = in(reg) lda, s64 = in(reg) 64usize,
            options(nostack, readonly),
        );
    }
}

/// The four sums from 32 rows of 32 at `src`, `ld` values apart.
#[inline(always)]
unsafe fn load_sums(src: *const f32, ld: usize) {
    let stride = ld * 4;
    // SAFETY: the caller's.
    unsafe {
        asm!(
            "tileloadd tmm0, [{a} + {s}*1]",
            "tileloadd tmm1, [{b} + {s}*1]",
            "tileloadd tmm2, [{c} + {s}*1]",
            "tileloadd tmm3, [{d} + {s}*1]",
            a = in(reg) src, b = in(reg) src.add(T), c = in(reg) src.add(T * ld),
            d = in(reg) src.add(T * ld + T), s = in(reg) stride,
            options(nostack, readonly),
        )
    }
}

/// The four sums into 32 rows of 32 at `dst`, `ld` values apart.
#[inline(always)]
unsafe fn store(dst: *mut f32, ld: usize) {
    let stride = ld * 4;
    // SAFETY: the caller's.
    unsafe {
        asm!(
            "tilestored [{a} + {s}*1], tmm0",
            "tilestored [{b} + {s}*1], tmm1",
            "tilestored [{c} + {s}*1], tmm2",
            "tilestored [{d} + {s}*1], tmm3",
            a = in(reg) dst, b = in(reg) dst.add(T), c = in(reg) dst.add(T * ld),
            d = in(reg) dst.add(T * ld + T), s = in(reg) stride,
            options(nostack),
        )
    }
}

/// A block of the output.
#[derive(Clone, Copy)]
struct Block {
    /// Its first row and column.
    r0: usize,
    c0: usize,
    /// Its rows and columns inside the output.
    h: usize,
    w: usize,
}

impl Block {
    /// Starts fetching rows `rows` of the block's output and residual into L1 (its epilogue
    /// runs while the next block multiplies: whole rows of the output apart, they would
    /// otherwise come from memory one miss at a time).
    #[inline]
    fn fetch(&self, rows: std::ops::Range<usize>, out: *mut f32, n: usize, epilogue: Epilogue) {
        for i in rows.start.min(self.h)..rows.end.min(self.h) {
            let at = (self.r0 + i) * n + self.c0;
            for j in (0..self.w).step_by(16) {
                // SAFETY: hints, at addresses inside the output and the residual.
                unsafe {
                    _mm_prefetch::<_MM_HINT_ET0>(out.wrapping_add(at + j).cast());
                    if let Some(res) = epilogue.residual {
                        _mm_prefetch::<_MM_HINT_T0>(res.as_ptr().add(at + j).cast());
                    }
                }
            }
        }
    }

    /// Rows `rows` (those inside the output) of the block from `sums` (`[32, 32]`) into
    /// `out` (`[m, n]`) through the epilogue.
    ///
    /// # Safety
    /// The block of `out` is the caller's to write; the CPU has AVX-512F.
    #[inline]
    unsafe fn finish(
        &self,
        sums: &[f32; B * B],
        rows: std::ops::Range<usize>,
        out: *mut f32,
        n: usize,
        epilogue: Epilogue,
    ) {
        for i in rows.start.min(self.h)..rows.end.min(self.h) {
            let r = self.r0 + i;
            // SAFETY: row `r`, columns `c0..c0 + w` are the caller's.
            let row = unsafe { std::slice::from_raw_parts_mut(out.add(r * n + self.c0), self.w) };
            // SAFETY: the caller's.
            unsafe { finish(row, &sums[i * B..][..self.w], r, self.c0, n, epilogue) };
        }
    }
}

/// `row = sums` through the epilogue, for part of row `i` of the output from column `c0`
/// (compiled for AVX-512: sixteen lanes per add).
#[target_feature(enable = "avx512f")]
fn finish(row: &mut [f32], sums: &[f32], i: usize, c0: usize, n: usize, epilogue: Epilogue) {
    row.copy_from_slice(sums);
    if let Some(bias) = epilogue.bias {
        row.iter_mut().zip(&bias[c0..]).for_each(|(v, b)| *v += b);
    }
    if let Some(res) = epilogue.residual {
        row.iter_mut()
            .zip(&res[i * n + c0..])
            .for_each(|(v, r)| *v += r);
    }
    if epilogue.silu {
        crate::activation::silu_inplace(row);
    }
    if epilogue.gelu {
        crate::activation::gelu_inplace(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::values;

    #[test]
    fn split_is_exact_for_normal_values() {
        if !available() {
            eprintln!("no AMX on this machine: skipped");
            return;
        }
        let mut x = values(1024, 7);
        x[..4].copy_from_slice(&[1.0, -3.5e-3, 1234.567, 1.0 + f32::EPSILON]);
        for chunk in x.chunks_exact(32) {
            // SAFETY: AMX implies AVX-512F and AVX512-BF16 (`available`).
            let parts: [[u16; 32]; PARTS] = unsafe {
                split32([
                    _mm512_loadu_ps(chunk.as_ptr()),
                    _mm512_loadu_ps(chunk.as_ptr().add(16)),
                ])
                .map(|v| std::mem::transmute(v))
            };
            for (i, &x) in chunk.iter().enumerate() {
                let sum: f64 = parts
                    .iter()
                    .map(|p| f32::from_bits((p[i] as u32) << 16) as f64)
                    .sum();
                assert_eq!(sum, x as f64, "{x}");
            }
        }
    }

    /// Against a float64 reference, on shapes around the 32 x 32 blocks, the 32-step of `k`,
    /// odd panel counts and chunks of `k`, with each epilogue: within the bound the float32 kernels' own
    /// results meet (float32 rounding of sums of `k` terms).
    #[test]
    fn products_are_as_accurate_as_float32() {
        if !available() {
            eprintln!("no AMX on this machine: skipped");
            return;
        }
        let mut parts = Vec::new();
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 17, 3),
            (32, 32, 32),
            (33, 48, 31),
            (64, 96, 768),
            (100, 70, 300),
            (300, 2304, 64),
            (40, 50, 1600),
        ] {
            let a = values(m * k, 1);
            let w = values(n * k, 2);
            let bias = values(n, 3);
            let residual = values(m * n, 4);
            let packed = Packed::from_out_in(&w, n, k);
            for (bias_on, res_on, gelu) in [
                (false, false, false),
                (true, true, false),
                (true, false, true),
            ] {
                let epilogue = Epilogue {
                    bias: bias_on.then_some(&bias[..]),
                    residual: res_on.then_some(&residual[..]),
                    silu: false,
                    gelu,
                };
                let mut out = vec![f32::NAN; m * n];
                gemm(&a, &Split::new(&packed), &mut out, epilogue, &mut parts);
                let mut f32_out = vec![f32::NAN; m * n];
                super::super::gemm(&a, &packed, &mut f32_out, epilogue);
                for i in 0..m {
                    for j in 0..n {
                        let terms = (0..k).map(|p| a[i * k + p] as f64 * w[j * k + p] as f64);
                        let b = if bias_on { bias[j] as f64 } else { 0.0 };
                        let r = if res_on {
                            residual[i * n + j] as f64
                        } else {
                            0.0
                        };
                        let scale: f64 =
                            terms.clone().map(f64::abs).sum::<f64>() + b.abs() + r.abs();
                        let x = terms.sum::<f64>() + b + r;
                        let tol = (scale + x.abs()) * (k as f64).sqrt() * f64::from(f32::EPSILON);
                        let (got, f32_got) = (out[i * n + j] as f64, f32_out[i * n + j] as f64);
                        if gelu {
                            // (GELU changes values by at most its slope, below 1.13)
                            assert!(
                                (got - f32_got).abs() <= 2.0 * tol,
                                "[{m}, {n}, {k}] ({i}, {j}) GELU: {got} vs {f32_got}"
                            );
                        } else {
                            assert!(
                                (f32_got - x).abs() <= tol,
                                "float32 [{m}, {n}, {k}] ({i}, {j}): {f32_got} vs {x}"
                            );
                            assert!(
                                (got - x).abs() <= tol,
                                "[{m}, {n}, {k}] ({i}, {j}): {got} vs {x}"
                            );
                        }
                    }
                }
            }
        }
    }
}
