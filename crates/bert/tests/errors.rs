//! Bad input gives a typed error naming the file / key / shape, never a panic.

mod common;

use std::collections::HashMap;
use std::path::Path;

use bert::{BertConfig, BertInput, BertModel, CheckpointError, Error};
use common::*;
use safetensors::SafeTensors;

fn tiny_dir() -> std::path::PathBuf {
    fixtures().join("tiny_gelu")
}

fn config() -> BertConfig {
    BertConfig::from_file(tiny_dir().join("config.json")).unwrap()
}

/// Re-serialises the tiny checkpoint after `edit` changed its tensors.
fn edited_checkpoint(
    dir: &Path,
    edit: impl FnOnce(&mut HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) -> std::path::PathBuf {
    let bytes = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<_, _> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, (dtype, shape, data))| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
            (k.clone(), view)
        })
        .collect();
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

#[test]
fn truncated_checkpoint_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    let path = tmp.path().join("model.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = BertModel::from_safetensors(&path, &config(), &device()).unwrap_err();
    assert!(
        matches!(err, Error::Checkpoint(CheckpointError::Unreadable { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = edited_checkpoint(tmp.path(), |t| {
        t.remove("encoder.layer.1.output.dense.weight").unwrap();
    });
    let err = BertModel::from_safetensors(&path, &config(), &device()).unwrap_err();
    match &err {
        Error::Checkpoint(CheckpointError::MissingKeys { keys, .. }) => {
            assert_eq!(keys, &["encoder.layer.1.output.dense.weight".to_string()])
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn wrong_shape_names_key_and_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = edited_checkpoint(tmp.path(), |t| {
        let entry = t
            .get_mut("encoder.layer.0.intermediate.dense.weight")
            .unwrap();
        entry.1 = vec![36, 32];
        entry.2.truncate(36 * 32 * 4);
    });
    let err = BertModel::from_safetensors(&path, &config(), &device()).unwrap_err();
    let Error::Checkpoint(err) = &err else {
        panic!("unexpected error {err}")
    };
    let (key, expected, actual) = shape_mismatch(err);
    assert_eq!(key, "encoder.layer.0.intermediate.dense.weight");
    assert_eq!(expected, [37, 32]);
    assert_eq!(actual, [36, 32]);
}

#[test]
fn missing_layer_norm_is_named_with_checkpoint_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = edited_checkpoint(tmp.path(), |t| {
        t.remove("encoder.layer.0.attention.output.LayerNorm.weight")
            .unwrap();
    });
    let err = BertModel::from_safetensors(&path, &config(), &device()).unwrap_err();
    assert!(
        err.to_string()
            .contains("encoder.layer.0.attention.output.LayerNorm.weight"),
        "{err}"
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let err = BertModel::from_safetensors("/nonexistent/model.safetensors", &config(), &device())
        .unwrap_err();
    assert!(
        matches!(err, Error::Checkpoint(CheckpointError::Io { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("/nonexistent/model.safetensors"));
}

#[test]
fn config_missing_field_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(tiny_dir().join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json.as_object_mut().unwrap().remove("hidden_size");
    let path = tmp.path().join("config.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let err = BertConfig::from_file(&path).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert_mentions(&err, &["hidden_size", "config.json"]);
}

#[test]
fn config_with_unknown_activation_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(tiny_dir().join("config.json")).unwrap();
    let text = text.replace("\"gelu\"", "\"swishy\"");
    let path = tmp.path().join("config.json");
    std::fs::write(&path, text).unwrap();
    let err = BertConfig::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("swishy"), "{err}");
}

#[test]
fn out_of_range_ids_are_rejected() {
    let config = config();
    let dev = device();
    let err = BertInput::new(&config, &[vec![101, 99]], &[vec![1, 1]], None, &dev).unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");
    let err = BertInput::new(
        &config,
        &[vec![1, 2], vec![3]],
        &[vec![1, 1], vec![1]],
        None,
        &dev,
    )
    .unwrap_err();
    assert!(err.to_string().contains("row 1"), "{err}");
    let long = vec![vec![1u32; config.max_position_embeddings + 1]];
    let err = BertInput::new(&config, &long, &long, None, &dev).unwrap_err();
    assert!(err.to_string().contains("sequence length"), "{err}");
}
