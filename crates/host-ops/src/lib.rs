//! Element-wise float32 activations in host memory, for burn's flex backend.
//!
//! burn-flex 0.22 evaluates `sigmoid`, `silu` and `gelu` one element at a time with libm
//! (`expf`, `erff`) on one thread, in several passes: on align-base's vision tower SiLU was 40 %
//! of a forward pass, and GELU's `erff` 6 % of the text tower's. Flex tensors live in host
//! memory and `into_data` / `from_data` hand the buffer over without copying, so on flex these
//! activations are computed here instead, in place: a branch-free vectorisable `exp`
//! (Cody-Waite range reduction + degree-7 polynomial, within 2 ulp of libm), compiled for
//! AVX2+FMA where the CPU has them, split across rayon threads. Other devices keep burn's ops.
//!
//! [`gemm`]: matrix products against weights packed once, with bias, residual add and SiLU
//! applied in registers (the vision tower's 1x1 convolutions on flex); [`avx2::silu`] is the
//! SiLU of eight lanes for such kernels.

use burn::tensor::{Device, Tensor};
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

/// An element-wise activation, written once for both code paths (`FMA`: fused multiply-adds).
trait Activation {
    fn apply<const FMA: bool>(x: f32) -> f32;
}

/// Applies `A` to every value, with code compiled for AVX2+FMA where the CPU has them.
fn run<A: Activation>(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { run_avx2::<A>(values) };
        return;
    }
    run_portable::<A>(values);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<A: Activation>(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = A::apply::<true>(*v));
}

fn run_portable<A: Activation>(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = A::apply::<false>(*v));
}

struct Silu;

impl Activation for Silu {
    #[inline(always)]
    fn apply<const FMA: bool>(x: f32) -> f32 {
        x / (1.0 + exp::<FMA>(-x))
    }
}

/// In-place SiLU, `x * sigmoid(x)`, of a slice (vectorised; AVX2+FMA where available).
pub fn silu_inplace(values: &mut [f32]) {
    run::<Silu>(values);
}

/// `a * b + c`, fused when `FMA` (only where the CPU has the instruction: elsewhere
/// `mul_add` is a slow library call).
#[inline(always)]
fn mul_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `e^x` for float32, branch-free so that loops over it vectorise: 0 below -87 and infinity
/// above 88 (the true values there are below 1.7e-38 or above 1.6e38, where SiLU is
/// saturated).
#[inline(always)]
fn exp<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| <= 128.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let (tiny, huge) = (x < -87.0, x > 88.0);
    let x = x.clamp(-87.0, 88.0);
    let t = mul_add::<FMA>(x, LOG2E, ROUND);
    let n = t - ROUND;
    let r = mul_add::<FMA>(-n, LN2_LO, mul_add::<FMA>(-n, LN2_HI, x));
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
    let p = c[1..].iter().fold(c[0], |p, &c| mul_add::<FMA>(p, r, c));
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

/// The SiLU of eight lanes, for kernels that keep their values in AVX2 registers: the same
/// arithmetic as [`silu_inplace`] (the `exp` above, then one division).
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    /// `e^x` lane by lane: [`super::exp`] in AVX2+FMA registers, bit for bit.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA (callable without `unsafe` from functions compiled
    /// for them).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn exp(x: __m256) -> __m256 {
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-87.0));
        let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(88.0));
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
            _mm256_set1_ps(88.0),
        );
        let round = _mm256_set1_ps(12_582_912.0);
        let t = _mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), round);
        let n = _mm256_sub_ps(t, round);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm256_set1_ps(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let k = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B40_0000));
        let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(k, _mm256_set1_epi32(127)));
        let e = _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
        let e = _mm256_blendv_ps(e, _mm256_set1_ps(f32::INFINITY), huge);
        _mm256_andnot_ps(tiny, e)
    }

    /// `x / (1 + e^-x)` lane by lane, as [`super::silu_inplace`] computes it.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA (callable without `unsafe` from functions compiled
    /// for them).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn silu(x: __m256) -> __m256 {
        let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
        _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
    }
}

struct Gelu;

impl Activation for Gelu {
    #[inline(always)]
    fn apply<const FMA: bool>(x: f32) -> f32 {
        0.5 * x * (1.0 + erf::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2))
    }
}

/// In-place exact GELU, `x / 2 * (1 + erf(x / sqrt 2))`, of a slice (vectorised; AVX2+FMA
/// where available). `erf` is Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7) on the
/// `exp` above: the formula PyTorch's vectorised CPU `erf` uses.
pub fn gelu_inplace(values: &mut [f32]) {
    run::<Gelu>(values);
}

/// Abramowitz & Stegun 7.1.26: `1 - t * P(t) * e^(-x^2)`, `t = 1 / (1 + p |x|)`, sign restored.
#[inline(always)]
fn erf<const FMA: bool>(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        1.061_405_4,
        -1.453_152_1,
        1.421_413_8,
        -0.284_496_74,
        0.254_829_6,
    ];
    let a = x.abs();
    let t = 1.0 / mul_add::<FMA>(P, a, 1.0);
    let poly = A[1..].iter().fold(A[0], |p, &c| mul_add::<FMA>(p, t, c));
    let y = mul_add::<FMA>(-(poly * t), exp::<FMA>(-a * a), 1.0);
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worst_exp_error_ulp<const FMA: bool>() -> f64 {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp::<FMA>(x) as f64;
            let ulp = (want as f32).abs() * f32::EPSILON;
            worst = worst.max((got - want).abs() / ulp as f64);
            x += 0.001_37;
        }
        worst
    }

    #[test]
    fn exp_is_within_2_ulp_of_libm() {
        let worst = worst_exp_error_ulp::<false>();
        assert!(worst <= 2.0, "worst error {worst} ulp");
        // The fused variant, where the CPU runs it (mul_add is exact either way, only slow).
        let worst = worst_exp_error_ulp::<true>();
        assert!(worst <= 2.0, "worst error {worst} ulp (FMA)");
    }

    #[test]
    fn gelu_matches_the_definition_including_extremes() {
        let xs: Vec<f32> = (-20_000..20_000)
            .map(|i| i as f32 * 0.001)
            .chain([-1e30, -200.0, -10.0, 10.0, 200.0, 1e30, 0.0, -0.0])
            .collect();
        for gelu in [gelu_inplace as fn(&mut [f32]), run_portable::<Gelu>] {
            let mut got = xs.clone();
            gelu(&mut got);
            for (&x, &y) in xs.iter().zip(&got) {
                let want = 0.5 * x as f64 * (1.0 + erf_f64(x as f64 / std::f64::consts::SQRT_2));
                // erf's 1.5e-7 absolute error plus the float32 rounding of erf (near 1:
                // one epsilon), both scaled by x / 2, plus the rounding of the product
                let tol = (1.5e-7 + f32::EPSILON as f64) * 0.5 * (x as f64).abs()
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
        for silu in [silu_inplace as fn(&mut [f32]), run_portable::<Silu>] {
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
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
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
