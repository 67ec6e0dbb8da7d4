//! Bad model directories and checkpoints give errors naming the file and the key.

mod common;

use align_model::{AlignConfig, AlignModel, CheckpointError, Error};
use common::*;

fn copy_tiny(to: &std::path::Path) {
    for entry in std::fs::read_dir(fixtures().join("tiny")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn missing_directory_and_weights() {
    let err = AlignModel::from_dir("/nonexistent/align", &device()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/align"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("tiny/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let err = AlignModel::from_dir(tmp.path(), &device()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("pytorch_model.bin"),
        "{msg}"
    );
}

#[test]
fn truncated_weights_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tiny(tmp.path());
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let err = AlignModel::from_dir(tmp.path(), &device()).unwrap_err();
    assert!(
        matches!(err, Error::Checkpoint(CheckpointError::Unreadable { .. })),
        "{err}"
    );
}

#[test]
fn config_of_another_architecture_names_key_and_shapes() {
    // Same weights, a config whose projection is wider: the checkpoint no longer fits.
    let tmp = tempfile::tempdir().unwrap();
    copy_tiny(tmp.path());
    let path = tmp.path().join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["projection_dim"] = 48.into();
    std::fs::write(&path, json.to_string()).unwrap();
    let err = AlignModel::from_dir(tmp.path(), &device()).unwrap_err();
    match err {
        Error::Checkpoint(CheckpointError::ShapeMismatch {
            key,
            expected,
            actual,
            ..
        }) => {
            assert!(key.starts_with("text_projection."), "{key}");
            assert!(
                expected.contains(&48) && actual.contains(&40),
                "{expected:?} {actual:?}"
            );
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn bad_config_field_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"text_config": {"hidden_size": "wide"}, "vision_config": {}}"#,
    )
    .unwrap();
    let err = AlignConfig::from_file(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("text_config") && msg.contains("config.json"),
        "{msg}"
    );
}
