//! The products' register kernel on AVX-512F (driven by [`super::avx2::task`]).

use std::arch::x86_64::*;

use super::NR;
use super::avx2::{Ahead, Step};
/// `avx2::kernel` on AVX-512F: `R` rows (`R <= MR_WIDE`) of `P` panels (1 to 3) over one
/// block of `kc` steps of `k`, one 16-lane accumulator per row and panel, `a` broadcast by
/// the multiply-adds' memory operand. Each lane does the multiply-adds of `avx2::kernel` in
/// the same order, and [`finish_wide`] `avx2::finish`'s additions, so the values are the same bit
/// for bit. `b` holds the first panel's `[kc, 16]` block, each next panel's `apart` values
/// after the one before (a panel's length); `out[j]` and `steps[j]` are panel `j`'s. Also
/// prefetches `ahead` (the next pass's weights, its panels also `apart` values apart), a
/// line per panel every four steps of `k`.
///
/// # Safety
/// As `avx2::kernel`, on a CPU with AVX-512F; `ahead`'s lines lie inside one allocation.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn kernel_wide<const R: usize, const P: usize>(
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

/// `avx2::finish` on one 16-lane accumulator (AVX-512F), the same additions in the same order.
///
/// # Safety
/// As `avx2::finish`, on a CPU with AVX-512F.
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
                v = crate::activation::avx512::silu(v);
            }
        }
        if step.full {
            _mm512_storeu_ps(out, v);
        } else {
            _mm512_mask_storeu_ps(out, mask, v);
        }
    }
}
