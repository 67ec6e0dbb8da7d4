//! Decode + preprocess arbitrary bytes: must return `Ok` or `Err`, never panic, abort or run out
//! of memory. The limits are lowered so that the fuzzer explores rather than allocates.
#![no_main]

use std::sync::OnceLock;

use align_processor::{DecodeOptions, ImageConfig, ImageProcessor, Resample};
use libfuzzer_sys::fuzz_target;

fn processors() -> &'static [ImageProcessor; 3] {
    static P: OnceLock<[ImageProcessor; 3]> = OnceLock::new();
    P.get_or_init(|| {
        let limits = DecodeOptions {
            max_pixels: 4_000_000,
            max_side: 8192,
            max_alloc: 64 << 20,
            ..DecodeOptions::default()
        };
        let bicubic_pad = ImageConfig {
            resample: Resample::Bicubic,
            size: (31, 17),
            crop_size: (40, 12),
            ..ImageConfig::align_base()
        };
        let no_resize = ImageConfig {
            do_resize: false,
            do_center_crop: false,
            ..ImageConfig::default()
        };
        [ImageConfig::align_base(), bicubic_pad, no_resize]
            .map(|c| ImageProcessor::new(c).with_decode_options(limits))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let p = &processors()[usize::from(sel) % 3];
    if let Ok(t) = p.preprocess_bytes(&[("fuzz", bytes)]) {
        let v = t.as_slice::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()));
    }
});
