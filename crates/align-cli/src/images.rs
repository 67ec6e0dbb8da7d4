//! Decoding the image arguments batch by batch, with `--skip-bad`.

use std::path::PathBuf;

use align_processor::{RgbImage, decode_path};
use anyhow::anyhow;
use rayon::prelude::*;

#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    /// Images per forward pass [default: 8; 1 on ndarray, where larger batches are not faster
    /// and take more memory (see docs/performance.md)].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Option<u32>,
    /// Report unreadable images on stderr and go on without them (default: stop at the first).
    #[arg(long)]
    pub skip_bad: bool,
    /// Image files (JPEG, PNG, WebP, GIF, BMP, TIFF).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

impl ImageArgs {
    /// Calls `f` with each batch of decoded images and their paths, in argument order. A
    /// second thread decodes the next batch (its images in parallel) while `f` runs on the
    /// current one.
    pub fn for_each_batch(
        &self,
        device: &burn::tensor::Device,
        decode: &align_processor::DecodeOptions,
        mut f: impl FnMut(&[PathBuf], &[RgbImage]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let batch = self
            .batch_size
            .unwrap_or_else(|| crate::device::default_image_batch(device));
        std::thread::scope(|scope| {
            // A rendezvous channel: the next batch is decoded while `f` runs, then waits to be
            // taken (at most two decoded batches in memory, however large the photos).
            let (decoded_tx, decoded_rx) = std::sync::mpsc::sync_channel(0);
            scope.spawn(move || {
                for chunk in self.images.chunks(batch as usize) {
                    // On rayon's pool: the first batch has both cores to itself (nothing runs
                    // before it), the later ones fill the gaps of the batch before them.
                    let decoded: Vec<_> =
                        chunk.par_iter().map(|p| decode_path(p, decode)).collect();
                    if decoded_tx.send((chunk, decoded)).is_err() {
                        // `f` failed: nothing more is wanted.
                        break;
                    }
                }
            });
            for (chunk, decoded) in decoded_rx {
                let mut paths = Vec::with_capacity(chunk.len());
                let mut images = Vec::with_capacity(chunk.len());
                for (path, result) in chunk.iter().zip(decoded) {
                    match result {
                        Ok(img) => {
                            paths.push(path.clone());
                            images.push(img);
                        }
                        Err(e) if self.skip_bad => {
                            eprintln!("align: skipping {}: {e}", path.display())
                        }
                        Err(e) => return Err(anyhow!(e)),
                    }
                }
                if !images.is_empty() {
                    f(&paths, &images)?;
                }
            }
            Ok(())
        })
    }
}
