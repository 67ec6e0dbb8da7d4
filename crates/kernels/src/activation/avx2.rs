//! Activations of eight lanes in AVX2+FMA registers, for kernels that keep their values
//! there, and the slice functions built on them.

use std::arch::x86_64::*;

/// `e^x` lane by lane, within 2 ulp; 0 below -87, infinity above 88. `x = n ln2 / 8 + r`
/// (Cody-Waite, `|r| <= ln2 / 16`), `e^x = 2^(n / 8) e^r`: `2^(n mod 8 / 8)` from an
/// eight-entry table in a register, `e^r` by a degree-4 polynomial (truncation error
/// below 1.3e-9 relative).
///
/// # Safety
/// The CPU must have AVX2 and FMA (callable without `unsafe` from functions compiled
/// for them).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub fn exp(x: __m256) -> __m256 {
    let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-87.0));
    let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(88.0));
    let e = exp_clamped(x);
    let e = _mm256_blendv_ps(e, _mm256_set1_ps(f32::INFINITY), huge);
    _mm256_andnot_ps(tiny, e)
}

/// [`exp`] of `x` clamped to [-87, 88] (`e^-87` and `e^88` past the ends; a NaN reads
/// as -87).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_clamped(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(88.0),
    );
    exp_in_range::<false, 1>([x])[0]
}

/// `e^x` (`e^-x` if `NEG`: the same operations on the negated value, bit for bit, without
/// negating it first) for `x` in [-87, 88] ([-88, 87] if `NEG`), on `N` vectors at once:
/// each step for all of them before the next (independent chains side by side, for the
/// out-of-order core to overlap; one vector's chain is ~20 dependent operations).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_in_range<const NEG: bool, const N: usize>(x: [__m256; N]) -> [__m256; N] {
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    let round = _mm256_set1_ps(12_582_912.0);
    let log2e8 = _mm256_set1_ps(8.0 * std::f32::consts::LOG2_E);
    // n = round(±x * 8 / ln 2); |n| <= 1016
    let t = x.map(|x| {
        if NEG {
            _mm256_fnmadd_ps(x, log2e8, round)
        } else {
            _mm256_fmadd_ps(x, log2e8, round)
        }
    });
    let n = t.map(|t| _mm256_sub_ps(t, round));
    // ln 2 / 8 split so that n * HI is exact (HI has 12 significant bits); `r` is the
    // remainder (its negation if `NEG`)
    let (hi, lo) = (_mm256_set1_ps(0.086_639_404), _mm256_set1_ps(3.993_273e-6));
    let r: [__m256; N] = std::array::from_fn(|i| {
        if NEG {
            _mm256_fmadd_ps(n[i], hi, x[i])
        } else {
            _mm256_fnmadd_ps(n[i], hi, x[i])
        }
    });
    let r: [__m256; N] = std::array::from_fn(|i| {
        if NEG {
            _mm256_fmadd_ps(n[i], lo, r[i])
        } else {
            _mm256_fnmadd_ps(n[i], lo, r[i])
        }
    });
    // e^r = 1 + r + r^2 (1/2 + r/6 + r^2/24)
    let r2 = r.map(|r| _mm256_mul_ps(r, r));
    let (one, sixth, half) = (
        _mm256_set1_ps(1.0),
        _mm256_set1_ps(1.0 / 6.0),
        _mm256_set1_ps(0.5),
    );
    let low = r.map(|r| {
        if NEG {
            _mm256_sub_ps(one, r)
        } else {
            _mm256_add_ps(r, one)
        }
    });
    let high = r.map(|r| {
        if NEG {
            _mm256_fnmadd_ps(r, sixth, half)
        } else {
            _mm256_fmadd_ps(r, sixth, half)
        }
    });
    let high: [__m256; N] =
        std::array::from_fn(|i| _mm256_fmadd_ps(r2[i], _mm256_set1_ps(1.0 / 24.0), high[i]));
    let p: [__m256; N] = std::array::from_fn(|i| _mm256_fmadd_ps(high[i], r2[i], low[i]));
    // 2^(n / 8): the table entry for n mod 8 (the low three bits), its exponent raised
    // by floor(n / 8)
    let n = t.map(|t| _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B40_0000)));
    let e = super::EXP2_EIGHTHS;
    let table = _mm256_setr_ps(e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]);
    let fraction = n.map(|n| _mm256_castps_si256(_mm256_permutevar8x32_ps(table, n)));
    let scale: [__m256i; N] = std::array::from_fn(|i| {
        _mm256_add_epi32(
            fraction[i],
            _mm256_slli_epi32::<23>(_mm256_srai_epi32::<3>(n[i])),
        )
    });
    std::array::from_fn(|i| _mm256_mul_ps(p[i], _mm256_castsi256_ps(scale[i])))
}

/// `x / (1 + e^-x)` lane by lane.
///
/// # Safety
/// The CPU must have AVX2 and FMA (callable without `unsafe` from functions compiled
/// for them).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub fn silu(x: __m256) -> __m256 {
    silu_n([x])[0]
}

/// [`silu`] of `N` vectors, each step for all of them before the next (see
/// [`exp_in_range`]); the same values bit for bit.
///
/// # Safety
/// The CPU must have AVX2 and FMA (callable without `unsafe` from functions compiled
/// for them).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn silu_n<const N: usize>(x: [__m256; N]) -> [__m256; N] {
    // No saturation masks (a fifth of the work): past 87 the quotient is x already (e^-87
    // is nothing next to 1); below -88 the numerator is held at -88 (max keeps a NaN), so
    // that the result, within 6e-37 of the true one, stays near 0 for x far below. The
    // exponent is that numerator held below 87 (a NaN reads as 87).
    let x = x.map(|x| _mm256_max_ps(_mm256_set1_ps(-88.0), x));
    let e = exp_in_range::<true, N>(x.map(|x| _mm256_min_ps(x, _mm256_set1_ps(87.0))));
    std::array::from_fn(|i| _mm256_div_ps(x[i], _mm256_add_ps(_mm256_set1_ps(1.0), e[i])))
}

/// `x / 2 * (1 + erf(x / sqrt 2))` lane by lane, `erf` as the portable one (Abramowitz &
/// Stegun 7.1.26) on [`exp`].
///
/// # Safety
/// The CPU must have AVX2 and FMA (callable without `unsafe` from functions compiled
/// for them).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub fn gelu(x: __m256) -> __m256 {
    let z = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let sign = _mm256_and_ps(z, _mm256_set1_ps(-0.0));
    let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), z);
    let one = _mm256_set1_ps(1.0);
    let t = _mm256_div_ps(
        one,
        _mm256_fmadd_ps(_mm256_set1_ps(super::portable::ERF_P), a, one),
    );
    let mut poly = _mm256_set1_ps(super::portable::ERF_A[0]);
    for c in &super::portable::ERF_A[1..] {
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(*c));
    }
    let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
    let y = _mm256_fnmadd_ps(_mm256_mul_ps(poly, t), e, one);
    let erf = _mm256_or_ps(y, sign);
    _mm256_mul_ps(
        _mm256_mul_ps(_mm256_set1_ps(0.5), x),
        _mm256_add_ps(one, erf),
    )
}

/// `f` applied to every value, eight at a time (the tail through a padded copy).
#[inline(always)]
fn map(values: &mut [f32], f: impl Fn(__m256) -> __m256) {
    let mut chunks = values.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // SAFETY: the chunk holds eight values.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), f(_mm256_loadu_ps(chunk.as_ptr()))) };
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut lanes = [0.0f32; 8];
        lanes[..tail.len()].copy_from_slice(tail);
        // SAFETY: `lanes` holds eight values.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), f(_mm256_loadu_ps(lanes.as_ptr()))) };
        let n = tail.len();
        tail.copy_from_slice(&lanes[..n]);
    }
}

/// [`silu`] over a slice, four vectors at a time ([`silu_n`]), then the rest.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn silu_slice(values: &mut [f32]) {
    let mut chunks = values.chunks_exact_mut(32);
    for chunk in &mut chunks {
        let p = chunk.as_mut_ptr();
        // SAFETY: the chunk holds 32 values.
        unsafe {
            let y = silu_n(std::array::from_fn::<_, 4, _>(|i| {
                _mm256_loadu_ps(p.add(8 * i))
            }));
            for (i, y) in y.into_iter().enumerate() {
                _mm256_storeu_ps(p.add(8 * i), y);
            }
        }
    }
    map(chunks.into_remainder(), |x| silu(x));
}

/// [`gelu`] over a slice.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn gelu_slice(values: &mut [f32]) {
    map(values, |x| gelu(x));
}

/// In-place softmax of a row, `e^(x - max) / sum` (the sum over eight lanes, then across
/// them; the scale as one reciprocal).
#[target_feature(enable = "avx2,fma")]
pub(crate) fn softmax_slice(row: &mut [f32]) {
    let chunks = row.len() / 8;
    let p = row.as_mut_ptr();
    let tail = chunks * 8..row.len();
    // SAFETY: chunk `c` < `chunks` holds eight values of `row`.
    let load = |c: usize| unsafe { _mm256_loadu_ps(p.add(8 * c)) };
    let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in 0..chunks {
        max = _mm256_max_ps(max, load(c));
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds eight values.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), max) };
    let max = lanes
        .iter()
        .chain(&row[tail.clone()])
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sum = _mm256_setzero_ps();
    for c in 0..chunks {
        let e = exp(_mm256_sub_ps(load(c), _mm256_set1_ps(max)));
        sum = _mm256_add_ps(sum, e);
        // SAFETY: as `load`.
        unsafe { _mm256_storeu_ps(p.add(8 * c), e) };
    }
    // SAFETY: `lanes` holds eight values.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    let mut sum: f32 = lanes.iter().sum();
    for x in &mut row[tail.clone()] {
        *x = super::portable::exp(*x - max);
        sum += *x;
    }
    let scale = 1.0 / sum;
    for c in 0..chunks {
        // SAFETY: as `load`.
        unsafe { _mm256_storeu_ps(p.add(8 * c), _mm256_mul_ps(load(c), _mm256_set1_ps(scale))) };
    }
    row[tail].iter_mut().for_each(|x| *x *= scale);
}
