//! Helpers shared by the align-model integration tests: the workspace's `test-support`, with
//! this crate's fixture directory and its assertions.
#![allow(dead_code, unused_imports)] // each test binary uses a subset

use std::path::{Path, PathBuf};

pub use test_support::{
    assert_mentions, device, float_tensor, int_tensor, max_abs_diff, read_npy, shape_mismatch,
    to_vec,
};

pub fn fixtures() -> PathBuf {
    test_support::fixtures("align")
}

/// Asserts that `actual` equals the reference array `dir/name.npy` within `tol`; returns the
/// max abs difference.
pub fn assert_close(actual: &[f32], dir: &Path, name: &str, tol: f32) -> f32 {
    let (_, expected) = read_npy::<f32>(&dir.join(format!("{name}.npy")));
    let diff = max_abs_diff(actual, &expected);
    assert!(diff <= tol, "{name}: max abs diff {diff} > {tol}");
    diff
}

/// Asserts that the logits `actual` are within 1e-5 of the float64 network's
/// (`logits_per_image_f64.npy`, the value every float32 implementation approximates) and within
/// 2e-5 of transformers' float32 output (itself 6.4e-6 from the float64 value on the tiny
/// fixture: two float32 results may err in opposite directions).
pub fn assert_logits_close(actual: &[f32], dir: &Path) {
    let (_, exact) = read_npy::<f64>(&dir.join("logits_per_image_f64.npy"));
    assert_eq!(actual.len(), exact.len(), "logits: length");
    let diff = actual
        .iter()
        .zip(&exact)
        .map(|(&a, &e)| (a as f64 - e).abs())
        .fold(
            0.0f64,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        );
    assert!(
        diff <= 1e-5,
        "logits: max abs diff {diff} from float64 > 1e-5"
    );
    assert_close(actual, dir, "logits_per_image", 2e-5);
}
