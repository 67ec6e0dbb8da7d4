//! `cargo bench -p align-processor`: images/s of decode + preprocess of a 640x480 JPEG, and
//! texts/s of tokenising, single-threaded (one item per call) and batched (rayon).

use std::hint::black_box;

use align_processor::{ImageConfig, ImageProcessor, TextTokenizer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/processor"
);

fn images(c: &mut Criterion) {
    let jpeg = std::fs::read(format!("{FIXTURES}/images/bench_640x480.jpg")).expect("bench image");
    let proc = ImageProcessor::new(ImageConfig::align_base());
    let mut g = c.benchmark_group("image_640x480_jpeg");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode+preprocess, 1 image", |b| {
        b.iter(|| {
            proc.preprocess_bytes(&[("bench.jpg", black_box(&jpeg[..]))])
                .unwrap()
        })
    });
    let batch: Vec<(&str, &[u8])> = (0..16).map(|_| ("bench.jpg", &jpeg[..])).collect();
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("decode+preprocess, batch of 16 (rayon)", |b| {
        b.iter(|| proc.preprocess_bytes(black_box(&batch)).unwrap())
    });
    g.finish();
}

fn texts(c: &mut Criterion) {
    let tok = TextTokenizer::from_dir(format!("{FIXTURES}/tokenizer_json")).expect("tokenizer");
    let corpus: Vec<String> = serde_json::from_str::<Vec<String>>(
        &std::fs::read_to_string(format!("{FIXTURES}/text_corpus.json")).expect("corpus"),
    )
    .expect("corpus json");
    // Typical captions: the short strings of the corpus.
    let captions: Vec<&str> = corpus
        .iter()
        .map(String::as_str)
        .filter(|s| s.len() < 200)
        .take(64)
        .collect();
    let mut g = c.benchmark_group("tokenize");
    g.throughput(Throughput::Elements(1));
    g.bench_function("1 caption", |b| {
        b.iter(|| {
            tok.encode_batch(&[black_box("a photo of a cat sitting on a red sofa")])
                .unwrap()
        })
    });
    g.throughput(Throughput::Elements(captions.len() as u64));
    g.bench_function(format!("batch of {} captions", captions.len()), |b| {
        b.iter(|| tok.encode_batch(black_box(&captions)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, images, texts);
criterion_main!(benches);
