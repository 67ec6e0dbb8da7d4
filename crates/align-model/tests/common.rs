//! Helpers shared by the align-model integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/align")
}

/// The device under test: burn's default, i.e. `BURN_DEVICE` when set.
pub fn device() -> Device {
    Device::default()
}

fn npy(path: &Path) -> npyz::NpyFile<std::io::Cursor<Vec<u8>>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    npyz::NpyFile::new(std::io::Cursor::new(bytes)).unwrap()
}

pub fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let npy = npy(path);
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec().unwrap())
}

pub fn read_f64(path: &Path) -> Vec<f64> {
    npy(path).into_vec().unwrap()
}

pub fn read_i64(path: &Path) -> (Vec<usize>, Vec<i64>) {
    let npy = npy(path);
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec().unwrap())
}

pub fn float_tensor<const D: usize>(path: &Path, device: &Device) -> Tensor<D> {
    let (shape, data) = read_f32(path);
    Tensor::from_data(TensorData::new(data, shape), device)
}

pub fn int_tensor(path: &Path, device: &Device) -> Tensor<2, Int> {
    let (shape, data) = read_i64(path);
    Tensor::from_data(TensorData::new(data, shape), device)
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

/// Asserts that `actual` equals the reference array `dir/name.npy` within `tol`; returns the
/// max abs difference.
pub fn assert_close(actual: &[f32], dir: &Path, name: &str, tol: f32) -> f32 {
    let (_, expected) = read_f32(&dir.join(format!("{name}.npy")));
    let diff = max_abs_diff(actual, &expected);
    assert!(diff <= tol, "{name}: max abs diff {diff} > {tol}");
    diff
}

/// Asserts that the logits `actual` are within 1e-5 of the float64 network's
/// (`logits_per_image_f64.npy`, the value every float32 implementation approximates) and within
/// 2e-5 of transformers' float32 output (itself 6.4e-6 from the float64 value on the tiny
/// fixture: two float32 results may err in opposite directions).
pub fn assert_logits_close(actual: &[f32], dir: &Path) {
    let exact = read_f64(&dir.join("logits_per_image_f64.npy"));
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
