//! Bad model directories and checkpoints give errors naming the file and the key.

mod common;

use std::path::Path;

use align_model::{AlignConfig, AlignModel, CheckpointError, Error};
use common::*;

/// A temporary directory holding a copy of the tiny fixture's files.
fn tiny_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("tiny")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    tmp
}

fn load_error(dir: &Path) -> Error {
    AlignModel::from_dir(dir, &device()).unwrap_err()
}

#[test]
fn missing_directory_and_weights() {
    assert_mentions(
        &load_error(Path::new("/nonexistent/align")),
        &["/nonexistent/align"],
    );

    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("tiny/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    assert_mentions(
        &load_error(tmp.path()),
        &["model.safetensors", "pytorch_model.bin"],
    );
}

#[test]
fn truncated_weights_are_an_error() {
    let tmp = tiny_copy();
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let err = load_error(tmp.path());
    assert!(
        matches!(err, Error::Checkpoint(CheckpointError::Unreadable { .. })),
        "{err}"
    );
}

#[test]
fn config_of_another_architecture_names_key_and_shapes() {
    // Same weights, a config whose projection is wider: the checkpoint no longer fits.
    let tmp = tiny_copy();
    let path = tmp.path().join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["projection_dim"] = 48.into();
    std::fs::write(&path, json.to_string()).unwrap();
    let err = load_error(tmp.path());
    let Error::Checkpoint(inner) = &err else {
        panic!("unexpected error {err}")
    };
    let (key, expected, actual) = shape_mismatch(inner);
    assert!(key.starts_with("text_projection."), "{key}");
    assert!(
        expected.contains(&48) && actual.contains(&40),
        "{expected:?} {actual:?}"
    );
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
    assert_mentions(&err, &["text_config", "config.json"]);
}
