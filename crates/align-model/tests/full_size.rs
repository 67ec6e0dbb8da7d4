//! Full-size parity: the align-base architecture with random weights, generated on demand.
//!
//! ```text
//! python3 tests/reference/make_align_base_random.py              # model + vision references
//! MINILM_DIR=... python3 tests/reference/make_align_fixtures.py full   # end-to-end references
//! ```
//!
//! The tests are `#[ignore]`d: `cargo xtask test --include-ignored` runs them once the data is
//! there (without it they fail, saying how to make it).

mod common;

use std::path::{Path, PathBuf};

use align_model::{Align, convert_weights, l2_normalize};
use align_processor::decode_path;
use common::*;

fn model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-data/align-base-random");
    assert!(
        dir.join("reference/e2e/logits_per_image.npy").is_file(),
        "{} has no end-to-end reference; run python3 tests/reference/make_align_base_random.py \
         then MINILM_DIR=<dir> python3 tests/reference/make_align_fixtures.py full",
        dir.display()
    );
    dir
}

/// image_embeds and text_embeds within 1e-4, logits_per_image within 1e-3 (temperature 0.05),
/// from the reference's pixels and ids, and through our own processor from the PNG files.
fn check(align: &Align, r: &Path) {
    let dev = device();
    let pixels = float_tensor::<4>(&r.join("pixel_values.npy"), &dev);
    let ids = int_tensor(&r.join("input_ids.npy"), &dev);
    let mask = int_tensor(&r.join("attention_mask.npy"), &dev);
    let image = l2_normalize(align.model.image_features(pixels).unwrap());
    let text = l2_normalize(
        align
            .model
            .text_features(ids.clone(), mask, ids.zeros_like()),
    );
    let d_img = assert_close(&to_vec(image), r, "image_embeds", 1e-4);
    let d_txt = assert_close(&to_vec(text), r, "text_embeds", 1e-4);

    let photos: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(r.join("photos.json")).unwrap()).unwrap();
    let labels: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(r.join("texts.json")).unwrap()).unwrap();
    let images: Vec<_> = photos
        .iter()
        .map(|p| decode_path(r.join(format!("{p}.png")), align.images.decode_options()).unwrap())
        .collect();
    let results = align.zero_shot(&images, &labels).unwrap();
    let logits: Vec<f32> = results.iter().flat_map(|z| z.logits.clone()).collect();
    let d_logits = assert_close(&logits, r, "logits_per_image", 1e-3);
    let d_pipe_img = assert_close(
        &to_vec(align.embed_images(&images).unwrap()),
        r,
        "image_embeds",
        1e-4,
    );
    eprintln!(
        "full-size parity: image_embeds {d_img:.2e}, text_embeds {d_txt:.2e}, \
         logits_per_image {d_logits:.2e} (pipeline), image_embeds via processor {d_pipe_img:.2e}"
    );
}

#[test]
#[ignore = "needs test-data/align-base-random and its end-to-end reference (see the module docs)"]
fn full_size_from_hf_directory_and_converted() {
    let dir = model_dir();
    let r = dir.join("reference/e2e");
    let dev = device();
    let align = Align::from_dir(&dir, &dev).unwrap();
    check(&align, &r);
    drop(align);

    let out = tempfile::tempdir().unwrap();
    let report = convert_weights(&dir, out.path(), &dev, |_| {}).unwrap();
    eprintln!(
        "converted: safetensors load {:.2}s, model.bpk load {:.2}s",
        report.source_load_s, report.converted_load_s
    );
    let align = Align::from_dir(out.path(), &dev).unwrap();
    check(&align, &r);
}
