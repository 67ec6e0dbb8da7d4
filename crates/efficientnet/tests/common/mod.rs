//! Helpers shared by the integration tests: the workspace's `test-support`, with this crate's
//! fixture directory and a comparison of a tensor with a reference `.npy`.
#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;

pub fn fixtures() -> PathBuf {
    test_support::fixtures("efficientnet")
}

/// Max |a - b| between a tensor and a reference `.npy` (infinity where either is NaN); panics
/// on a shape mismatch.
pub fn max_abs_diff<const D: usize>(actual: Tensor<D>, reference: &Path) -> f32 {
    let (shape, want) = test_support::read_npy::<f32>(reference);
    assert_eq!(
        actual.dims().to_vec(),
        shape,
        "shape of {}",
        reference.display()
    );
    test_support::max_abs_diff(&test_support::to_vec(actual), &want)
}
