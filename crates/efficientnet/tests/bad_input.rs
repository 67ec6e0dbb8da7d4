//! Bad input gives typed errors, never panics.

mod common;

use burn::tensor::{Device, Tensor};
use common::fixtures;
use efficientnet::{CheckpointError, EfficientNet, EfficientNetConfig, Error};

fn config_of(case: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(case).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
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
    let mut cfg = config_of("align_odd33");
    cfg["width_coefficient"] = 0.5.into();
    let config = EfficientNetConfig::from_json_str(&cfg.to_string()).unwrap();
    let err = EfficientNet::from_safetensors(
        fixtures().join("align_odd33/model.safetensors"),
        &config,
        &Device::default(),
    )
    .unwrap_err();
    match &err {
        Error::Checkpoint(CheckpointError::ShapeMismatch {
            key,
            expected,
            actual,
            ..
        }) => {
            assert!(
                key.starts_with("embeddings.") || key.starts_with("encoder."),
                "{err}"
            );
            assert_ne!(expected, actual);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("shape"),
        "{msg}"
    );
}

/// Another depth coefficient (more or fewer blocks than the checkpoint has) is refused.
#[test]
fn checkpoint_of_another_depth() {
    let path = fixtures().join("align_odd33/model.safetensors");
    let mut cfg = config_of("align_odd33");
    cfg["depth_coefficient"] = 2.0.into();
    let deeper = EfficientNetConfig::from_json_str(&cfg.to_string()).unwrap();
    let err = EfficientNet::from_safetensors(&path, &deeper, &Device::default()).unwrap_err();
    // blocks move between stages, so the first problem found is a shape or a missing key
    assert!(
        matches!(&err, Error::Checkpoint(CheckpointError::MissingKeys { keys, .. }) if keys[0].starts_with("encoder.blocks."))
            || matches!(&err, Error::Checkpoint(CheckpointError::ShapeMismatch { key, .. }) if key.starts_with("encoder.blocks.")),
        "{err}"
    );
    cfg["depth_coefficient"] = 1.0.into();
    let shallower = EfficientNetConfig::from_json_str(&cfg.to_string()).unwrap();
    let err = EfficientNet::from_safetensors(&path, &shallower, &Device::default()).unwrap_err();
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
    let mut cfg = config_of("efficientnet_top40");
    cfg["model_type"] = "align_vision_model".into();
    let config = EfficientNetConfig::from_json_str(&cfg.to_string()).unwrap();
    let err = EfficientNet::from_safetensors(
        fixtures().join("efficientnet_top40/model.safetensors"),
        &config,
        &Device::default(),
    )
    .unwrap_err();
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
