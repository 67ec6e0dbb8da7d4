//! Element-wise float32 activations in host memory: SiLU and exact GELU over slices, and the
//! same functions on registers for kernels that keep their values there.
//!
//! Eight lanes at a time in AVX2+FMA registers where the CPU has them ([`avx2`]: `exp` from an
//! eight-entry table of `2^(j/8)` and a degree-4 polynomial, within 2 ulp), sixteen with
//! AVX-512F ([`avx512`], SiLU only, bit for bit the eight-lane one), else `portable` scalar
//! code (within 2 ulp of libm).

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
mod portable;

#[cfg(target_arch = "x86_64")]
use crate::cpu::{has_avx2_fma, has_avx512f};
use portable::{gelu, silu, softmax};

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

/// In-place softmax of each row of `n` values of `rows`, `e^(x - max) / sum` ([`avx2`]'s
/// `exp` eight lanes at a time where the CPU has AVX2+FMA, else portable scalar code).
pub fn softmax_rows(rows: &mut [f32], n: usize) {
    for row in rows.chunks_exact_mut(n) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { avx2::softmax_slice(row) };
            continue;
        }
        softmax(row);
    }
}

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

#[cfg(test)]
mod tests {
    use super::portable::exp;
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

    #[test]
    fn softmax_rows_match_float64_with_masked_entries() {
        for n in [1usize, 7, 8, 13, 64, 77] {
            let rows: Vec<f32> = (0..3 * n)
                .map(|i| match i % 5 {
                    // transformers' additive mask value
                    3 if i % n != 0 => f32::MIN,
                    _ => ((i * 37) % 101) as f32 * 0.3 - 15.0,
                })
                .collect();
            let mut portable = rows.clone();
            portable.chunks_exact_mut(n).for_each(softmax);
            let mut dispatched = rows.clone();
            softmax_rows(&mut dispatched, n);
            for (r, row) in rows.chunks_exact(n).enumerate() {
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
                for (j, &x) in row.iter().enumerate() {
                    let want = (x as f64 - max).exp() / sum;
                    // (`x - max` rounded to float32 moves `e^(x - max)` by up to ~20 ulp of 20)
                    for got in [portable[r * n + j], dispatched[r * n + j]] {
                        assert!(
                            (got as f64 - want).abs() <= 1e-5 * want + 1e-30,
                            "n {n} row {r} col {j}: {got} vs {want}"
                        );
                    }
                }
            }
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
