//! A row's image, read from where `align index` found it (a file, or a member of a webdataset
//! `.tar` shard: `TARPATH/MEMBER`), as a JPEG thumbnail.

use std::io::Read;
use std::path::{Path, PathBuf};

use align_processor::{DecodeOptions, decode_bytes};
use image::ImageEncoder;

/// Longest side of a thumbnail.
pub const MAX_SIDE: u32 = 512;

/// The bytes of the image at `image_path` (a file, or `SHARD.tar/MEMBER`).
pub fn read_image(image_path: &str) -> Result<Vec<u8>, String> {
    let path = Path::new(image_path);
    if path.is_file() {
        return std::fs::read(path).map_err(|e| format!("{image_path}: {e}"));
    }
    // `TARPATH/MEMBER`: the nearest ancestor that is a .tar file.
    let mut tar = PathBuf::from(path);
    while tar.pop() {
        if tar
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tar"))
            && tar.is_file()
        {
            let member = path
                .strip_prefix(&tar)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            return read_member(&tar, &member);
        }
    }
    Err(format!("{image_path}: no such file"))
}

fn read_member(tar: &Path, member: &str) -> Result<Vec<u8>, String> {
    let err = |e: std::io::Error| format!("{}: {e}", tar.display());
    let file = std::fs::File::open(tar).map_err(err)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    // Seeking past the members' data: only the headers are read.
    for entry in archive.entries_with_seek().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        if entry.path().map_err(err)?.to_string_lossy() == member {
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(err)?;
            return Ok(bytes);
        }
    }
    Err(format!("{}: no member {member}", tar.display()))
}

/// A JPEG of `bytes`' image, scaled down (never up) to at most [`MAX_SIDE`] on its longest
/// side, decoded as the model sees it (EXIF orientation applied).
pub fn thumbnail(bytes: &[u8], name: &str, decode: &DecodeOptions) -> Result<Vec<u8>, String> {
    let rgb = decode_bytes(bytes, name, decode).map_err(|e| e.to_string())?;
    let (w, h) = (rgb.width as u32, rgb.height as u32);
    let img = image::RgbImage::from_raw(w, h, rgb.data).ok_or("decoded image of the wrong size")?;
    let scale = (MAX_SIDE as f64 / w.max(h) as f64).min(1.0);
    let (tw, th) = (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    );
    let img = if (tw, th) == (w, h) {
        img
    } else {
        image::imageops::resize(&img, tw, th, image::imageops::FilterType::Triangle)
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .write_image(img.as_raw(), tw, th, image::ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}
