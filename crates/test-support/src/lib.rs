//! Helpers for the workspace's tests and benches (a dev-dependency only): where the fixtures
//! are, `.npy` reading, comparisons, checks of error messages, and deterministic test values.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};

/// The workspace root (this crate is `crates/test-support` in it).
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/test-support sits two levels below the workspace root")
}

/// `tests/fixtures/<name>` at the workspace root (the small committed references).
pub fn fixtures(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(name)
}

/// `test-data/` at the workspace root (the references made on demand, not committed).
pub fn test_data() -> PathBuf {
    workspace_root().join("test-data")
}

/// The device under test: burn's default, i.e. `BURN_DEVICE` when set.
pub fn device() -> Device {
    Device::default()
}

/// A C-order `.npy` file's shape and values; panics naming the file.
pub fn read_npy<T: npyz::Deserialize>(path: &Path) -> (Vec<usize>, Vec<T>) {
    let fail = |e: &dyn std::fmt::Display| -> ! { panic!("{}: {e}", path.display()) };
    let bytes = std::fs::read(path).unwrap_or_else(|e| fail(&e));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| fail(&e));
    assert_eq!(
        npy.order(),
        npyz::Order::C,
        "{}: not C order",
        path.display()
    );
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec().unwrap_or_else(|e| fail(&e)))
}

/// A float32 `.npy` file as a tensor of its shape.
pub fn float_tensor<const D: usize>(path: &Path, device: &Device) -> Tensor<D> {
    let (shape, data) = read_npy::<f32>(path);
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// An int64 `.npy` file as an integer tensor of its shape.
pub fn int_tensor<const D: usize>(path: &Path, device: &Device) -> Tensor<D, Int> {
    let (shape, data) = read_npy::<i64>(path);
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// A float tensor's values as float32, in row-major order.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The largest `|a - b|`, infinity where either side is NaN; panics on a length mismatch.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() { f32::INFINITY } else { m.max(d) }
    })
}

/// Asserts that `err`'s message contains every one of `parts` (file names, keys, fields).
pub fn assert_mentions(err: &impl std::fmt::Display, parts: &[&str]) {
    let msg = err.to_string();
    for part in parts {
        assert!(msg.contains(part), "`{part}` is not in the message: {msg}");
    }
}

/// The key and the expected and actual shapes of a [`checkpoint::Error::ShapeMismatch`];
/// panics, naming the error, on any other.
pub fn shape_mismatch(err: &checkpoint::Error) -> (&str, &[usize], &[usize]) {
    match err {
        checkpoint::Error::ShapeMismatch {
            key,
            expected,
            actual,
            ..
        } => (key, expected, actual),
        other => panic!("expected a checkpoint shape mismatch, got: {other}"),
    }
}

/// `len` values in [-1, 1] in steps of 0.001 from a xorshift sequence seeded by `seed`: the
/// same values on every run and platform.
pub fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// `n` L2-normalised vectors of `dim` values that cluster as embeddings do: each is a shared
/// direction (every embedding of a model leans one way) plus one of `n / 100` cluster centres
/// plus noise of half their scale, so that neighbours within a cluster are near (cosine ~0.8)
/// and other clusters farther (~0.5). Row-major `[n, dim]`; deterministic in `seed`.
pub fn clustered(n: usize, dim: usize, seed: u32) -> Vec<f32> {
    let clusters = n.div_ceil(100).max(1);
    let shared = values(dim, seed);
    let centres = values(clusters * dim, seed.wrapping_add(1));
    let mut out = Vec::with_capacity(n * dim);
    for i in 0..n {
        let c = &centres[(i % clusters) * dim..][..dim];
        let noise = values(dim, seed.wrapping_add(2).wrapping_add(i as u32));
        let v: Vec<f32> = (0..dim)
            .map(|j| shared[j] + c[j] + 0.5 * noise[j])
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.extend(v.iter().map(|x| x / norm));
    }
    out
}

/// Writes a collection as `align index` lays it out (align.json, manifests, f16 image
/// embeddings), one partition per element of `parts` (row-major `[rows, dim]`), named
/// `000000`, `000001`, ...; metadata and captions are left out.
pub fn write_collection(out: &Path, dim: usize, parts: &[Vec<f32>]) {
    use align_collection::layout::{Manifest, write_json, write_npy};
    let layout = align_collection::Layout::new(out);
    layout.create().unwrap();
    let settings = align_collection::Settings {
        model: "test".into(),
        dim,
        emb_dtype: align_collection::EmbDtype::F16,
        text: false,
        shards: 1,
    };
    write_json(&layout.settings(), &settings).unwrap();
    for (i, values) in parts.iter().enumerate() {
        let p = format!("{i:06}");
        write_npy(&layout.img_emb(&p), values, dim, settings.emb_dtype).unwrap();
        write_json(&layout.manifest(&p), &Manifest::default()).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_abs_diff_does_not_hide_a_nan() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
        assert_eq!(max_abs_diff(&[f32::NAN, 2.0], &[1.0, 2.5]), f32::INFINITY);
        assert_eq!(max_abs_diff(&[1.0, f32::NAN], &[1.0, 2.0]), f32::INFINITY);
    }

    #[test]
    fn values_are_deterministic_and_in_range() {
        let v = values(1000, 7);
        assert_eq!(v, values(1000, 7));
        assert_ne!(v, values(1000, 8));
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
    }
}
