//! Zero-shot image classification, as the model card's first snippet:
//!
//! ```python
//! inputs = processor(text=candidate_labels, images=image, return_tensors="pt")
//! probs = model(**inputs).logits_per_image.softmax(dim=1)
//! ```
//!
//! ```text
//! cargo run --release -p align-model --example zero_shot -- \
//!     [--model kakaobrain/align-base|<DIR>] <IMAGE> --label "an image of a cat" --label "an image of a dog"
//! ```
//!
//! `--model` takes a local directory (HF checkpoint or `convert-weights` output) or a hub id,
//! taken from the hub cache or downloaded into it. The device is burn's default (set
//! `BURN_DEVICE=flex|ndarray|wgpu` to choose among the compiled backends).

use std::path::PathBuf;

use align_model::Align;
use align_processor::decode_path;
use anyhow::Result;
use burn::tensor::Device;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Hub model id or local model directory.
    #[arg(long, default_value = align_model::hub::DEFAULT_MODEL_ID)]
    model: String,
    /// Candidate label (repeat).
    #[arg(long = "label", required = true)]
    labels: Vec<String>,
    /// The image to classify.
    image: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let align = Align::from_pretrained(&args.model, &Device::default())?;
    let image = decode_path(&args.image, align.images.decode_options())?;
    let result = &align.zero_shot(&[image], &args.labels)?[0];
    for (label, (logit, prob)) in args
        .labels
        .iter()
        .zip(result.logits.iter().zip(&result.probs))
    {
        println!("{prob:.4}  (logit {logit:8.4})  {label}");
    }
    Ok(())
}
