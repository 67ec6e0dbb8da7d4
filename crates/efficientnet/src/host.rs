//! SiLU computed in host memory for the flex backend.
//!
//! burn-flex evaluates `sigmoid` one element at a time with libm's `expf` on one thread, then
//! `silu` multiplies in a second pass: on align-base that was 40 % of a forward pass (perf,
//! 289x289 images). Flex tensors live in host memory and `into_data` / `from_data` hand the
//! buffer over without copying, so on flex the activation is computed here instead, in place:
//! a vectorised `exp` (Cody-Waite range reduction + degree-7 polynomial, within 2 ulp of
//! libm over the range where SiLU is not saturated), split across rayon threads. Other devices
//! keep burn's `silu`. The squeeze-excite channel scaling is done the same way.

use burn::tensor::{Device, Tensor};
use rayon::prelude::*;

/// Whether `device` keeps its tensors in host memory with zero-copy `into_data`.
pub(crate) fn is_host_device(device: &Device) -> bool {
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

/// `x * sigmoid(x)` of a float32 tensor on a host device (see [`is_host_device`]).
pub(crate) fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) => {
            values.par_chunks_mut(1 << 15).for_each(silu_inplace);
            Tensor::from_data(data, &device)
        }
        // Not f32 (an f16 or f64 model): burn's own op.
        Err(_) => burn::tensor::activation::silu(Tensor::from_data(data, &device)),
    }
}

/// `x * scale` for `x` `[B, C, H, W]` and `scale` `[B, C, 1, 1]` (squeeze-excite) on a host
/// device: in place, one (b, c) plane per task. burn-flex's broadcasting multiply runs on one
/// thread.
pub(crate) fn scale_channels(x: Tensor<4>, scale: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let [_, _, h, w] = x.dims();
    let mut data = x.into_data();
    let scale = scale.into_data();
    if let (Ok(values), Ok(factors)) = (data.as_mut_slice::<f32>(), scale.as_slice::<f32>())
        && h * w > 0
    {
        values
            .par_chunks_mut(h * w)
            .zip(factors.par_iter())
            .for_each(|(plane, &s)| plane.iter_mut().for_each(|v| *v *= s));
        return Tensor::from_data(data, &device);
    }
    Tensor::from_data(data, &device) * Tensor::from_data(scale, &device)
}

/// In-place SiLU of a slice, with AVX2+FMA code where the CPU has it.
pub(crate) fn silu_inplace(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { silu_avx2(values) };
        return;
    }
    silu_portable(values);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_avx2(values: &mut [f32]) {
    silu_generic::<true>(values);
}

fn silu_portable(values: &mut [f32]) {
    silu_generic::<false>(values);
}

#[inline(always)]
fn silu_generic<const FMA: bool>(values: &mut [f32]) {
    for v in values.iter_mut() {
        let x = *v;
        *v = x / (1.0 + exp::<FMA>(-x));
    }
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
    fn silu_matches_the_definition_including_extremes() {
        let xs: Vec<f32> = (-20_000..20_000)
            .map(|i| i as f32 * 0.01)
            .chain([-1e30, -200.0, -88.5, 88.5, 200.0, 1e30, 0.0, -0.0])
            .collect();
        for silu in [silu_inplace as fn(&mut [f32]), silu_portable] {
            check_silu(&xs, silu);
        }
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
