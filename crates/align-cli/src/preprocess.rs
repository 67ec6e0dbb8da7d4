//! `align preprocess --model DIR --out FILE.npy IMAGE...`

use std::path::PathBuf;

use align_processor::{DecodeOptions, ExifOrientation, ImageProcessor};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory holding preprocessor_config.json or processor_config.json.
    #[arg(long)]
    model: PathBuf,
    /// Output .npy file: f32 [N, 3, H, W], C order.
    #[arg(long)]
    out: PathBuf,
    /// Use pixels as stored, ignoring an EXIF orientation tag (default: apply it, as
    /// transformers' `load_image` does).
    #[arg(long)]
    ignore_exif: bool,
    /// Image files (JPEG, PNG, WebP, GIF, BMP, TIFF).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let exif = if args.ignore_exif {
        ExifOrientation::Ignore
    } else {
        ExifOrientation::Apply
    };
    let proc = ImageProcessor::from_dir(&args.model)?.with_decode_options(DecodeOptions {
        exif,
        ..DecodeOptions::default()
    });
    let data = proc.preprocess_paths(&args.images)?;
    let shape = data.shape().to_vec();
    let values = data
        .as_slice::<f32>()
        .map_err(|e| anyhow::anyhow!("internal: pixel data is not f32: {e:?}"))?;
    crate::npy::write_f32(&args.out, &shape, values)?;
    let out = &args.out;
    eprintln!("wrote {} f32 {:?}", out.display(), shape);
    Ok(())
}
