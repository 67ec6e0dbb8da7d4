//! `align convert-weights`: an HF checkpoint -> burn's Burnpack format, verified.

use std::path::PathBuf;

use align_model::convert_weights;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF checkpoint directory (config.json, model.safetensors or pytorch_model.bin, processor
    /// files).
    #[arg(
        long,
        required_unless_present = "model_id",
        conflicts_with = "model_id"
    )]
    input: Option<PathBuf>,
    /// Hugging Face hub model id (e.g. kakaobrain/align-base), taken from the hf-hub cache or
    /// downloaded into it first.
    #[arg(long)]
    model_id: Option<String>,
    /// Output directory (model.bpk, config.json, processor files).
    #[arg(long)]
    output: PathBuf,
}

pub fn run(args: &Args, device: &burn::tensor::Device) -> anyhow::Result<()> {
    let input = match (&args.input, &args.model_id) {
        (Some(dir), _) => dir.clone(),
        (None, Some(id)) => align_model::hub::snapshot_dir(id)?,
        (None, None) => unreachable!("clap requires --input or --model-id"),
    };
    let bar = ProgressBar::new(5).with_style(
        ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let report = convert_weights(&input, &args.output, device, |step| {
        if bar.position() > 0 || !bar.message().is_empty() {
            bar.inc(1);
        }
        bar.set_message(step.to_string());
    })?;
    bar.inc(1);
    bar.finish_with_message("done");
    eprintln!(
        "converted {} ({:?}) -> {}: loading took {:.2} s from the source, opening model.bpk {:.2} s \
         (its tensors are read on first use); \
         verified (max abs difference {}); copied {}",
        input.display(),
        report.source_format,
        args.output.display(),
        report.source_load_s,
        report.converted_load_s,
        report.max_abs_diff,
        report.copied.join(", ")
    );
    Ok(())
}
