//! Helpers shared by the bert integration tests: the workspace's `test-support`, with this
//! crate's fixture directory.
#![allow(dead_code, unused_imports)] // each test binary uses a subset

use std::path::PathBuf;

pub use test_support::{
    assert_mentions, device, int_tensor, max_abs_diff, read_npy, shape_mismatch, to_vec,
};

pub fn fixtures() -> PathBuf {
    test_support::fixtures("bert")
}
