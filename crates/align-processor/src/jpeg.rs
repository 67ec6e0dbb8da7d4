//! JPEG decoding with libjpeg-turbo's code (built by `mozjpeg-sys`, whose decoder is
//! libjpeg-turbo's), set up as Pillow sets it up, so decoded pixels are Pillow's pixels:
//! `JDCT_ISLOW`, fancy upsampling, libjpeg's colour-space guess; YCbCr / RGB files decoded to
//! RGB, greyscale replicated, CMYK / YCCK (Adobe) inverted and converted with Pillow's own
//! `cmyk2rgb`. The libjpeg calls live in `csrc/jpeg_shim.c`, whose error handler longjmps back
//! and returns an error code (libjpeg's default handler would call `exit()`).

use std::ffi::{c_char, c_int, c_long, c_uchar, c_uint, c_ulong};

use image::metadata::Orientation;

// Links the library `jpeg_shim.c` calls into.
use mozjpeg_sys as _;

/// libjpeg's `JMSG_LENGTH_MAX`.
const MSG_LEN: usize = 200;

/// `struct align_jpeg_info` of `jpeg_shim.c`.
#[repr(C)]
struct Info {
    width: c_uint,
    height: c_uint,
    components: c_int,
    progressive: c_int,
    message: [c_char; MSG_LEN],
}

unsafe extern "C" {
    fn align_jpeg_header(data: *const c_uchar, len: c_ulong, info: *mut Info) -> c_int;
    fn align_jpeg_decode(
        data: *const c_uchar,
        len: c_ulong,
        max_memory: c_long,
        out: *mut c_uchar,
        out_len: c_ulong,
        message: *mut c_char,
    ) -> c_int;
}

fn message(m: &[c_char]) -> String {
    let bytes: Vec<u8> = m
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if text.is_empty() {
        "libjpeg error".into()
    } else {
        text
    }
}

/// What the header (up to the first scan) says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub width: u32,
    pub height: u32,
    /// 1 (grey), 3 (YCbCr / RGB) or 4 (CMYK / YCCK); anything else is refused by [`decode`].
    pub components: usize,
}

impl Header {
    /// Bytes [`decode`] allocates for the image: libjpeg's output plus the RGB conversion.
    pub fn output_bytes(&self) -> u64 {
        let px = u64::from(self.width) * u64::from(self.height);
        px * self.components as u64 + if self.components == 3 { 0 } else { px * 3 }
    }
}

fn len_of(bytes: &[u8]) -> Result<c_ulong, String> {
    c_ulong::try_from(bytes.len()).map_err(|_| "file too large".to_string())
}

/// Reads the header without decoding any pixels.
pub(crate) fn header(bytes: &[u8]) -> Result<Header, String> {
    let mut info = Info {
        width: 0,
        height: 0,
        components: 0,
        progressive: 0,
        message: [0; MSG_LEN],
    };
    // SAFETY: `bytes` is valid for `len` bytes and only read; `info` is a valid, writable
    // `align_jpeg_info`.
    let rc = unsafe { align_jpeg_header(bytes.as_ptr(), len_of(bytes)?, &mut info) };
    if rc != 0 {
        return Err(message(&info.message));
    }
    Ok(Header {
        width: info.width,
        height: info.height,
        components: usize::try_from(info.components).unwrap_or(0),
    })
}

/// Decodes to RGB8 (`width * height * 3` bytes) like Pillow's `Image.open(..).convert("RGB")`.
/// `max_memory` bounds libjpeg's whole-image coefficient buffers (progressive files).
pub(crate) fn decode(bytes: &[u8], h: &Header, max_memory: u64) -> Result<Vec<u8>, String> {
    if !matches!(h.components, 1 | 3 | 4) {
        return Err(format!("cannot handle {}-component images", h.components));
    }
    let out_len = usize::try_from(u64::from(h.width) * u64::from(h.height) * h.components as u64)
        .map_err(|_| "image too large".to_string())?;
    let mut out = vec![0u8; out_len];
    let mut msg = [0 as c_char; MSG_LEN];
    // SAFETY: `bytes` is valid for reads of its length; `out` for writes of `out_len` bytes
    // (the shim checks that libjpeg's output has exactly that size before writing); `msg` has
    // the JMSG_LENGTH_MAX bytes the shim may write.
    let rc = unsafe {
        align_jpeg_decode(
            bytes.as_ptr(),
            len_of(bytes)?,
            c_long::try_from(max_memory).unwrap_or(c_long::MAX),
            out.as_mut_ptr(),
            out_len as c_ulong,
            msg.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(message(&msg));
    }
    Ok(match h.components {
        3 => out,
        1 => out.iter().flat_map(|&v| [v; 3]).collect(),
        _ => out.chunks_exact(4).flat_map(cmyk_inverted_to_rgb).collect(),
    })
}

/// Pillow opens 4-component JPEGs as `CMYK;I` (Adobe's inverted CMYK: `255 - v`) and converts
/// with `cmyk2rgb`: `nk = 255 - k; out = nk - nk * c / 255` (MULDIV255 rounding).
fn cmyk_inverted_to_rgb(p: &[u8]) -> [u8; 3] {
    let muldiv255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let nk = u32::from(p[3]); // 255 - (255 - k)
    let ch = |c: u8| (nk - muldiv255(255 - u32::from(c), nk)) as u8;
    [ch(p[0]), ch(p[1]), ch(p[2])]
}

/// The orientation in the first `Exif` APP1 segment before the first scan, as Pillow's
/// `getexif()` reads it for JPEG.
pub(crate) fn exif_orientation(bytes: &[u8]) -> Option<Orientation> {
    let mut i = 2; // after SOI
    while i + 2 <= bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        match marker {
            0xFF => i += 1,               // fill byte
            0xDA | 0xD9 => return None,   // SOS, EOI
            0x01 | 0xD0..=0xD7 => i += 2, // no length field
            _ => {
                let len = usize::from(u16::from_be_bytes([*bytes.get(i + 2)?, *bytes.get(i + 3)?]));
                let segment = bytes.get(i + 4..(i + 2 + len).max(i + 4))?;
                if marker == 0xE1
                    && let Some(tiff) = segment.strip_prefix(b"Exif\0\0")
                {
                    return Orientation::from_exif_chunk(tiff);
                }
                i += 2 + len.max(2);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_matches_pillow() {
        // Pillow 13: Image CMYK (10,20,30,40), (200,100,50,250), ... .convert("RGB"); the
        // decoder's (inverted) values are 255 minus these.
        let inv = |p: [u8; 4]| p.map(|v| 255 - v);
        assert_eq!(
            cmyk_inverted_to_rgb(&inv([10, 20, 30, 40])),
            [207, 198, 190]
        );
        assert_eq!(cmyk_inverted_to_rgb(&inv([200, 100, 50, 250])), [1, 3, 4]);
        assert_eq!(cmyk_inverted_to_rgb(&inv([255, 255, 255, 255])), [0, 0, 0]);
        assert_eq!(cmyk_inverted_to_rgb(&inv([0, 0, 0, 0])), [255, 255, 255]);
    }

    #[test]
    fn corrupt_headers_are_errors() {
        for bytes in [
            &b""[..],
            b"\xFF\xD8",
            b"\xFF\xD8\xFF\xE0\x00\x10JFIF garbage garbage",
        ] {
            assert!(header(bytes).is_err());
        }
        assert!(exif_orientation(b"\xFF\xD8\xFF\xE1\x00").is_none());
    }
}
