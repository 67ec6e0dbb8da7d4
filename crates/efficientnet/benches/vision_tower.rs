//! Full-size ALIGN vision tower (align-base: EfficientNet-B7, 289x289) throughput on the
//! default device (`BURN_DEVICE` overrides). Weights are random: speed does not depend on them.
//!
//! `cargo bench -p efficientnet` (add `-- --quick` for a short run). `batch_N` is the inference
//! form that loading gives (`EfficientNet::for_inference`: on flex, the fused path);
//! `batch_1_burn_ops` runs the same folded network through burn's ops, and
//! `batch_1_unfolded_bn` without BatchNorm folding, for comparison with `batch_1`.

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use efficientnet::{EfficientNet, EfficientNetConfig};

fn align_base() -> EfficientNetConfig {
    EfficientNetConfig::from_json_str(r#"{"image_size": 289, "hidden_dim": 640}"#)
        .expect("valid config")
}

fn bench(c: &mut Criterion) {
    let device = Device::default();
    let config = align_base();
    let unfolded = EfficientNet::new(&config, &device).expect("model");
    let model = EfficientNet::new(&config, &device)
        .expect("model")
        .for_inference();
    let burn_ops = EfficientNet::new(&config, &device)
        .expect("model")
        .fold_batch_norms();
    let mut group = c.benchmark_group("align_base_vision_tower_289");
    group.sample_size(10);
    for batch in [1usize, 8] {
        let x = Tensor::<4>::random(
            [batch, 3, 289, 289],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| {
                let out = model.forward(x.clone()).expect("forward");
                out.pooler_output.into_data()
            })
        });
    }
    let x = Tensor::<4>::random([1, 3, 289, 289], Distribution::Uniform(-1.0, 1.0), &device);
    group.throughput(Throughput::Elements(1));
    // What the fused path buys (on flex; elsewhere both run burn's ops).
    group.bench_function("batch_1_burn_ops", |b| {
        b.iter(|| {
            let out = burn_ops.forward(x.clone()).expect("forward");
            out.pooler_output.into_data()
        })
    });
    // What BatchNorm folding buys: the same network with a BN op after every conv.
    group.bench_function("batch_1_unfolded_bn", |b| {
        b.iter(|| {
            let out = unfolded.forward(x.clone()).expect("forward");
            out.pooler_output.into_data()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
