//! Joint image and text embeddings from one forward pass, as the model card's second snippet:
//!
//! ```python
//! inputs = processor(text=text, images=image, return_tensors="pt")
//! outputs = model(**inputs)
//! image_embeds, text_embeds = outputs.image_embeds, outputs.text_embeds
//! ```
//!
//! ```text
//! cargo run --release -p align-model --example joint_embeddings -- \
//!     [--model kakaobrain/align-base|<DIR>] <IMAGE> "an image of a cat"
//! ```
//!
//! Prints the shapes, the first values of each L2-normalised embedding and
//! `logits_per_image` (cosine similarity / temperature).

use std::path::PathBuf;

use align_model::{Align, to_vec};
use align_processor::decode_path;
use anyhow::Result;
use burn::tensor::{Device, Tensor};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Hub model id or local model directory.
    #[arg(long, default_value = align_model::hub::DEFAULT_MODEL_ID)]
    model: String,
    /// The image.
    image: PathBuf,
    /// The text.
    text: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let align = Align::from_pretrained(&args.model, &Device::default())?;
    let image = decode_path(&args.image, align.images.decode_options())?;
    // The processor's two halves: pixel values [1, 3, 289, 289] and token ids [1, 64].
    let pixel_values =
        Tensor::<4>::from_data(align.images.preprocess_images(&[image])?, &align.device);
    let text = align.tokenize(&[&args.text])?;
    let outputs = align.model.forward(pixel_values, &text)?;
    for (name, embeds) in [
        ("image_embeds", outputs.image_embeds),
        ("text_embeds", outputs.text_embeds),
    ] {
        let dims = embeds.dims();
        let values = to_vec(embeds)?;
        println!("{name} {dims:?}: {:?} ...", &values[..4]);
    }
    println!("logits_per_image: {:?}", to_vec(outputs.logits_per_image)?);
    Ok(())
}
