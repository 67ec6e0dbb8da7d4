//! Layer normalisation of one row on AVX2+FMA: the sums in four 8-lane accumulators.

use std::arch::x86_64::*;

/// The sum of the 8 lanes of each of `acc`, added up.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn total(acc: [__m256; 4]) -> f32 {
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    let v = _mm_add_ss(v, _mm_movehdup_ps(v));
    _mm_cvtss_f32(v)
}

/// [`super::portable::layer_norm`] eight lanes at a time (the last `len % 32` values of each
/// pass one by one).
#[target_feature(enable = "avx2,fma")]
pub(super) fn layer_norm(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let len = row.len();
    let (g, b) = (&gamma[..len], &beta[..len]);
    let blocks = len / 32;
    let p = row.as_mut_ptr();
    // SAFETY: `i < blocks * 32 <= len`, eight values from `p + i` lie in `row`.
    let load = |i: usize| unsafe { _mm256_loadu_ps(p.add(i)) };
    let mut acc = [_mm256_setzero_ps(); 4];
    for blk in 0..blocks {
        for (u, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_add_ps(*acc, load(blk * 32 + 8 * u));
        }
    }
    let sum = total(acc) + row[blocks * 32..].iter().sum::<f32>();
    let mean = sum / len as f32;
    let m = _mm256_set1_ps(mean);
    let mut acc = [_mm256_setzero_ps(); 4];
    for blk in 0..blocks {
        for (u, acc) in acc.iter_mut().enumerate() {
            let d = _mm256_sub_ps(load(blk * 32 + 8 * u), m);
            *acc = _mm256_fmadd_ps(d, d, *acc);
        }
    }
    let squares = total(acc)
        + row[blocks * 32..]
            .iter()
            .map(|&x| (x - mean) * (x - mean))
            .sum::<f32>();
    let rstd = 1.0 / (squares / len as f32 + eps).sqrt();
    let r = _mm256_set1_ps(rstd);
    for i in (0..blocks * 32).step_by(8) {
        // SAFETY: as `load`; `gamma` and `beta` hold `len` values.
        unsafe {
            let x = _mm256_mul_ps(_mm256_sub_ps(load(i), m), r);
            let y = _mm256_fmadd_ps(
                x,
                _mm256_loadu_ps(g.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            );
            _mm256_storeu_ps(p.add(i), y);
        }
    }
    for i in blocks * 32..len {
        row[i] = (row[i] - mean) * rstd * g[i] + b[i];
    }
}
