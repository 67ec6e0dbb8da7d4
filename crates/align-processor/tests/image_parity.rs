//! Pixel parity with transformers' `EfficientNetImageProcessorPil` (Pillow path), on the fixtures
//! written by `tests/reference/make_processor_fixtures.py`.
//!
//! Expected outputs of the ALIGN-style configs (rescale 1/127.5 with offset, no normalisation) are
//! stored as lossless uint8 PNGs: the reference's f32 equals `f32(u8 * (1/127.5)) - 1` exactly
//! (the generator asserts it), so comparing in uint8 steps loses nothing.

use std::path::{Path, PathBuf};

use align_processor::{DecodeOptions, ExifOrientation, ImageConfig, ImageProcessor};
use serde_json::Value;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/processor"
);

fn fixture(p: &str) -> PathBuf {
    Path::new(FIXTURES).join(p)
}

#[derive(Default)]
struct Stats {
    values: usize,
    identical: usize,
    max_steps: f64,
}

fn config(configs: &Value, name: &str) -> ImageConfig {
    let text = configs[name].to_string();
    ImageConfig::from_json_str(&text, Path::new(name)).unwrap()
}

#[test]
fn pixels_match_pillow_reference() {
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("pixel_cases.json")).unwrap())
            .unwrap();
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    let mut total = Stats::default();
    let mut jpeg_total = Stats::default();
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let cfg = config(&meta["configs"], case["config"].as_str().unwrap());
        let exif = if case["exif"].as_bool().unwrap() {
            ExifOrientation::Apply
        } else {
            ExifOrientation::Ignore
        };
        let proc = ImageProcessor::new(cfg.clone()).with_decode_options(DecodeOptions {
            exif,
            ..DecodeOptions::default()
        });
        let data = proc
            .preprocess_paths(&[fixture(&format!(
                "images/{}",
                case["image"].as_str().unwrap()
            ))])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape = data.shape().to_vec();
        let got: Vec<f32> = data.try_to_vec().unwrap();
        let expected = case["expected"].as_str().unwrap();
        let mut s = Stats::default();
        match case["kind"].as_str().unwrap() {
            "u8" => {
                let png = image::open(fixture(expected)).unwrap().to_rgb8();
                let (w, h) = (png.width() as usize, png.height() as usize);
                assert_eq!(shape.as_slice(), &[1, 3, h, w], "{name}: shape");
                for c in 0..3 {
                    for y in 0..h {
                        for x in 0..w {
                            let u = png.get_pixel(x as u32, y as u32)[c];
                            let want = (f64::from(u) * cfg.rescale_factor) as f32 - 1.0;
                            let v = got[(c * h + y) * w + x];
                            let steps = f64::from((v - want).abs()) * 127.5;
                            s.values += 1;
                            s.identical += usize::from(v == want);
                            s.max_steps = s.max_steps.max(steps);
                        }
                    }
                }
            }
            "f32" => {
                let (want_shape, want) = test_support::read_npy::<f32>(&fixture(expected));
                assert_eq!(&shape[1..], &want_shape[..], "{name}: shape");
                // One uint8 step after normalisation: 1 / 255 / (std * std) with include_top.
                let step = 1.0 / 255.0 / (cfg.image_std[0] * cfg.image_std[0]);
                for (v, w) in got.iter().zip(&want) {
                    s.values += 1;
                    s.identical += usize::from(v == w);
                    s.max_steps = s.max_steps.max(f64::from((v - w).abs() / step));
                }
            }
            k => panic!("unknown kind {k}"),
        }
        let pct = 100.0 * s.identical as f64 / s.values as f64;
        println!(
            "{name:40} {:>8} values  {pct:9.5}% identical  max diff {:.3} steps",
            s.values, s.max_steps
        );
        // The bar, for every input (JPEG included: decoded by libjpeg-turbo like Pillow).
        let jpeg = case["image"].as_str().unwrap().ends_with(".jpg");
        let under = pct < 99.99 || s.max_steps > 1.0001;
        if under {
            failures.push(name.to_string());
        }
        let t = if jpeg { &mut jpeg_total } else { &mut total };
        t.values += s.values;
        t.identical += s.identical;
        t.max_steps = t.max_steps.max(s.max_steps);
    }
    for (label, t) in [("lossless inputs", &total), ("JPEG inputs", &jpeg_total)] {
        println!(
            "TOTAL {label}: {} values, {:.5}% identical, max diff {:.3} uint8 steps",
            t.values,
            100.0 * t.identical as f64 / t.values.max(1) as f64,
            t.max_steps
        );
    }
    assert!(failures.is_empty(), "cases under the bar: {failures:?}");
}

#[test]
fn both_config_layouts_give_align_base() {
    let flat = ImageConfig::from_dir(fixture("vocab")).unwrap();
    let nested = ImageConfig::from_dir(fixture("tokenizer_json")).unwrap();
    assert_eq!(flat, ImageConfig::align_base());
    assert_eq!(nested, ImageConfig::align_base());
}

#[test]
fn batch_equals_single_images_and_keeps_order() {
    let proc = ImageProcessor::new(ImageConfig::align_base());
    let names = [
        "chelsea.png",
        "tiny_1x1.png",
        "camera_grey.png",
        "logo_rgba.png",
    ];
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| fixture(&format!("images/{n}")))
        .collect();
    let batch: Vec<f32> = proc.preprocess_paths(&paths).unwrap().try_to_vec().unwrap();
    let per = 3 * 289 * 289;
    assert_eq!(batch.len(), names.len() * per);
    for (i, p) in paths.iter().enumerate() {
        let one: Vec<f32> = proc
            .preprocess_paths(std::slice::from_ref(p))
            .unwrap()
            .try_to_vec()
            .unwrap();
        assert_eq!(&batch[i * per..(i + 1) * per], &one[..], "{}", names[i]);
    }
}

#[test]
fn bad_inputs_are_errors_naming_the_file() {
    let proc = ImageProcessor::new(ImageConfig::align_base());
    let missing = fixture("images/does_not_exist.png");
    let e = proc
        .preprocess_paths(&[fixture("images/tiny_1x1.png"), missing.clone()])
        .unwrap_err();
    assert!(e.to_string().contains("does_not_exist.png"), "{e}");
    let truncated = std::fs::read(fixture("images/coffee.jpg")).unwrap();
    let e = proc
        .preprocess_bytes(&[("cut.jpg", &truncated[..200])])
        .unwrap_err();
    assert!(e.to_string().starts_with("cut.jpg: "), "{e}");
}

#[test]
fn decompression_bomb_is_an_error() {
    // A valid PNG claiming 60000 x 60000 pixels with one byte of image data.
    let bomb = png_header(60_000, 60_000);
    let e =
        align_processor::decode_bytes(&bomb, "bomb.png", &DecodeOptions::default()).unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
    let small_limits = DecodeOptions {
        max_pixels: 100,
        ..DecodeOptions::default()
    };
    let e =
        align_processor::decode_path(fixture("images/small_40x30.png"), &small_limits).unwrap_err();
    assert!(e.to_string().contains("small_40x30.png"), "{e}");
}

#[test]
fn corrupt_jpegs_are_errors_not_aborts() {
    let opts = DecodeOptions::default();
    let coffee = std::fs::read(fixture("images/coffee.jpg")).unwrap();
    let progressive = std::fs::read(fixture("images/astronaut_progressive.jpg")).unwrap();
    // A JPEG signature followed by noise.
    let mut garbage = b"\xFF\xD8\xFF\xE0".to_vec();
    garbage.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let cases: [(&str, &[u8]); 6] = [
        ("header_cut.jpg", &coffee[..200]),
        ("half.jpg", &coffee[..coffee.len() / 2]),
        ("last_bytes_cut.jpg", &coffee[..coffee.len() - 64]),
        (
            "progressive_half.jpg",
            &progressive[..progressive.len() / 2],
        ),
        ("garbage.jpg", &garbage),
        ("soi_only.jpg", b"\xFF\xD8\xFF"),
    ];
    for (name, bytes) in cases {
        let e = align_processor::decode_bytes(bytes, name, &opts).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{name}: ")), "{e}");
    }
    // The whole files decode (a missing trailer would be the only difference).
    assert!(align_processor::decode_bytes(&coffee, "coffee.jpg", &opts).is_ok());
}

#[test]
fn jpeg_limits_are_checked_on_the_header() {
    // coffee.jpg with its frame header claiming 60000 x 60000 pixels.
    let mut bomb = std::fs::read(fixture("images/coffee.jpg")).unwrap();
    let sof = (0..bomb.len() - 1)
        .find(|&i| bomb[i] == 0xFF && matches!(bomb[i + 1], 0xC0 | 0xC2))
        .unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let e =
        align_processor::decode_bytes(&bomb, "bomb.jpg", &DecodeOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("60000x60000 is over the limit"),
        "{e}"
    );
    let path = fixture("images/coffee.jpg");
    let few_pixels = DecodeOptions {
        max_pixels: 1000,
        ..DecodeOptions::default()
    };
    let e = align_processor::decode_path(&path, &few_pixels).unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
    let little_memory = DecodeOptions {
        max_alloc: 10_000,
        ..DecodeOptions::default()
    };
    let e = align_processor::decode_path(&path, &little_memory).unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
}

#[test]
fn jpeg_exif_orientation_is_a_choice() {
    let path = fixture("images/chelsea_exif6.jpg");
    let stored = DecodeOptions {
        exif: ExifOrientation::Ignore,
        ..DecodeOptions::default()
    };
    let raw = align_processor::decode_path(&path, &stored).unwrap();
    let rotated = align_processor::decode_path(&path, &DecodeOptions::default()).unwrap();
    assert_eq!((rotated.width, rotated.height), (raw.height, raw.width));
    // Orientation 6: displayed pixel (x, y) is stored pixel (y, H - 1 - x).
    let px = |im: &align_processor::RgbImage, x: usize, y: usize| {
        im.data[(y * im.width + x) * 3..][..3].to_vec()
    };
    assert_eq!(px(&rotated, 0, 0), px(&raw, 0, raw.height - 1));
    assert_eq!(px(&rotated, 5, 2), px(&raw, 2, raw.height - 1 - 5));
}

fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&ihdr);
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    // IDAT: a zlib stream with one stored byte; then IEND.
    let zlib = [
        0x78, 0x01, 0x01, 0x01, 0x00, 0xFE, 0xFF, 0x00, 0x00, 0x01, 0x00, 0x01,
    ];
    for (name, data) in [(&b"IDAT"[..], &zlib[..]), (&b"IEND"[..], &[][..])] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut chunk = name.to_vec();
        chunk.extend_from_slice(data);
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
