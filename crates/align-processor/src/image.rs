//! Decoding (with limits) and `EfficientNetImageProcessor` preprocessing.

use std::io::Cursor;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use rayon::prelude::*;

use crate::config::ImageConfig;
use crate::jpeg;
use crate::resize::resize_rgb8;
use crate::{Error, Result};

/// What to do with an EXIF orientation tag (JPEG, TIFF, WebP).
///
/// transformers' `load_image` applies it (`PIL.ImageOps.exif_transpose`), but a PIL image passed
/// straight to the image processor is used as stored, and `Image.open` does not rotate. We apply
/// it by default, like `load_image` and like what a person looking at the photo sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExifOrientation {
    /// Rotate / flip the decoded pixels as the tag says.
    #[default]
    Apply,
    /// Use the pixels as stored (what `Image.open(path)` gives).
    Ignore,
}

/// Limits against hostile files: an image over them is an [`Error::Decode`], never an
/// out-of-memory kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest accepted `width * height` (default 100 M pixels, 0.5 GB of RGBA8).
    pub max_pixels: u64,
    /// Largest width or height (default 65 535).
    pub max_side: u32,
    /// Most bytes a decoder may allocate (default 1 GiB).
    pub max_alloc: u64,
    pub exif: ExifOrientation,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: 100_000_000,
            max_side: 65_535,
            max_alloc: 1 << 30,
            exif: ExifOrientation::Apply,
        }
    }
}

/// An 8-bit RGB image, row-major, `data.len() == width * height * 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Wraps an RGB8 buffer; `None` when the length does not match or a side is zero.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        (width > 0 && height > 0 && width.checked_mul(height)?.checked_mul(3)? == data.len())
            .then_some(Self {
                width,
                height,
                data,
            })
    }
}

/// Decodes an image file to RGB8. See [`decode_bytes`].
pub fn decode_path(path: impl AsRef<Path>, opts: &DecodeOptions) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        error: source.into(),
    })?;
    decode_bytes(&bytes, &path.display().to_string(), opts)
}

/// Decodes JPEG, PNG, WebP, GIF (first frame), BMP or TIFF bytes (format from the content) to
/// RGB8 the way Pillow's `convert("RGB")` does: grey replicated, alpha dropped (not composited),
/// palettes expanded. 16-bit samples keep their high byte (`v >> 8`, what Pillow's PNG decoder
/// does for 16-bit RGB); float samples are clamped to `[0, 1]` and scaled to 255 with rounding.
/// JPEG is decoded by libjpeg-turbo as Pillow does it (see the crate docs); a corrupt or
/// truncated file is an error. `name` is used in error messages.
pub fn decode_bytes(bytes: &[u8], name: &str, opts: &DecodeOptions) -> Result<RgbImage> {
    let err = |message: String| Error::Decode {
        source_name: name.to_string(),
        message,
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(err("unknown image format".into()));
    }
    if reader.format() == Some(ImageFormat::Jpeg) {
        return decode_jpeg(bytes, opts).map_err(err);
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(opts.max_side);
    limits.max_image_height = Some(opts.max_side);
    limits.max_alloc = Some(opts.max_alloc);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| err(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    check_limits(w, h, decoder.total_bytes(), opts).map_err(err)?;
    let orientation = match opts.exif {
        // A broken EXIF block is not worth refusing the image for.
        ExifOrientation::Apply => decoder.orientation().ok(),
        ExifOrientation::Ignore => None,
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| err(e.to_string()))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(to_rgb8(img))
}

/// Refuses empty images and images over the limits of `opts` (`bytes`: what decoding allocates).
fn check_limits(
    w: u32,
    h: u32,
    bytes: u64,
    opts: &DecodeOptions,
) -> std::result::Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("empty image ({w}x{h})"));
    }
    if u64::from(w) * u64::from(h) > opts.max_pixels || w > opts.max_side || h > opts.max_side {
        return Err(format!(
            "{w}x{h} is over the limit of {} pixels / {} per side",
            opts.max_pixels, opts.max_side
        ));
    }
    if bytes > opts.max_alloc {
        return Err(format!(
            "decoding needs {bytes} bytes, over the limit of {}",
            opts.max_alloc
        ));
    }
    Ok(())
}

/// JPEG through libjpeg-turbo (see [`crate::jpeg`]): limits checked on the header before any
/// pixel is decoded.
fn decode_jpeg(bytes: &[u8], opts: &DecodeOptions) -> std::result::Result<RgbImage, String> {
    let header = jpeg::header(bytes)?;
    let out_bytes = header.output_bytes();
    check_limits(header.width, header.height, out_bytes, opts)?;
    let data = jpeg::decode(bytes, &header, opts.max_alloc - out_bytes)?;
    let orientation = match opts.exif {
        ExifOrientation::Apply => jpeg::exif_orientation(bytes),
        ExifOrientation::Ignore => None,
    };
    let (w, h) = (header.width, header.height);
    let data = match orientation {
        None | Some(Orientation::NoTransforms) => data,
        Some(o) => {
            let buf = image::RgbImage::from_raw(w, h, data)
                .ok_or_else(|| "decoded buffer of the wrong size".to_string())?;
            let mut img = DynamicImage::ImageRgb8(buf);
            img.apply_orientation(o);
            return Ok(to_rgb8(img));
        }
    };
    Ok(RgbImage {
        width: w as usize,
        height: h as usize,
        data,
    })
}

/// Pillow-style `convert("RGB")`.
fn to_rgb8(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let f32_to_u8 = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let data: Vec<u8> = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => b.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        DynamicImage::ImageLuma8(b) => b.iter().flat_map(|&v| [v; 3]).collect(),
        DynamicImage::ImageLumaA8(b) => b.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
        DynamicImage::ImageRgb16(b) => b.iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(b) => b
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        DynamicImage::ImageLuma16(b) => b.iter().flat_map(|&v| [(v >> 8) as u8; 3]).collect(),
        DynamicImage::ImageLumaA16(b) => b
            .chunks_exact(2)
            .flat_map(|p| [(p[0] >> 8) as u8; 3])
            .collect(),
        DynamicImage::ImageRgb32F(b) => b.iter().map(|&v| f32_to_u8(v)).collect(),
        DynamicImage::ImageRgba32F(b) => b
            .chunks_exact(4)
            .flat_map(|p| [f32_to_u8(p[0]), f32_to_u8(p[1]), f32_to_u8(p[2])])
            .collect(),
        other => other.to_rgb8().into_raw(),
    };
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

/// Decoding plus `EfficientNetImageProcessor` preprocessing, output `[B, 3, H, W]` f32.
/// Mirrors transformers' [`EfficientNetImageProcessor`](https://github.com/huggingface/transformers/blob/v4.57.1/src/transformers/models/efficientnet/image_processing_efficientnet.py).
#[derive(Debug, Clone)]
pub struct ImageProcessor {
    config: ImageConfig,
    decode: DecodeOptions,
    /// `lut[c][v]`: the output value of channel `c` for the uint8 value `v`.
    lut: Box<[[f32; 256]; 3]>,
}

impl ImageProcessor {
    /// A processor for `config` with the default [`DecodeOptions`].
    pub fn new(config: ImageConfig) -> Self {
        let lut = Box::new(std::array::from_fn(|c| {
            std::array::from_fn(|v| pixel_value(&config, c, v as u8))
        }));
        Self {
            config,
            decode: DecodeOptions::default(),
            lut,
        }
    }

    /// A processor configured from a checkpoint directory (see [`ImageConfig::from_dir`]).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::new(ImageConfig::from_dir(dir)?))
    }

    /// Replaces the decoding limits and EXIF handling.
    pub fn with_decode_options(mut self, decode: DecodeOptions) -> Self {
        self.decode = decode;
        self
    }

    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    pub fn decode_options(&self) -> &DecodeOptions {
        &self.decode
    }

    /// Resize, centre crop, rescale and normalise one image into `out` (`3 * H * W`, CHW) where
    /// `(H, W) = config.output_size((img.height, img.width))`.
    pub fn preprocess_into(&self, img: &RgbImage, out: &mut [f32]) {
        let cfg = &self.config;
        let resized;
        let (src, h, w) = if cfg.do_resize {
            let (rh, rw) = cfg.size;
            resized = resize_rgb8(&img.data, img.width, img.height, rw, rh, cfg.resample);
            (&resized[..], rh, rw)
        } else {
            (&img.data[..], img.height, img.width)
        };
        let (oh, ow) = cfg.output_size((img.height, img.width));
        assert_eq!(
            out.len(),
            3 * oh * ow,
            "preprocess_into: output buffer of the wrong size"
        );
        // transformers' centre crop (zero padding when the crop is larger):
        // source index = floor((size - crop) / 2) + output index.
        let top = (h as i64 - oh as i64).div_euclid(2);
        let left = (w as i64 - ow as i64).div_euclid(2);
        let plane = oh * ow;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let lut = &*self.lut;
        for y in 0..oh {
            let sy = top + y as i64;
            let row_out = y * ow..(y + 1) * ow;
            let (ro, go, bo) = (
                &mut r[row_out.clone()],
                &mut g[row_out.clone()],
                &mut b[row_out],
            );
            if sy < 0 || sy >= h as i64 {
                ro.fill(lut[0][0]);
                go.fill(lut[1][0]);
                bo.fill(lut[2][0]);
                continue;
            }
            let src_row = &src[sy as usize * w * 3..(sy as usize + 1) * w * 3];
            for x in 0..ow {
                let sx = left + x as i64;
                let p = if sx < 0 || sx >= w as i64 {
                    [0, 0, 0]
                } else {
                    let i = sx as usize * 3;
                    [src_row[i], src_row[i + 1], src_row[i + 2]]
                };
                ro[x] = lut[0][p[0] as usize];
                go[x] = lut[1][p[1] as usize];
                bo[x] = lut[2][p[2] as usize];
            }
        }
    }

    /// Preprocesses decoded images (in parallel) into `[B, 3, H, W]` f32 data.
    pub fn preprocess_images(&self, images: &[RgbImage]) -> Result<TensorData> {
        self.batch(images, |i, img| {
            (format!("image {i}"), Ok(std::borrow::Cow::Borrowed(img)))
        })
    }

    /// Decodes and preprocesses image files (in parallel) into `[B, 3, H, W]` f32 data.
    /// The first failing file (in input order) is the error.
    pub fn preprocess_paths<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Result<TensorData> {
        self.batch(paths, |_, p| {
            let p = p.as_ref();
            (
                p.display().to_string(),
                decode_path(p, &self.decode).map(std::borrow::Cow::Owned),
            )
        })
    }

    /// Decodes and preprocesses encoded images `(name, bytes)` (in parallel); `name` is used in
    /// error messages.
    pub fn preprocess_bytes<N: AsRef<str> + Sync, B: AsRef<[u8]> + Sync>(
        &self,
        items: &[(N, B)],
    ) -> Result<TensorData> {
        self.batch(items, |_, (n, b)| {
            let n = n.as_ref();
            (
                n.to_string(),
                decode_bytes(b.as_ref(), n, &self.decode).map(std::borrow::Cow::Owned),
            )
        })
    }

    /// [`Self::preprocess_paths`] as a tensor on `device`.
    pub fn preprocess_paths_to_tensor<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
        device: &Device,
    ) -> Result<Tensor<4>> {
        Ok(Tensor::from_data(self.preprocess_paths(paths)?, device))
    }

    fn batch<'a, T: Sync>(
        &self,
        items: &'a [T],
        load: impl Fn(usize, &'a T) -> (String, Result<std::borrow::Cow<'a, RgbImage>>) + Sync,
    ) -> Result<TensorData> {
        let cfg = &self.config;
        let b = items.len();
        if cfg.do_resize || cfg.do_center_crop {
            // Output size known up front: one allocation for the batch, filled in parallel.
            let (h, w) = cfg.output_size((0, 0));
            let per = 3 * h * w;
            let mut out = vec![0f32; b * per];
            let results: Vec<Result<()>> = out
                .par_chunks_mut(per.max(1))
                .zip(items.par_iter().enumerate())
                .map(|(chunk, (i, item))| {
                    let (_, img) = load(i, item);
                    let img = img?;
                    self.preprocess_into(&img, chunk);
                    Ok(())
                })
                .collect();
            results.into_iter().collect::<Result<Vec<()>>>()?;
            return Ok(TensorData::new(out, [b, 3, h, w]));
        }
        // Sizes depend on the inputs: decode first, then check that they agree.
        let images: Vec<(String, std::borrow::Cow<'a, RgbImage>)> = items
            .par_iter()
            .enumerate()
            .map(|(i, item)| {
                let (name, img) = load(i, item);
                img.map(|img| (name, img))
            })
            .collect::<Result<_>>()?;
        let Some((_, first)) = images.first() else {
            return Ok(TensorData::new(Vec::<f32>::new(), [0, 3, 0, 0]));
        };
        let (h, w) = (first.height, first.width);
        if let Some((name, img)) = images
            .iter()
            .find(|(_, im)| (im.height, im.width) != (h, w))
        {
            return Err(Error::BatchShape {
                source_name: name.clone(),
                expected: (h, w),
                actual: (img.height, img.width),
            });
        }
        let per = 3 * h * w;
        let mut out = vec![0f32; b * per];
        out.par_chunks_mut(per)
            .zip(images.par_iter())
            .for_each(|(chunk, (_, img))| self.preprocess_into(img, chunk));
        Ok(TensorData::new(out, [b, 3, h, w]))
    }
}

/// One output value, in transformers' order and precision: `rescale` multiplies in f64 and
/// rounds to f32, the offset subtracts 1 in f32, `normalize` and `include_top` work in f32.
fn pixel_value(cfg: &ImageConfig, c: usize, v: u8) -> f32 {
    let mut x = if cfg.do_rescale {
        (f64::from(v) * cfg.rescale_factor) as f32
    } else {
        f32::from(v)
    };
    if cfg.do_rescale && cfg.rescale_offset {
        x -= 1.0;
    }
    if cfg.do_normalize {
        x = (x - cfg.image_mean[c]) / cfg.image_std[c];
    }
    if cfg.include_top {
        x = (x - 0.0) / cfg.image_std[c];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_values_are_u8_over_127_5_minus_1() {
        let cfg = ImageConfig::align_base();
        for v in 0..=255u8 {
            let want = ((f64::from(v) * (1.0 / 127.5)) as f32) - 1.0;
            assert_eq!(pixel_value(&cfg, 0, v), want);
        }
        assert_eq!(pixel_value(&cfg, 0, 0), -1.0);
        assert_eq!(pixel_value(&cfg, 0, 255), 1.0);
    }

    #[test]
    fn garbage_is_an_error_naming_the_source() {
        let e = decode_bytes(
            b"not an image at all",
            "junk.bin",
            &DecodeOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("junk.bin: "), "{e}");
    }
}
