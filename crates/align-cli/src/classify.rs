//! `align classify --label TEXT... IMAGE...`: zero-shot classification.

use burn::tensor::activation::softmax;

use crate::hub::ModelArgs;
use crate::images::ImageArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A candidate label (repeat for each label).
    #[arg(long = "label", required = true)]
    labels: Vec<String>,
    #[command(flatten)]
    images: ImageArgs,
}

pub fn run(args: &Args, device: &burn::tensor::Device) -> anyhow::Result<()> {
    let align = args.model.load(device)?;
    let text_embeds = align.embed_texts(&args.labels)?;
    args.images
        .for_each_batch(device, align.images.decode_options(), |paths, images| {
            let image_embeds = align.embed_images(images)?;
            let logits = align
                .model
                .logits_per_image(image_embeds, text_embeds.clone());
            let probs = softmax(logits.clone(), 1);
            let k = args.labels.len();
            let logits = align_model::to_vec(logits)?;
            let probs = align_model::to_vec(probs)?;
            for (i, path) in paths.iter().enumerate() {
                let line = serde_json::json!({
                    "image": path.display().to_string(),
                    "labels": &args.labels,
                    "logits": &logits[i * k..(i + 1) * k],
                    "probs": &probs[i * k..(i + 1) * k],
                });
                println!("{line}");
            }
            Ok(())
        })
}
