//! `convert-weights`: an HF checkpoint directory -> burn's own format (Burnpack `model.bpk`)
//! plus `config.json` and the processor files, verified by loading it back.

use std::path::Path;
use std::time::Instant;

use bert::BertInput;
use burn::tensor::{Device, Tensor, TensorData};

use crate::config::AlignConfig;
use crate::error::{Error, Result};
use crate::load::{BURNPACK_FILE, ModelFiles, WeightsFormat, save_burnpack};
use crate::model::AlignModel;
use crate::pipeline::to_vec;

/// Files copied next to the converted weights when the input has them.
const SIDE_FILES: &[&str] = &[
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
];

/// What [`convert_weights`] did.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub source_format: WeightsFormat,
    /// Seconds to load the source checkpoint.
    pub source_load_s: f64,
    /// Seconds to open the converted `model.bpk` (`AlignModel::from_weights`; its tensors are read
    /// from the file on first use, not counted here).
    pub converted_load_s: f64,
    /// Largest absolute difference between the source and the converted model on the
    /// verification inputs (image features, text features): 0 when the conversion is exact.
    pub max_abs_diff: f32,
    pub copied: Vec<String>,
}

/// Converts the HF checkpoint in `input` into `output` (created if needed) and verifies it:
/// the converted directory is loaded back and both models run the same synthetic image and
/// text; any difference is an error. `step` is called with a description before each of the
/// five steps (for a progress display).
pub fn convert_weights(
    input: &Path,
    output: &Path,
    device: &Device,
    mut step: impl FnMut(&str),
) -> Result<ConvertReport> {
    let files = ModelFiles::find(input)?;
    if files.format == WeightsFormat::Burnpack {
        return Err(Error::MissingFile {
            dir: input.to_path_buf(),
            message: "already converted (holds model.bpk); expected an HF checkpoint".into(),
        });
    }
    let config = AlignConfig::from_file(&files.config)?;

    step("loading the HF checkpoint");
    let start = Instant::now();
    let mut source = AlignModel::new(&config, device)?;
    source.load_weights(&files.weights, files.format)?;
    let source_load_s = start.elapsed().as_secs_f64();

    step("writing model.bpk");
    std::fs::create_dir_all(output).map_err(|source| Error::Io {
        path: output.to_path_buf(),
        source,
    })?;
    save_burnpack(&source, &output.join(BURNPACK_FILE))?;

    step("copying config and processor files");
    let mut copied = Vec::new();
    for name in SIDE_FILES {
        let from = input.join(name);
        if from.is_file() {
            let to = output.join(name);
            std::fs::copy(&from, &to).map_err(|source| Error::Io { path: to, source })?;
            copied.push(name.to_string());
        }
    }

    step("loading the converted model");
    let start = Instant::now();
    let converted = AlignModel::from_weights(
        &output.join(BURNPACK_FILE),
        WeightsFormat::Burnpack,
        &config,
        device,
    )?;
    let converted_load_s = start.elapsed().as_secs_f64();

    step("verifying a forward pass");
    let source = source.prepare_for_inference();
    let max_abs_diff = compare(&source, &converted, &config, device)?;
    if max_abs_diff != 0.0 {
        return Err(Error::Mismatch(format!(
            "the converted model in {} differs from the source by {max_abs_diff}",
            output.display()
        )));
    }
    Ok(ConvertReport {
        source_format: files.format,
        source_load_s,
        converted_load_s,
        max_abs_diff,
        copied,
    })
}

/// Runs both models on a deterministic 64x64 image and a short text; returns the largest
/// absolute difference of the features. Every weight takes part in these forward passes.
fn compare(a: &AlignModel, b: &AlignModel, config: &AlignConfig, device: &Device) -> Result<f32> {
    let channels = config.vision_config.num_channels;
    let (h, w) = (64, 64);
    let pixels: Vec<f32> = (0..channels * h * w)
        .map(|i| ((i * 7919 % 255) as f32) / 127.5 - 1.0)
        .collect();
    let pixels = Tensor::<4>::from_data(TensorData::new(pixels, [1, channels, h, w]), device);
    let vocab = config.text_config.vocab_size as u32;
    let ids: Vec<u32> = [101u32, 1037, 6302, 1997, 1037, 4937, 102]
        .iter()
        .map(|&id| id % vocab)
        .collect();
    let mut padded = ids.clone();
    padded.resize(ids.len() + 3, 0);
    let mut mask = vec![1u32; ids.len()];
    mask.resize(padded.len(), 0);
    let text = BertInput::new(&config.text_config, &[padded], &[mask], None, device)?;

    let mut max = 0f32;
    for (x, y) in [
        (a.image_features(pixels.clone())?, b.image_features(pixels)?),
        (a.text_features_for(&text), b.text_features_for(&text)),
    ] {
        let (x, y) = (to_vec(x)?, to_vec(y)?);
        for (p, q) in x.iter().zip(&y) {
            let d = (p - q).abs();
            max = if d.is_nan() {
                f32::INFINITY
            } else {
                max.max(d)
            };
        }
    }
    Ok(max)
}
