//! A port of Pillow's resampling (`libImaging/Resample.c` and the nearest-neighbour scale in
//! `libImaging/Geometry.c`) for 8-bit RGB images, so that our pixels are the reference's pixels.
//!
//! What is reproduced, line by line:
//! - `precompute_coeffs`: support scaled by the downscale factor (antialiasing), window bounds
//!   `xmin = (int)(center - support + 0.5)`, `xmax = (int)(center + support + 0.5)` clamped to the
//!   image, the filter evaluated at `(x + xmin - center + 0.5) / filterscale`, each window
//!   normalised to a sum of one (in `f64`);
//! - `normalize_coeffs_8bpc`: coefficients in 22-bit fixed point, rounded half away from zero;
//! - accumulators start at `1 << 21` and the result is `clip8(acc >> 22)`;
//! - two passes through a `u8` intermediate: horizontal first (over only the rows the vertical
//!   pass reads), except when the height shrinks by more than twice as many pixels as the width,
//!   where Pillow >= 12 runs the vertical pass first (checked against Pillow 13.0.0); a pass is
//!   skipped when its size does not change, and an image whose size does not change is copied;
//! - `NEAREST` goes through Pillow's affine scale (`ImagingScaleAffine`), including its
//!   accumulated floating-point source positions.

/// Resampling filters, numbered as Pillow numbers them (`Image.Resampling`), which is also what
/// `preprocessor_config.json` stores in `resample`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// `Image.NEAREST` (0).
    Nearest,
    /// `Image.LANCZOS` (1).
    Lanczos,
    /// `Image.BILINEAR` (2).
    Bilinear,
    /// `Image.BICUBIC` (3).
    Bicubic,
    /// `Image.BOX` (4).
    Box,
    /// `Image.HAMMING` (5).
    Hamming,
}

impl Resample {
    /// The filter with Pillow's number, if there is one.
    pub fn from_pillow(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Nearest,
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            _ => return None,
        })
    }

    /// `(filter, support)` of a convolution filter; `None` for nearest.
    fn filter(self) -> Option<(Kernel, f64)> {
        match self {
            Self::Nearest => None,
            Self::Box => Some((box_filter, 0.5)),
            Self::Bilinear => Some((bilinear_filter, 1.0)),
            Self::Hamming => Some((hamming_filter, 1.0)),
            Self::Bicubic => Some((bicubic_filter, 2.0)),
            Self::Lanczos => Some((lanczos_filter, 3.0)),
        }
    }
}

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 { 1.0 } else { 0.0 }
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn hamming_filter(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        1.0
    } else if x >= 1.0 {
        0.0
    } else {
        let x = x * std::f64::consts::PI;
        // Pillow writes the constants as C `float`s (0.54f, 0.46f).
        x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
    }
}

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc_filter(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos_filter(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc_filter(x) * sinc_filter(x / 3.0)
    } else {
        0.0
    }
}

/// A filter kernel, evaluated in `f64` as Pillow does.
type Kernel = fn(f64) -> f64;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point coefficients of one pass: for output index `i`, input indices
/// `bounds[i].0 .. bounds[i].0 + bounds[i].1` with weights `kk[i * ksize ..]`.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    kk: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)` (Pillow passes the
/// box as `float`; it is exact for any size we accept).
fn precompute_coeffs(
    in_size: usize,
    out_size: usize,
    filter: fn(f64) -> f64,
    support: f64,
) -> Coeffs {
    let in0 = 0.0f32;
    let in1 = in_size as f32;
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's `(int)` truncates towards zero; negative values are clamped to 0 anyway.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = (xmax - xmin).max(0) as usize;
        let xmin = xmin as usize;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut kk[xx * ksize..(xx + 1) * ksize];
        for (out, &w) in row.iter_mut().zip(&k[..n]) {
            let w = if ww != 0.0 { w / ww } else { w };
            let f = w * f64::from(1u32 << PRECISION_BITS);
            *out = if w < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs { ksize, bounds, kk }
}

#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over rows `row0 .. row0 + rows` of `src` (RGB, `in_w` wide).
fn horizontal(src: &[u8], in_w: usize, row0: usize, rows: usize, c: &Coeffs, out: &mut [u8]) {
    let out_w = c.bounds.len();
    for y in 0..rows {
        let src_row = &src[(row0 + y) * in_w * 3..(row0 + y + 1) * in_w * 3];
        let out_row = &mut out[y * out_w * 3..(y + 1) * out_w * 3];
        for (xx, (&(xmin, n), px)) in c.bounds.iter().zip(out_row.chunks_exact_mut(3)).enumerate() {
            let k = &c.kk[xx * c.ksize..xx * c.ksize + n];
            let window = &src_row[xmin * 3..(xmin + n) * 3];
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (p, &w) in window.chunks_exact(3).zip(k) {
                s0 += i32::from(p[0]) * w;
                s1 += i32::from(p[1]) * w;
                s2 += i32::from(p[2]) * w;
            }
            px[0] = clip8(s0);
            px[1] = clip8(s1);
            px[2] = clip8(s2);
        }
    }
}

/// Vertical pass: `src` is RGB `width` wide, `out` gets `c.bounds.len()` rows.
fn vertical(src: &[u8], width: usize, c: &Coeffs, out: &mut [u8]) {
    let stride = width * 3;
    let mut acc = vec![0i32; stride];
    for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
        let k = &c.kk[yy * c.ksize..yy * c.ksize + n];
        acc.fill(HALF);
        for (dy, &w) in k.iter().enumerate() {
            let row = &src[(ymin + dy) * stride..(ymin + dy + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * w;
            }
        }
        for (o, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// Pillow's `ImagingScaleAffine` for a whole-image scale (`Image.resize(.., NEAREST)`).
fn nearest(src: &[u8], in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    // C: COORD(v) = v < 0 ? -1 : (int)v
    let coord = |v: f64| if v < 0.0 { -1 } else { v as i64 };
    let a0 = f64::from(in_w as f32) / out_w as f64;
    let a4 = f64::from(in_h as f32) / out_h as f64;
    let mut xintab = vec![None; out_w];
    let mut xo = a0 * 0.5;
    for slot in xintab.iter_mut() {
        let xin = coord(xo);
        if xin >= 0 && (xin as usize) < in_w {
            *slot = Some(xin as usize);
        }
        xo += a0;
    }
    let mut out = vec![0u8; out_w * out_h * 3];
    let mut yo = a4 * 0.5;
    for out_row in out.chunks_exact_mut(out_w * 3) {
        let yi = coord(yo);
        if yi >= 0 && (yi as usize) < in_h {
            let row = &src[yi as usize * in_w * 3..(yi as usize + 1) * in_w * 3];
            for (px, xin) in out_row.chunks_exact_mut(3).zip(&xintab) {
                if let Some(x) = xin {
                    px.copy_from_slice(&row[x * 3..x * 3 + 3]);
                }
            }
        }
        yo += a4;
    }
    out
}

/// Resizes an RGB8 image (`src.len() == in_w * in_h * 3`, both sizes non-zero) to
/// `out_w x out_h` exactly as Pillow's `Image.resize((out_w, out_h), resample)` does.
pub fn resize_rgb8(
    src: &[u8],
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
    resample: Resample,
) -> Vec<u8> {
    assert_eq!(
        src.len(),
        in_w * in_h * 3,
        "resize_rgb8: buffer does not match the size"
    );
    assert!(
        in_w > 0 && in_h > 0 && out_w > 0 && out_h > 0,
        "resize_rgb8: empty image"
    );
    if in_w == out_w && in_h == out_h {
        return src.to_vec();
    }
    let Some((filter, support)) = resample.filter() else {
        return nearest(src, in_w, in_h, out_w, out_h);
    };
    let need_h = out_w != in_w;
    let need_v = out_h != in_h;
    // Pillow >= 12 (`ImagingResampleInner`): "If height is being scaled down more than twice the
    // amount the width is, run the vertical pass first".
    let (dh, dw) = (in_h as i64 - out_h as i64, in_w as i64 - out_w as i64);
    let horizontal_first = !(dh > 0 && dh > dw * 2);
    let ch = need_h.then(|| precompute_coeffs(in_w, out_w, filter, support));
    let cv = need_v.then(|| precompute_coeffs(in_h, out_h, filter, support));
    match (ch, cv) {
        (Some(ch), None) => {
            let mut out = vec![0u8; out_w * in_h * 3];
            horizontal(src, in_w, 0, in_h, &ch, &mut out);
            out
        }
        (None, Some(cv)) => {
            let mut out = vec![0u8; in_w * out_h * 3];
            vertical(src, in_w, &cv, &mut out);
            out
        }
        (Some(ch), Some(mut cv)) if horizontal_first => {
            // Only the source rows the vertical pass reads go through the horizontal pass.
            let ybox_first = cv.bounds[0].0;
            let last = cv.bounds[out_h - 1];
            let rows = last.0 + last.1 - ybox_first;
            for b in &mut cv.bounds {
                b.0 -= ybox_first;
            }
            let mut tmp = vec![0u8; out_w * rows * 3];
            horizontal(src, in_w, ybox_first, rows, &ch, &mut tmp);
            let mut out = vec![0u8; out_w * out_h * 3];
            vertical(&tmp, out_w, &cv, &mut out);
            out
        }
        (Some(ch), Some(cv)) => {
            let mut tmp = vec![0u8; in_w * out_h * 3];
            vertical(src, in_w, &cv, &mut tmp);
            let mut out = vec![0u8; out_w * out_h * 3];
            horizontal(&tmp, in_w, 0, out_h, &ch, &mut out);
            out
        }
        (None, None) => src.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 13 * 9 * 3];
        for r in [
            Resample::Bilinear,
            Resample::Bicubic,
            Resample::Nearest,
            Resample::Lanczos,
        ] {
            let out = resize_rgb8(&src, 13, 9, 5, 21, r);
            assert!(out.iter().all(|&v| v == 77), "{r:?}");
        }
    }

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        let c = precompute_coeffs(1000, 346, bilinear_filter, 1.0);
        for (i, &(_, n)) in c.bounds.iter().enumerate() {
            let s: i32 = c.kk[i * c.ksize..i * c.ksize + n].iter().sum();
            assert!((s - (1 << PRECISION_BITS)).abs() <= n as i32, "{s}");
        }
    }
}
