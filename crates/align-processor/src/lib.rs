//! ALIGN (kakaobrain/align-base) input processing, equal to Hugging Face transformers':
//!
//! - images: decode (with limits) to RGB8 like Pillow's `convert("RGB")`, resize with Pillow's
//!   own resampling code ported exactly ([`resize`]), centre crop, rescale (with offset),
//!   normalise, as `EfficientNetImageProcessor` (Pillow backend) does; `[B, 3, H, W]` f32;
//! - text: BERT WordPiece via the `tokenizers` crate, padded and truncated to 64 tokens.
//!
//! Choices where the reference is silent or would fail:
//! - RGB conversion: the reference processor does not convert (grey / RGBA input fails there);
//!   we convert like Pillow's `convert("RGB")` (transformers' `load_image` does the same).
//! - EXIF orientation: applied by default, as `load_image` does (`ImageOps.exif_transpose`);
//!   [`ExifOrientation::Ignore`] gives the stored pixels (`Image.open` without transpose).
//! - 16-bit images keep the high byte of each sample, as Pillow does for 16-bit RGB PNGs. (Pillow
//!   *clips* 16-bit greyscale (`I;16`) to 255 in `convert("RGB")`; we do not copy that.)
//! - Texts over 64 tokens are truncated keeping `[SEP]` last (the reference raises).
//! - Decoding limits ([`DecodeOptions`]): 100 M pixels, 65 535 per side, 1 GiB of decoder
//!   allocation by default; an image over them is an error.
//! - JPEG is decoded by libjpeg-turbo's decoder (built from source by `mozjpeg-sys`) set up as
//!   Pillow sets up its libjpeg-turbo (ISLOW IDCT, fancy upsampling, Pillow's CMYK conversion),
//!   so JPEG pixels are Pillow's; every other format is decoded by the `image` crate.
//!
//! ```no_run
//! use align_processor::{ImageProcessor, TextTokenizer};
//! let images = ImageProcessor::from_dir("align-base")?.preprocess_paths(&["cat.jpg"])?;
//! let texts = TextTokenizer::from_dir("align-base")?.encode_batch(&["a photo of a cat"])?;
//! # Ok::<(), align_processor::Error>(())
//! ```

pub mod config;
mod error;
pub mod image;
mod jpeg;
pub mod resize;
pub mod text;

pub use crate::image::{
    DecodeOptions, ExifOrientation, ImageProcessor, RgbImage, decode_bytes, decode_path,
};
pub use config::ImageConfig;
pub use error::{Error, IoError, JsonError, Result};
pub use resize::{Resample, resize_rgb8};
pub use text::{ALIGN_MAX_LENGTH, TextTokenizer, TokenBatch};
