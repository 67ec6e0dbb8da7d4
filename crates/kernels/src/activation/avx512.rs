//! [`super::avx2`]'s SiLU on sixteen lanes, for kernels that keep sixteen lanes in registers or apply
//! it to what they have just stored: the same operations in the same order on each lane, so
//! the same values bit for bit (checked over all 2^32 inputs; unit-tested in [`super`]). Faster per
//! value than the 8-lane version even on CPUs that run a 16-lane operation as two 8-lane
//! halves: half the instructions to issue.

use std::arch::x86_64::*;

/// `x / (1 + e^-x)` on `N` vectors of sixteen lanes, each step for all of them before the
/// next: `avx2::silu_n` lane for lane (`e^-x` as `avx2::exp_in_range::<true, N>`, the
/// table of `2^(j/8)` held twice so that a 16-lane permute by `n mod 16` reads entry
/// `n mod 8`).
#[inline]
#[target_feature(enable = "avx512f")]
fn silu_n<const N: usize>(x: [__m512; N]) -> [__m512; N] {
    let x = x.map(|x| _mm512_max_ps(_mm512_set1_ps(-88.0), x));
    let xc = x.map(|x| _mm512_min_ps(x, _mm512_set1_ps(87.0)));
    let round = _mm512_set1_ps(12_582_912.0);
    let log2e8 = _mm512_set1_ps(8.0 * std::f32::consts::LOG2_E);
    let t = xc.map(|x| _mm512_fnmadd_ps(x, log2e8, round));
    let n = t.map(|t| _mm512_sub_ps(t, round));
    let (hi, lo) = (_mm512_set1_ps(0.086_639_404), _mm512_set1_ps(3.993_273e-6));
    let r: [__m512; N] = std::array::from_fn(|i| _mm512_fmadd_ps(n[i], hi, xc[i]));
    let r: [__m512; N] = std::array::from_fn(|i| _mm512_fmadd_ps(n[i], lo, r[i]));
    let r2 = r.map(|r| _mm512_mul_ps(r, r));
    let (one, sixth, half) = (
        _mm512_set1_ps(1.0),
        _mm512_set1_ps(1.0 / 6.0),
        _mm512_set1_ps(0.5),
    );
    let low = r.map(|r| _mm512_sub_ps(one, r));
    let high = r.map(|r| _mm512_fnmadd_ps(r, sixth, half));
    let high: [__m512; N] =
        std::array::from_fn(|i| _mm512_fmadd_ps(r2[i], _mm512_set1_ps(1.0 / 24.0), high[i]));
    let p: [__m512; N] = std::array::from_fn(|i| _mm512_fmadd_ps(high[i], r2[i], low[i]));
    let n = t.map(|t| _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B40_0000)));
    let e = super::EXP2_EIGHTHS;
    let table = _mm512_setr_ps(
        e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[0], e[1], e[2], e[3], e[4], e[5], e[6],
        e[7],
    );
    let fraction = n.map(|n| _mm512_castps_si512(_mm512_permutexvar_ps(n, table)));
    let scale: [__m512i; N] = std::array::from_fn(|i| {
        _mm512_add_epi32(
            fraction[i],
            _mm512_slli_epi32::<23>(_mm512_srai_epi32::<3>(n[i])),
        )
    });
    std::array::from_fn(|i| {
        let e = _mm512_mul_ps(p[i], _mm512_castsi512_ps(scale[i]));
        _mm512_div_ps(x[i], _mm512_add_ps(one, e))
    })
}

/// `x / (1 + e^-x)` on sixteen lanes, for kernels that keep their values in registers.
///
/// # Safety
/// The CPU must have AVX-512F (callable without `unsafe` from functions compiled for it).
#[inline]
#[target_feature(enable = "avx512f")]
pub fn silu(x: __m512) -> __m512 {
    silu_n([x])[0]
}

/// In-place SiLU of a slice, 64 values at a time, then sixteen (the last ones masked).
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn silu_slice(values: &mut [f32]) {
    let mut chunks = values.chunks_exact_mut(64);
    for chunk in &mut chunks {
        let p = chunk.as_mut_ptr();
        // SAFETY: the chunk holds 64 values.
        unsafe {
            let y = silu_n(std::array::from_fn::<_, 4, _>(|i| {
                _mm512_loadu_ps(p.add(16 * i))
            }));
            for (i, y) in y.into_iter().enumerate() {
                _mm512_storeu_ps(p.add(16 * i), y);
            }
        }
    }
    for chunk in chunks.into_remainder().chunks_mut(16) {
        let (p, mask) = (chunk.as_mut_ptr(), ((1u32 << chunk.len()) - 1) as u16);
        // SAFETY: the masked lanes are the chunk's.
        unsafe {
            let y = silu_n([_mm512_maskz_loadu_ps(mask, p)])[0];
            _mm512_mask_storeu_ps(p, mask, y);
        }
    }
}

/// In-place SiLU of `values`, pixels of `sums.len()` channels (`[pixels, C]`, `C` a
/// multiple of 16), each pixel's values then added to `sums` channel by channel, pixel
/// after pixel: the kernels' `silu` + channel sums, applied to a row they have stored
/// before the activation, with the same additions in the same order.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn silu_sum(values: &mut [f32], sums: &mut [f32]) {
    let c = sums.len();
    assert!(
        c.is_multiple_of(16) && c > 0 && values.len().is_multiple_of(c),
        "pixels of C = 16k channels"
    );
    let p = values.as_mut_ptr();
    let pixels = values.len() / c;
    for cb in (0..c).step_by(16) {
        // SAFETY: channels cb..cb + 16 of every pixel and of `sums` are inside the slices
        // (asserted above).
        unsafe {
            let s = sums.as_mut_ptr().add(cb);
            let mut total = _mm512_loadu_ps(s);
            let at = |px: usize| p.add(px * c + cb);
            let mut px = 0;
            while px + 4 <= pixels {
                let y = silu_n(std::array::from_fn::<_, 4, _>(|i| {
                    _mm512_loadu_ps(at(px + i))
                }));
                for (i, y) in y.into_iter().enumerate() {
                    _mm512_storeu_ps(at(px + i), y);
                    total = _mm512_add_ps(total, y);
                }
                px += 4;
            }
            while px < pixels {
                let y = silu_n([_mm512_loadu_ps(at(px))])[0];
                _mm512_storeu_ps(at(px), y);
                total = _mm512_add_ps(total, y);
                px += 1;
            }
            _mm512_storeu_ps(s, total);
        }
    }
}

/// In-place SiLU of 16 values in each of `rows` rows `stride` values apart (a panel of a
/// product's output), four rows at a time.
///
/// # Safety
/// The CPU must have AVX-512F; the rows' 16 values lie inside the caller's buffer and are
/// the caller's to write.
#[target_feature(enable = "avx512f")]
pub unsafe fn silu_rows(out: *mut f32, rows: usize, stride: usize) {
    let mut r = 0;
    // SAFETY: the caller's contract.
    unsafe {
        while r + 4 <= rows {
            let at = |i: usize| out.add((r + i) * stride);
            let y = silu_n(std::array::from_fn::<_, 4, _>(|i| _mm512_loadu_ps(at(i))));
            for (i, y) in y.into_iter().enumerate() {
                _mm512_storeu_ps(at(i), y);
            }
            r += 4;
        }
        while r < rows {
            let at = out.add(r * stride);
            _mm512_storeu_ps(at, silu_n([_mm512_loadu_ps(at)])[0]);
            r += 1;
        }
    }
}
