//! The activations in portable scalar code: `exp` by Cody-Waite range reduction and a degree-7
//! polynomial (within 2 ulp of libm), `erf` by Abramowitz & Stegun 7.1.26.

pub(super) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

pub(super) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// In-place softmax of a row: `e^(x - max) / sum`.
pub(super) fn softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = exp(*x - max);
        sum += *x;
    }
    let scale = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= scale);
}

/// `e^x` for float32, portable: 0 below -87 and infinity above 88 (the true values there are
/// below 1.7e-38 or above 1.6e38, where SiLU and GELU are saturated); within 2 ulp of libm.
pub(super) fn exp(x: f32) -> f32 {
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

pub(super) const ERF_P: f32 = 0.327_591_1;
pub(super) const ERF_A: [f32; 5] = [
    1.061_405_4,
    -1.453_152_1,
    1.421_413_8,
    -0.284_496_74,
    0.254_829_6,
];
