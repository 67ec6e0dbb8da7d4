//! Element-wise float32 activations in host memory, for burn's flex backend.
//!
//! burn-flex 0.22 evaluates `sigmoid`, `silu` and `gelu` one element at a time with libm
//! (`expf`, `erff`) on one thread, in several passes, which made SiLU a large part of
//! align-base's vision tower and GELU's `erff` a visible part of its text tower. Flex tensors
//! live in host memory and `into_data` / `from_data` hand the buffer over without copying, so
//! on flex these activations are computed here instead, in place, split across rayon threads:
//! eight lanes at a time in AVX2+FMA registers where the CPU has them ([`avx2`]: `exp` from an
//! eight-entry table of `2^(j/8)` and a degree-4 polynomial, within 2 ulp), else portable
//! scalar code (Cody-Waite range reduction + degree-7 polynomial, within 2 ulp of libm). Other
//! devices keep burn's ops.
//!
//! [`gemm`]: matrix products against weights packed once, with bias, residual add and SiLU
//! applied in registers (the vision tower's 1x1 convolutions on flex); [`avx2::silu`] is the
//! SiLU of eight lanes for such kernels, and [`avx512`] the same SiLU on sixteen lanes (bit
//! for bit), in registers or over rows a kernel has just stored, where the CPU has AVX-512F.

use burn::tensor::{DType, Device, Tensor};
use rayon::prelude::*;

pub mod gemm;

/// Whether `device` keeps its tensors in host memory with zero-copy `into_data` (flex).
pub fn is_host_device(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        *device == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// Applies `f` in place to the values of a float32 tensor on a host device (see
/// [`is_host_device`]), in parallel chunks; a tensor of another float type goes through
/// `fallback` (burn's own op).
pub fn map_in_place<const D: usize>(
    x: Tensor<D>,
    f: fn(&mut [f32]),
    fallback: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    if x.dtype() != DType::F32 {
        return fallback(x);
    }
    let device = x.device();
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) => {
            values.par_chunks_mut(1 << 15).for_each(f);
            Tensor::from_data(data, &device)
        }
        Err(_) => fallback(Tensor::from_data(data, &device)),
    }
}

/// Whether this CPU has AVX2 and FMA, which the [`avx2`] functions (and kernels built on
/// them) require.
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU also has AVX-512F, which the [`avx512`] functions require (with AVX2 and
/// FMA).
pub fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    return has_avx2_fma() && std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// In-place SiLU, `x * sigmoid(x)` computed as `x / (1 + e^-x)`, of a slice: sixteen values at
/// a time where the CPU has AVX-512F ([`avx512::silu_slice`]), eight where it has AVX2+FMA
/// ([`avx2::silu`]; the same values bit for bit), else portable scalar code.
pub fn silu_inplace(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512f() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { avx512::silu_slice(values) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { avx2::silu_slice(values) };
        return;
    }
    values.iter_mut().for_each(|v| *v = silu(*v));
}

/// In-place exact GELU, `x / 2 * (1 + erf(x / sqrt 2))`, of a slice ([`avx2::gelu`] where the
/// CPU has AVX2+FMA, else portable scalar code). `erf` is Abramowitz & Stegun 7.1.26 (absolute
/// error below 1.5e-7) on the `exp` here: the formula PyTorch's vectorised CPU `erf` uses.
pub fn gelu_inplace(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { avx2::gelu_slice(values) };
        return;
    }
    values.iter_mut().for_each(|v| *v = gelu(*v));
}

fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `e^x` for float32, portable: 0 below -87 and infinity above 88 (the true values there are
/// below 1.7e-38 or above 1.6e38, where SiLU and GELU are saturated); within 2 ulp of libm.
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| <= 128.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let (tiny, huge) = (x < -87.0, x > 88.0);
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // e^r for |r| <= ln2 / 2: Taylor to degree 7 (truncation error < 6e-9 relative), Horner.
    let c = [
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    let p = c[1..].iter().fold(c[0], |p, &c| p * r + c);
    let k = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let e = p * f32::from_bits(((k + 127) << 23) as u32);
    if huge {
        f32::INFINITY
    } else if tiny {
        0.0
    } else {
        e
    }
}

/// Abramowitz & Stegun 7.1.26: `1 - t * P(t) * e^(-x^2)`, `t = 1 / (1 + p |x|)`, sign restored.
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (ERF_P * a + 1.0);
    let poly = ERF_A[1..].iter().fold(ERF_A[0], |p, &c| p * t + c);
    let y = 1.0 - poly * t * exp(-a * a);
    y.copysign(x)
}

const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [
    1.061_405_4,
    -1.453_152_1,
    1.421_413_8,
    -0.284_496_74,
    0.254_829_6,
];

/// `2^(j / 8)` for `j` in 0..8: the table the register `exp`s scale by.
#[cfg(target_arch = "x86_64")]
const EXP2_EIGHTHS: [f32; 8] = [
    1.0,
    1.090_507_7,
    1.189_207_1,
    1.296_839_6,
    std::f32::consts::SQRT_2,
    1.542_210_8,
    1.681_792_9,
    1.834_008_1,
];

/// Activations of eight lanes in AVX2+FMA registers, for kernels that keep their values
/// there, and the slice functions built on them.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
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
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(super::ERF_P), a, one));
        let mut poly = _mm256_set1_ps(super::ERF_A[0]);
        for c in &super::ERF_A[1..] {
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
}

/// [`avx2`]'s SiLU on sixteen lanes, for kernels that keep sixteen lanes in registers or apply
/// it to what they have just stored: the same operations in the same order on each lane, so
/// the same values bit for bit (checked over all 2^32 inputs; unit-tested here). Faster per
/// value than the 8-lane version even on CPUs that run a 16-lane operation as two 8-lane
/// halves: half the instructions to issue.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
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
            e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[0], e[1], e[2], e[3], e[4], e[5],
            e[6], e[7],
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worst error of `exp` in ulp over [-87, 88] (step 0.00137) against float64.
    fn worst_exp_error_ulp(exp: impl Fn(f32) -> f32) -> f64 {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            let ulp = (want as f32).abs() * f32::EPSILON;
            worst = worst.max((got - want).abs() / ulp as f64);
            x += 0.001_37;
        }
        worst
    }

    #[test]
    fn exp_is_within_2_ulp_of_libm() {
        let worst = worst_exp_error_ulp(exp);
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!((exp(-87.5), exp(88.5)), (0.0, f32::INFINITY));
    }

    /// `f` on eight lanes holding `x`, first lane.
    #[cfg(target_arch = "x86_64")]
    fn lane(f: unsafe fn(std::arch::x86_64::__m256) -> std::arch::x86_64::__m256, x: f32) -> f32 {
        use std::arch::x86_64::*;
        let mut out = [0.0f32; 8];
        // SAFETY: only called where the CPU has AVX2 and FMA; `out` holds eight values.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), f(_mm256_set1_ps(x))) };
        out[0]
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn register_exp_is_within_2_ulp_and_saturates() {
        if !has_avx2_fma() {
            return;
        }
        let worst = worst_exp_error_ulp(|x| lane(avx2::exp, x));
        assert!(worst <= 2.0, "worst error {worst} ulp");
        for (x, want) in [
            (-1e30, 0.0),
            (-87.5, 0.0),
            (0.0, 1.0),
            (88.5, f32::INFINITY),
            (1e30, f32::INFINITY),
        ] {
            assert_eq!(lane(avx2::exp, x), want, "exp({x})");
        }
        // Every table entry and both ends of the reduced range, at large and small scales.
        for i in -1016..=1016 {
            let x = i as f32 * std::f32::consts::LN_2 / 8.0;
            if (-87.0..=88.0).contains(&x) {
                let want = (x as f64).exp();
                let got = lane(avx2::exp, x) as f64;
                assert!(
                    (got - want).abs() <= 2.0 * f32::EPSILON as f64 * want,
                    "exp({x})"
                );
            }
        }
    }

    #[test]
    fn gelu_matches_the_definition_including_extremes() {
        let xs: Vec<f32> = (-20_000..20_000)
            .map(|i| i as f32 * 0.001)
            .chain([-1e30, -200.0, -10.0, 10.0, 200.0, 1e30, 0.0, -0.0])
            .collect();
        for gelu in [gelu_inplace as fn(&mut [f32]), gelu_portable] {
            let mut got = xs.clone();
            gelu(&mut got);
            for (&x, &y) in xs.iter().zip(&got) {
                let want = 0.5 * x as f64 * (1.0 + erf_f64(x as f64 / std::f64::consts::SQRT_2));
                // erf's 1.5e-7 absolute error plus the float32 rounding of its evaluation
                // (the polynomial, the product with exp and 1 - it: a few epsilon), both
                // scaled by x / 2, plus the rounding of the product
                let tol = (1.5e-7 + 4.0 * f32::EPSILON as f64) * 0.5 * (x as f64).abs()
                    + 2.0 * f32::EPSILON as f64 * want.abs()
                    + 1e-30;
                assert!(
                    (y as f64 - want).abs() <= tol,
                    "gelu({x}) = {y}, want {want}"
                );
            }
            let mut nan = [f32::NAN];
            gelu(&mut nan);
            assert!(nan[0].is_nan());
        }
    }

    fn gelu_portable(values: &mut [f32]) {
        values.iter_mut().for_each(|v| *v = gelu(*v));
    }

    fn silu_portable(values: &mut [f32]) {
        values.iter_mut().for_each(|v| *v = silu(*v));
    }

    /// erf in float64, accurate to about 1e-13: the Taylor series for |x| < 3, the continued
    /// fraction of erfc beyond.
    fn erf_f64(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut sum = x;
            let mut term = x;
            let x2 = x * x;
            for n in 1..200 {
                term *= -x2 / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let a = x.abs();
            let mut f = 0.0;
            for k in (1..120).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / (std::f64::consts::PI.sqrt() * (a + f));
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn silu_matches_the_definition_including_extremes() {
        let xs: Vec<f32> = (-20_000..20_000)
            .map(|i| i as f32 * 0.01)
            .chain([-1e30, -200.0, -88.5, 88.5, 200.0, 1e30, 0.0, -0.0])
            .collect();
        for silu in [silu_inplace as fn(&mut [f32]), silu_portable] {
            check_silu(&xs, silu);
        }
    }

    /// [`avx2::silu`] over a slice, eight values at a time.
    #[cfg(target_arch = "x86_64")]
    fn silu_avx2_lanes(values: &mut [f32]) {
        use std::arch::x86_64::*;
        for chunk in values.chunks_mut(8) {
            let mut lanes = [0.0f32; 8];
            lanes[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: the caller checked the CPU features; `lanes` holds eight values.
            unsafe {
                let y = avx2::silu(_mm256_loadu_ps(lanes.as_ptr()));
                _mm256_storeu_ps(lanes.as_mut_ptr(), y);
            }
            let n = chunk.len();
            chunk.copy_from_slice(&lanes[..n]);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn register_silu_matches_the_definition_and_the_slice_silu() {
        if !has_avx2_fma() {
            return;
        }
        let xs: Vec<f32> = (-20_000..20_000)
            .map(|i| i as f32 * 0.01)
            .chain([-1e30, -200.0, -88.5, 88.5, 200.0, 1e30, 0.0, -0.0])
            .collect();
        check_silu(&xs, silu_avx2_lanes);
        // Bit for bit the slice version.
        let (mut a, mut b) = (xs.clone(), xs);
        silu_avx2_lanes(&mut a);
        silu_inplace(&mut b);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    /// The sixteen-lane SiLU against the eight-lane one, bit for bit: on a sweep of float32
    /// bit patterns (every 9973rd, all signs and exponents) and the extremes, as a slice with
    /// a masked tail, as rows of a panel, and with channel sums added pixel after pixel.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_lane_silu_is_the_eight_lane_one_bit_for_bit() {
        if !has_avx512f() {
            eprintln!("SKIPPED: this CPU has no AVX-512F");
            return;
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let xs: Vec<f32> = (0..=u32::MAX / 9973)
            .map(|i| f32::from_bits(i * 9973))
            .filter(|x| !x.is_nan())
            .chain([-1e30, -88.5, -88.0, -87.0, 87.0, 88.5, 1e30, 0.0, -0.0])
            .collect();
        let mut want = xs.clone();
        silu_avx2_lanes(&mut want);
        for len in [xs.len(), 64 * 3 + 16 + 5, 7] {
            let mut got = xs[..len].to_vec();
            // SAFETY: the CPU has AVX-512F (checked above).
            unsafe { avx512::silu_slice(&mut got) };
            assert_eq!(bits(&got), bits(&want[..len]), "slice of {len}");
        }
        let mut nan = [f32::NAN; 3];
        // SAFETY: as above.
        unsafe { avx512::silu_slice(&mut nan) };
        assert!(nan.iter().all(|v| v.is_nan()));

        // Rows of 16 values, 40 apart: only those are changed.
        let (rows, stride) = (7, 40);
        let mut got = xs[..rows * stride].to_vec();
        // SAFETY: as above; each row's 16 values lie inside `got`.
        unsafe { avx512::silu_rows(got.as_mut_ptr(), rows, stride) };
        for (i, (g, x)) in got.iter().zip(&xs).enumerate() {
            let w = if i % stride < 16 { want[i] } else { *x };
            assert_eq!(g.to_bits(), w.to_bits(), "row value {i}");
        }

        // 7 pixels of 32 channels, sums starting from arbitrary values.
        let (pixels, c) = (7, 32);
        let vals: Vec<f32> = (0..pixels * c)
            .map(|i| (i as f32 * 0.37).sin() * 9.0)
            .collect();
        let start: Vec<f32> = (0..c).map(|i| i as f32 * 0.25 - 3.0).collect();
        let mut act = vals.clone();
        silu_avx2_lanes(&mut act);
        let mut want_sums = start.clone();
        for px in act.chunks_exact(c) {
            want_sums.iter_mut().zip(px).for_each(|(s, v)| *s += v);
        }
        let (mut got, mut sums) = (vals, start);
        // SAFETY: as above.
        unsafe { avx512::silu_sum(&mut got, &mut sums) };
        assert_eq!(bits(&got), bits(&act));
        assert_eq!(bits(&sums), bits(&want_sums));
    }

    fn check_silu(xs: &[f32], silu: fn(&mut [f32])) {
        let mut got = xs.to_vec();
        silu(&mut got);
        for (&x, &y) in xs.iter().zip(&got) {
            let want = (x as f64) / (1.0 + (-(x as f64)).exp());
            let tol = 4.0 * f32::EPSILON as f64 * want.abs() + 1e-30;
            assert!(
                (y as f64 - want).abs() <= tol,
                "silu({x}) = {y}, want {want}"
            );
        }
        let mut nan = [f32::NAN];
        silu(&mut nan);
        assert!(nan[0].is_nan());
    }
}
