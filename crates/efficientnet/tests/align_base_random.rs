//! Full size: the align-base vision tower with random (non-degenerate) weights, against
//! transformers on real photos. The data is generated on demand:
//! `python3 tests/reference/make_align_base_random.py` (writes test-data/align-base-random/);
//! the test is `#[ignore]`d, run by `cargo xtask test --include-ignored`.

mod common;

use burn::tensor::Device;
use common::max_abs_diff;
use efficientnet::{EfficientNet, EfficientNetConfig};
use test_support::{float_tensor, test_data};

const POOLED_TOL: f32 = 1e-4;
const STAGE_TOL: f32 = 5e-4;

#[test]
#[ignore = "needs test-data/align-base-random: run python3 tests/reference/make_align_base_random.py"]
fn align_base_random_photos() {
    let dir = test_data().join("align-base-random");
    let reference = dir.join("reference");
    assert!(
        dir.join("model.safetensors").exists() && reference.join("meta.json").exists(),
        "{} is absent; run python3 tests/reference/make_align_base_random.py",
        dir.display()
    );
    let device = Device::default();
    let config = EfficientNetConfig::from_file(dir.join("config.json")).expect("config");
    assert_eq!(config.blocks().len(), 55);
    let model = EfficientNet::from_dir(&dir, &device).expect("load");
    // Folded, in the module or (flex) in its fused copy.
    assert!(model.runs_fused() || !model.has_batch_norms());
    if let Ok(name) = std::env::var("BURN_DEVICE") {
        assert_eq!(model.runs_fused(), name == "flex", "device {name}");
    }

    let mut worst_pooled = 0.0f32;
    let mut worst_stages = vec![0.0f32; config.in_channels.len()];
    for photo in ["chelsea", "coffee", "astronaut"] {
        let x = float_tensor::<4>(
            &reference.join(format!("{photo}_pixel_values.npy")),
            &device,
        );
        let out = model.forward_with_intermediates(x).expect("forward");
        let pooled = max_abs_diff(
            out.output.pooler_output,
            &reference.join(format!("{photo}_pooled.npy")),
        );
        let stages: Vec<f32> = out
            .stages
            .into_iter()
            .enumerate()
            .map(|(i, s)| max_abs_diff(s, &reference.join(format!("{photo}_stage_{i}.npy"))))
            .collect();
        println!("{photo}: pooled max abs diff {pooled:.3e}; stages {stages:?}");
        worst_pooled = worst_pooled.max(pooled);
        for (w, s) in worst_stages.iter_mut().zip(&stages) {
            *w = w.max(*s);
        }
    }
    println!("worst: pooled {worst_pooled:.3e}; stages {worst_stages:?}");
    assert!(
        worst_pooled <= POOLED_TOL,
        "pooled {worst_pooled:e} > {POOLED_TOL:e}"
    );
    for (i, w) in worst_stages.iter().enumerate() {
        assert!(*w <= STAGE_TOL, "stage {i}: {w:e} > {STAGE_TOL:e}");
    }
}
