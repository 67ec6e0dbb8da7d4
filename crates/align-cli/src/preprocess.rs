//! `align preprocess --model DIR --out FILE.npy IMAGE...`

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use align_processor::{DecodeOptions, ExifOrientation, ImageProcessor};
use anyhow::Context;
use npyz::WriterBuilder;

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
    let shape: Vec<u64> = data.shape().iter().map(|&d| d as u64).collect();
    let values = data
        .as_slice::<f32>()
        .map_err(|e| anyhow::anyhow!("internal: pixel data is not f32: {e:?}"))?;
    let out = &args.out;
    let file = File::create(out).with_context(|| format!("{}", out.display()))?;
    let write = || -> std::io::Result<()> {
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(BufWriter::new(&file))
            .begin_nd()?;
        w.extend(values.iter().copied())?;
        w.finish()
    };
    write().with_context(|| format!("{}", out.display()))?;
    eprintln!("wrote {} f32 {:?}", out.display(), shape);
    Ok(())
}
