//! The model as the collection pipeline (`align index`, `align eval`) sees it.

use align_collection::Embedder;
use align_model::{Align, to_vec};
use align_processor::RgbImage;

/// [`Align`] as the collection pipeline's model.
pub struct AlignEmbedder<'a> {
    pub align: &'a Align,
}

impl Embedder for AlignEmbedder<'_> {
    fn dim(&self) -> usize {
        self.align.config.projection_dim
    }

    fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<f32>, String> {
        let embeds = self.align.embed_images(images).map_err(|e| e.to_string())?;
        to_vec(embeds).map_err(|e| e.to_string())
    }

    fn embed_texts(&self, texts: &[String]) -> Result<Vec<f32>, String> {
        let embeds = self
            .align
            .embed_texts_batched(texts, 32)
            .map_err(|e| e.to_string())?;
        to_vec(embeds).map_err(|e| e.to_string())
    }
}
