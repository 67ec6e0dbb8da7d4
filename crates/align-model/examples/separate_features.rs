//! Image and text features computed separately, as the model card's third snippet:
//!
//! ```python
//! text_embeds = model.get_text_features(**processor(text=text, return_tensors="pt"))
//! image_embeds = model.get_image_features(**processor(images=image, return_tensors="pt"))
//! ```
//!
//! ```text
//! cargo run --release -p align-model --example separate_features -- \
//!     [--model kakaobrain/align-base|<DIR>] --image <IMAGE> --text "an image of a cat"
//! ```
//!
//! The features are un-normalised, as `get_*_features` return them (640-d for align-base);
//! the example prints their shapes, norms and their cosine similarity.

use std::path::PathBuf;

use align_model::{Align, l2_normalize, to_vec};
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
    #[arg(long)]
    image: PathBuf,
    /// The text.
    #[arg(long)]
    text: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let align = Align::from_pretrained(&args.model, &Device::default())?;

    let text = align.tokenize(&[&args.text])?;
    let text_features = align.model.text_features_for(&text);

    let image = decode_path(&args.image, align.images.decode_options())?;
    let pixel_values =
        Tensor::<4>::from_data(align.images.preprocess_images(&[image])?, &align.device);
    let image_features = align.model.image_features(pixel_values)?;

    for (name, features) in [
        ("text_features", &text_features),
        ("image_features", &image_features),
    ] {
        let norm = to_vec(features.clone().powi_scalar(2).sum().sqrt())?[0];
        println!("{name} {:?}, L2 norm {norm:.4}", features.dims());
    }
    let cosine = l2_normalize(image_features).matmul(l2_normalize(text_features).transpose());
    println!("cosine similarity: {:.6}", to_vec(cosine)?[0]);
    Ok(())
}
