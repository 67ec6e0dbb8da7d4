//! End-to-end parity with transformers' AlignModel / AlignProcessor on the committed tiny
//! random ALIGN (tests/reference/make_align_fixtures.py tiny).

mod common;

use align_model::{Align, AlignModel, convert_weights, l2_normalize};
use align_processor::decode_path;
use burn::tensor::{DType, FloatDType};
use common::*;

fn reference() -> std::path::PathBuf {
    fixtures().join("tiny/reference")
}

/// Model only: the reference's own pixel values and token ids in, every output compared.
fn check_model(model: &AlignModel) {
    let dev = device();
    let r = reference();
    let pixels = float_tensor::<4>(&r.join("pixel_values.npy"), &dev);
    let ids = int_tensor(&r.join("input_ids.npy"), &dev);
    let mask = int_tensor(&r.join("attention_mask.npy"), &dev);
    let types = ids.zeros_like();
    let image_features = model.image_features(pixels).unwrap();
    let text_features = model.text_features(ids, mask, types);
    assert_close(&to_vec(image_features.clone()), &r, "image_features", 1e-5);
    assert_close(&to_vec(text_features.clone()), &r, "text_features", 1e-5);
    let image_embeds = l2_normalize(image_features);
    let text_embeds = l2_normalize(text_features);
    assert_close(&to_vec(image_embeds.clone()), &r, "image_embeds", 1e-5);
    assert_close(&to_vec(text_embeds.clone()), &r, "text_embeds", 1e-5);
}

#[test]
fn parity_tiny_model_from_safetensors() {
    let model = AlignModel::from_dir(fixtures().join("tiny"), &device()).unwrap();
    check_model(&model);
}

#[test]
fn parity_tiny_model_from_pytorch_bin() {
    let model = AlignModel::from_dir(fixtures().join("tiny_bin"), &device()).unwrap();
    check_model(&model);
}

/// The whole pipeline: PNG files and label strings in, logits and probabilities out.
#[test]
fn parity_tiny_zero_shot_pipeline() {
    let dev = device();
    let dir = fixtures().join("tiny");
    let align = Align::from_dir(&dir, &dev).unwrap();
    let labels: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(reference().join("texts.json")).unwrap())
            .unwrap();
    let input = align.tokenize(&labels).unwrap();
    let ids: Vec<i64> = input
        .input_ids
        .clone()
        .into_data()
        .convert::<i64>()
        .try_to_vec()
        .unwrap();
    assert_eq!(
        ids,
        read_npy::<i64>(&reference().join("input_ids.npy")).1,
        "token ids"
    );

    let images: Vec<_> = ["image0.png", "image1.png"]
        .iter()
        .map(|f| decode_path(dir.join(f), align.images.decode_options()).unwrap())
        .collect();
    let results = align.zero_shot(&images, &labels).unwrap();
    let logits: Vec<f32> = results.iter().flat_map(|r| r.logits.clone()).collect();
    let probs: Vec<f32> = results.iter().flat_map(|r| r.probs.clone()).collect();
    assert_logits_close(&logits, &reference());
    assert_close(&probs, &reference(), "probs", 1e-5);

    let embeds = align.embed_images(&images).unwrap();
    assert_close(&to_vec(embeds), &reference(), "image_embeds", 1e-5);
    let embeds = align.embed_texts(&labels).unwrap();
    assert_close(&to_vec(embeds), &reference(), "text_embeds", 1e-5);
    // Grouped by length, in batches that split the labels differently: same rows, same order.
    for batch_size in [1, 2, labels.len()] {
        let embeds = align.embed_texts_batched(&labels, batch_size).unwrap();
        assert_close(&to_vec(embeds), &reference(), "text_embeds", 1e-5);
    }
    assert!(align.embed_texts_batched(&labels, 0).is_err());
    assert!(align.embed_texts_batched(&[] as &[&str], 4).is_err());
}

#[test]
fn parity_tiny_converted_burnpack() {
    let dev = device();
    let out = tempfile::tempdir().unwrap();
    let mut steps = Vec::new();
    let report = convert_weights(&fixtures().join("tiny"), out.path(), &dev, |s| {
        steps.push(s.to_string())
    })
    .unwrap();
    assert_eq!(steps.len(), 5);
    assert_eq!(report.max_abs_diff, 0.0);
    for f in [
        "model.bpk",
        "config.json",
        "preprocessor_config.json",
        "vocab.txt",
        "tokenizer_config.json",
    ] {
        assert!(out.path().join(f).is_file(), "{f} not written");
    }
    let model = AlignModel::from_dir(out.path(), &dev).unwrap();
    check_model(&model);
}

/// Half precision (`with_float_dtype(F16)`, the CLI's `--dtype f16`): on a device with f16
/// the embeddings stay close to transformers' float32 ones and come back as f32; elsewhere
/// the cast is refused with an error naming the type.
#[test]
fn parity_tiny_model_in_half_precision() {
    let dev = device();
    let r = reference();
    let model = AlignModel::from_dir(fixtures().join("tiny"), &dev).unwrap();
    if !dev.supports_dtype(FloatDType::F16) {
        let err = model.with_float_dtype(FloatDType::F16).unwrap_err();
        assert!(err.to_string().contains("F16"), "{err}");
        return;
    }
    let model = model.with_float_dtype(FloatDType::F16).unwrap();
    let pixels = float_tensor::<4>(&r.join("pixel_values.npy"), &dev);
    let ids = int_tensor(&r.join("input_ids.npy"), &dev);
    let mask = int_tensor(&r.join("attention_mask.npy"), &dev);
    let image_embeds = l2_normalize(model.image_features(pixels).unwrap());
    let text_embeds = l2_normalize(model.text_features(ids.clone(), mask, ids.zeros_like()));
    assert_eq!(image_embeds.dtype(), DType::F32);
    assert_eq!(text_embeds.dtype(), DType::F32);
    let image = assert_close(&to_vec(image_embeds), &r, "image_embeds", 5e-3);
    let text = assert_close(&to_vec(text_embeds), &r, "text_embeds", 5e-3);
    eprintln!("f16 vs transformers f32: image_embeds {image:.2e}, text_embeds {text:.2e}");
    // Not the f32 numbers: the computation did run in half precision.
    assert!(image > 1e-6 && text > 1e-6, "{image} {text}");
}
