//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/efficientnet"
    ))
}

pub fn test_data() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../test-data"))
}

/// Reads an f32 C-order `.npy`.
pub fn read_npy(path: &Path) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    let data = npy.into_vec::<f32>().expect("f32 npy");
    (data, shape)
}

pub fn tensor4(path: &Path, device: &Device) -> Tensor<4> {
    let (data, shape) = read_npy(path);
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Max |a - b| between a tensor and a reference `.npy`; panics on a shape mismatch.
pub fn max_abs_diff<const D: usize>(actual: Tensor<D>, reference: &Path) -> f32 {
    let (want, shape) = read_npy(reference);
    assert_eq!(
        actual.dims().to_vec(),
        shape,
        "shape of {}",
        reference.display()
    );
    let got = actual
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32");
    got.iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) })
}
