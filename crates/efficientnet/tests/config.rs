//! Architecture numbers derived from the config (align-spec.md section 2).

use efficientnet::EfficientNetConfig;

fn align_base() -> EfficientNetConfig {
    // an ALIGN config.json nests the vision tower under `vision_config`
    EfficientNetConfig::from_json_str(
        r#"{"projection_dim": 640, "text_config": {"hidden_size": 768},
            "vision_config": {"model_type": "align_vision_model", "image_size": 289, "hidden_dim": 640}}"#,
    )
    .unwrap()
}

#[test]
fn b7_round_filters_and_repeats() {
    let c = align_base();
    let filters: Vec<_> = [32, 16, 24, 40, 80, 112, 192, 320]
        .iter()
        .map(|&n| c.round_filters(n))
        .collect();
    assert_eq!(filters, [64, 32, 48, 80, 160, 224, 384, 640]);
    let repeats: Vec<_> = c
        .num_block_repeats
        .iter()
        .map(|&n| c.round_repeats(n))
        .collect();
    assert_eq!(repeats, [4, 7, 7, 10, 10, 13, 4]);
    assert_eq!(c.blocks().len(), 55);
    assert_eq!(c.stage_ends(), [3, 10, 17, 27, 37, 50, 54]);
    assert_eq!(c.output_dim(), 640);
    assert!(!c.has_top_conv());
    assert_eq!(c.hidden_dim, 640);
}

#[test]
fn b7_block_table() {
    let b = align_base().blocks();
    // (index, in, expanded, se, k, stride, residual)
    let want = [
        (0, 64, 64, 16, 3, 1, false),
        (1, 32, 32, 8, 3, 1, true),
        (4, 32, 192, 8, 3, 2, false),
        (5, 48, 288, 12, 3, 1, true),
        (11, 48, 288, 12, 5, 2, false),
        (18, 80, 480, 20, 3, 2, false),
        (28, 160, 960, 40, 5, 1, false),
        (29, 224, 1344, 56, 5, 1, true),
        (38, 224, 1344, 56, 5, 2, false),
        (51, 384, 2304, 96, 3, 1, false),
        (54, 640, 3840, 160, 3, 1, true),
    ];
    for (i, in_dim, exp, se, k, s, res) in want {
        let blk = b[i];
        assert_eq!(
            (
                blk.in_dim,
                blk.expanded_dim,
                blk.se_dim,
                blk.kernel_size,
                blk.stride,
                blk.residual
            ),
            (in_dim, exp, se, k, s, res),
            "block {i}"
        );
    }
    assert!(!b[0].expand && b[4].expand);
    // correct_pad: (top, left, bottom, right)
    assert_eq!(b[4].padding, [0, 0, 1, 1]);
    assert_eq!(b[11].padding, [1, 1, 2, 2]);
    assert_eq!(b[28].padding, [2, 2, 2, 2]);
}

#[test]
fn depthwise_padding_is_symmetric() {
    let c = EfficientNetConfig::from_json_str(r#"{"depthwise_padding": [11]}"#).unwrap();
    assert_eq!(c.blocks()[11].padding, [2, 2, 2, 2]);
    assert_eq!(c.blocks()[4].padding, [0, 0, 1, 1]);
}

#[test]
fn standalone_efficientnet_b0() {
    let c = EfficientNetConfig::from_json_str(
        r#"{"model_type": "efficientnet", "width_coefficient": 1.0, "depth_coefficient": 1.0,
            "hidden_dim": 1280, "architectures": ["EfficientNetForImageClassification"],
            "id2label": {"0": "a", "1": "b", "2": "c"}}"#,
    )
    .unwrap();
    assert!(c.has_top_conv());
    assert_eq!(c.blocks().len(), 16);
    assert_eq!(c.output_dim(), 1280);
    assert_eq!(c.num_labels(), Some(3));
    assert_eq!(c.stem_dim(), 32);
}
