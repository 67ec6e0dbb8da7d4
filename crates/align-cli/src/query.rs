//! Query embeddings for `align search` and `align serve`: texts (with rclip's arithmetic),
//! image files and bytes, all L2-normalised.

use align_model::{Align, to_vec};
use align_processor::DecodeOptions;
use align_serve::{EncodeError, Encoder};

/// The model loaded for queries.
pub struct QueryModel {
    pub align: Align,
    /// Decoding limits for query images.
    pub decode: DecodeOptions,
}

impl QueryModel {
    pub fn new(align: Align) -> Self {
        let decode = *align.images.decode_options();
        Self { align, decode }
    }

    /// The embedding of a query text; `"a" + 2:"b" - "c"` combines several (see
    /// [`align_search::query`]).
    pub fn text(&self, query: &str) -> anyhow::Result<Vec<f32>> {
        let terms = align_search::query::parse(query)?;
        let texts: Vec<&str> = terms.iter().map(|t| t.text.as_str()).collect();
        let flat = to_vec(self.align.embed_texts(&texts)?)?;
        let dim = flat.len() / texts.len();
        let embeddings: Vec<Vec<f32>> = flat.chunks_exact(dim).map(<[f32]>::to_vec).collect();
        Ok(align_search::query::combine(&terms, &embeddings)?)
    }

    /// The embedding of an encoded image; decoding errors are [`EncodeError::BadInput`].
    pub fn image(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>, EncodeError> {
        let img = align_processor::decode_bytes(bytes, name, &self.decode)
            .map_err(|e| EncodeError::BadInput(e.to_string()))?;
        let embeds = self
            .align
            .embed_images(&[img])
            .map_err(|e| EncodeError::Model(e.to_string()))?;
        to_vec(embeds).map_err(|e| EncodeError::Model(e.to_string()))
    }
}

impl Encoder for QueryModel {
    fn text(&mut self, text: &str) -> Result<Vec<f32>, EncodeError> {
        let embeds = self
            .align
            .embed_texts(&[text])
            .map_err(|e| EncodeError::BadInput(e.to_string()))?;
        to_vec(embeds).map_err(|e| EncodeError::Model(e.to_string()))
    }

    fn image(&mut self, bytes: &[u8]) -> Result<Vec<f32>, EncodeError> {
        QueryModel::image(self, bytes, "image")
    }
}
