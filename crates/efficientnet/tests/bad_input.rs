//! Bad input gives typed errors, never panics.

mod common;

use burn::tensor::{Device, Tensor};
use common::fixtures;
use efficientnet::{CheckpointError, EfficientNet, EfficientNetConfig, Error};
use test_support::{assert_mentions, shape_mismatch};

/// The error of loading fixture `case`'s checkpoint with its config changed by `edit`.
fn load_with_config(case: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Error {
    let dir = fixtures().join(case);
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut cfg);
    let config = EfficientNetConfig::from_json_str(&cfg.to_string()).unwrap();
    EfficientNet::from_safetensors(dir.join("model.safetensors"), &config, &Device::default())
        .unwrap_err()
}

fn model(case: &str) -> EfficientNet {
    EfficientNet::from_dir(fixtures().join(case), &Device::default()).expect("load")
}

#[test]
fn wrong_channel_count() {
    let m = model("align_odd33");
    let x = Tensor::<4>::zeros([1, 4, 33, 33], &Device::default());
    let err = m.forward(x).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InputChannels {
                expected: 3,
                actual: 4
            }
        ),
        "{err}"
    );
    // channels-last input is the classic mistake
    let x = Tensor::<4>::zeros([1, 33, 33, 3], &Device::default());
    let err = m.forward(x).unwrap_err();
    assert!(matches!(err, Error::InputChannels { .. }), "{err}");
    assert!(err.to_string().contains("expects 3"), "{err}");
}

#[test]
fn too_small_or_empty_input() {
    let m = model("align_odd33");
    let err = m
        .forward(Tensor::<4>::zeros([1, 3, 1, 1], &Device::default()))
        .unwrap_err();
    assert!(matches!(err, Error::InputSize { .. }), "{err}");
    let err = m
        .forward(Tensor::<4>::zeros([0, 3, 33, 33], &Device::default()))
        .unwrap_err();
    assert!(matches!(err, Error::InputSize { .. }), "{err}");
}

/// A checkpoint of a wider variant (another width coefficient): shape error naming the key.
#[test]
fn checkpoint_of_another_width() {
    let err = load_with_config("align_odd33", |cfg| cfg["width_coefficient"] = 0.5.into());
    let Error::Checkpoint(inner) = &err else {
        panic!("expected a checkpoint error, got {err}")
    };
    let (key, expected, actual) = shape_mismatch(inner);
    assert!(
        key.starts_with("embeddings.") || key.starts_with("encoder."),
        "{err}"
    );
    assert_ne!(expected, actual);
    assert_mentions(&err, &["model.safetensors", "shape"]);
}

/// Another depth coefficient (more or fewer blocks than the checkpoint has) is refused.
#[test]
fn checkpoint_of_another_depth() {
    let err = load_with_config("align_odd33", |cfg| cfg["depth_coefficient"] = 2.0.into());
    // blocks move between stages, so the first problem found is a shape or a missing key
    assert!(
        matches!(&err, Error::Checkpoint(CheckpointError::MissingKeys { keys, .. }) if keys[0].starts_with("encoder.blocks."))
            || matches!(&err, Error::Checkpoint(CheckpointError::ShapeMismatch { key, .. }) if key.starts_with("encoder.blocks.")),
        "{err}"
    );
    let err = load_with_config("align_odd33", |cfg| cfg["depth_coefficient"] = 1.0.into());
    assert!(
        matches!(
            &err,
            Error::Checkpoint(
                CheckpointError::UnexpectedKey { .. } | CheckpointError::ShapeMismatch { .. }
            )
        ),
        "{err}"
    );
}

/// A standalone EfficientNet checkpoint read with an ALIGN config (no top conv) is refused.
#[test]
fn top_conv_checkpoint_with_align_config() {
    let err = load_with_config("efficientnet_top40", |cfg| {
        cfg["model_type"] = "align_vision_model".into()
    });
    assert!(
        matches!(&err, Error::Checkpoint(CheckpointError::UnexpectedKey { key, .. }) if key.starts_with("encoder.top_")),
        "{err}"
    );
}

#[test]
fn bad_config_fields() {
    let err = EfficientNetConfig::from_json_str(r#"{"hidden_act": "tanh"}"#).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "hidden_act",
                ..
            }
        ),
        "{err}"
    );
    let err = EfficientNetConfig::from_json_str(r#"{"strides": [1, 2]}"#).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "strides",
                ..
            }
        ),
        "{err}"
    );
    let err = EfficientNetConfig::from_json_str(r#"{"pooling_type": "median"}"#).unwrap_err();
    assert!(matches!(err, Error::ConfigJson { .. }), "{err}");
    let err = EfficientNetConfig::from_json_str("not json").unwrap_err();
    assert!(matches!(err, Error::ConfigJson { .. }), "{err}");
}
