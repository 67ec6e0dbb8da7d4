//! `align embed-images` / `align embed-texts`: L2-normalised embeddings to a `.npy` file.

use std::path::PathBuf;
use std::time::Instant;

use align_model::to_vec;

use crate::hub::ModelArgs;
use crate::images::ImageArgs;

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output .npy file: f32 [N, dim], one L2-normalised row per image in argument order
    /// (without the images skipped by --skip-bad).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    images: ImageArgs,
}

#[derive(Debug, clap::Args)]
pub struct TextsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output .npy file: f32 [N, dim], one L2-normalised row per text in argument order.
    #[arg(long)]
    out: PathBuf,
    /// Texts per forward pass (texts of similar token counts are batched together; the output
    /// keeps argument order).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Texts to embed (longer than 64 tokens: truncated, keeping [SEP] last).
    #[arg(required = true)]
    texts: Vec<String>,
}

pub fn images(args: &ImagesArgs, device: &burn::tensor::Device) -> anyhow::Result<()> {
    let start = Instant::now();
    let align = args.model.load(device)?;
    // The vision tower's fused copy (flex) is part of loading, not of the first image.
    align.model.vision_model.prepare();
    let loaded = Instant::now();
    let mut rows = Vec::new();
    let mut dim = 0;
    args.images
        .for_each_batch(device, align.images.decode_options(), |_, images| {
            let embeds = align.embed_images(images)?;
            dim = embeds.dims()[1];
            rows.extend(to_vec(embeds)?);
            Ok(())
        })?;
    let n = rows.len().checked_div(dim).unwrap_or(0);
    crate::npy::write_f32(&args.out, &[n, dim], &rows)?;
    report(&args.out, n, dim, "images", start, loaded);
    Ok(())
}

/// One stderr line: what was written, the load time and the throughput after loading
/// (decoding / tokenising, inference and writing included).
fn report(
    out: &std::path::Path,
    n: usize,
    dim: usize,
    what: &str,
    start: Instant,
    loaded: Instant,
) {
    let load_s = (loaded - start).as_secs_f64();
    let run_s = loaded.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} f32 [{n}, {dim}]; model load {load_s:.2} s; {n} {what} in {run_s:.2} s ({:.2} {what}/s)",
        out.display(),
        n as f64 / run_s
    );
}

pub fn texts(args: &TextsArgs, device: &burn::tensor::Device) -> anyhow::Result<()> {
    let start = Instant::now();
    let align = args.model.load(device)?;
    // Weights are read on first use: part of loading, not of the first batch.
    align.prepare_text()?;
    let loaded = Instant::now();
    let embeds = align.embed_texts_batched(&args.texts, args.batch_size as usize)?;
    let [n, dim] = embeds.dims();
    let rows = to_vec(embeds)?;
    crate::npy::write_f32(&args.out, &[n, dim], &rows)?;
    report(&args.out, n, dim, "texts", start, loaded);
    Ok(())
}
