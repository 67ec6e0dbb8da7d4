//! `EfficientNetImageProcessor` settings, read from a checkpoint directory.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::resize::Resample;
use crate::{Error, Result};

/// Image preprocessing settings, with the field names and meaning of transformers'
/// `EfficientNetImageProcessor`. A field missing from the file takes the class default (which is
/// NOT the align-base setting: see [`ImageConfig::align_base`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    pub do_resize: bool,
    /// `(height, width)` after the resize.
    pub size: (usize, usize),
    pub resample: Resample,
    pub do_center_crop: bool,
    /// `(height, width)` of the centre crop.
    pub crop_size: (usize, usize),
    pub do_rescale: bool,
    pub rescale_factor: f64,
    /// After rescaling, subtract 1 (maps `[0, 255]` to `[-1, 1]` with factor 1/127.5).
    pub rescale_offset: bool,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// Divide by `image_std` once more at the end (EfficientNet classification heads).
    pub include_top: bool,
}

impl Default for ImageConfig {
    /// transformers' class defaults for `EfficientNetImageProcessor`.
    fn default() -> Self {
        Self {
            do_resize: true,
            size: (346, 346),
            resample: Resample::Bicubic,
            do_center_crop: false,
            crop_size: (289, 289),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            rescale_offset: false,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            include_top: true,
        }
    }
}

impl ImageConfig {
    /// The kakaobrain/align-base settings (`preprocessor_config.json` of the hub checkpoint).
    pub fn align_base() -> Self {
        Self {
            resample: Resample::Bilinear,
            do_center_crop: true,
            rescale_factor: 1.0 / 127.5,
            rescale_offset: true,
            do_normalize: false,
            include_top: false,
            ..Self::default()
        }
    }

    /// Height and width of the preprocessed images for an input of `(h, w)`.
    pub fn output_size(&self, input: (usize, usize)) -> (usize, usize) {
        let s = if self.do_resize { self.size } else { input };
        if self.do_center_crop {
            self.crop_size
        } else {
            s
        }
    }

    /// Reads the settings of a checkpoint directory: the transformers 4.x flat
    /// `preprocessor_config.json` if present, otherwise the 5.x `processor_config.json`
    /// (settings nested under `"image_processor"`).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let flat = dir.join("preprocessor_config.json");
        if flat.is_file() {
            return Self::from_file(&flat);
        }
        let nested = dir.join("processor_config.json");
        if nested.is_file() {
            return Self::from_file(&nested);
        }
        Err(Error::Missing {
            dir: dir.to_path_buf(),
            what: "image processor config",
            looked_for: "preprocessor_config.json, processor_config.json",
        })
    }

    /// Reads one config file, flat or with the settings nested under `"image_processor"`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            error: source.into(),
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses the JSON text of a config file; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            error: source.into(),
        })?;
        let root = value.as_object().ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            key: "(root)",
            expected: "a JSON object",
            actual: short(&value),
        })?;
        let obj = match root.get("image_processor") {
            Some(Value::Object(inner)) => inner,
            Some(other) => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    key: "image_processor",
                    expected: "a JSON object",
                    actual: short(other),
                });
            }
            None => root,
        };
        Fields { obj, path }.parse()
    }
}

fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 60 {
        let mut cut = 57;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl Fields<'_> {
    fn err(&self, key: &'static str, expected: &'static str, v: &Value) -> Error {
        Error::Config {
            path: PathBuf::from(self.path),
            key,
            expected,
            actual: short(v),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn bool(&self, key: &'static str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(key, "true or false", v)),
        }
    }

    fn positive(&self, key: &'static str, v: &Value) -> Result<usize> {
        v.as_u64()
            .filter(|&n| n > 0 && n <= 1 << 16)
            .map(|n| n as usize)
            .ok_or_else(|| self.err(key, "an integer in 1..=65536", v))
    }

    /// `{"height": h, "width": w}` or a single integer (square).
    fn size(&self, key: &'static str, default: (usize, usize)) -> Result<(usize, usize)> {
        let expected = "{\"height\": H, \"width\": W} or an integer";
        match self.get(key) {
            None => Ok(default),
            Some(v @ Value::Number(_)) => {
                let n = self.positive(key, v)?;
                Ok((n, n))
            }
            Some(v @ Value::Object(m)) => match (m.get("height"), m.get("width")) {
                (Some(h), Some(w)) => Ok((self.positive(key, h)?, self.positive(key, w)?)),
                _ => Err(self.err(key, expected, v)),
            },
            Some(v) => Err(self.err(key, expected, v)),
        }
    }

    fn float(&self, key: &'static str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.err(key, "a finite number", v)),
        }
    }

    /// A number (used for every channel) or a list of 3 numbers.
    fn triple(&self, key: &'static str, default: [f32; 3]) -> Result<[f32; 3]> {
        let expected = "a number or a list of 3 numbers";
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let num = |x: &Value| x.as_f64().filter(|f| f.is_finite()).map(|f| f as f32);
        match v {
            Value::Number(_) => num(v)
                .map(|x| [x; 3])
                .ok_or_else(|| self.err(key, expected, v)),
            Value::Array(a) if a.len() == 3 => {
                let mut out = [0f32; 3];
                for (o, x) in out.iter_mut().zip(a) {
                    *o = num(x).ok_or_else(|| self.err(key, expected, v))?;
                }
                Ok(out)
            }
            _ => Err(self.err(key, expected, v)),
        }
    }

    fn parse(&self) -> Result<ImageConfig> {
        let d = ImageConfig::default();
        let resample = match self.get("resample") {
            None => d.resample,
            Some(v) => v
                .as_i64()
                .and_then(Resample::from_pillow)
                .ok_or_else(|| self.err("resample", "a Pillow filter number 0..=5", v))?,
        };
        let image_std = self.triple("image_std", d.image_std)?;
        let cfg = ImageConfig {
            do_resize: self.bool("do_resize", d.do_resize)?,
            size: self.size("size", d.size)?,
            resample,
            do_center_crop: self.bool("do_center_crop", d.do_center_crop)?,
            crop_size: self.size("crop_size", d.crop_size)?,
            do_rescale: self.bool("do_rescale", d.do_rescale)?,
            rescale_factor: self.float("rescale_factor", d.rescale_factor)?,
            rescale_offset: self.bool("rescale_offset", d.rescale_offset)?,
            do_normalize: self.bool("do_normalize", d.do_normalize)?,
            image_mean: self.triple("image_mean", d.image_mean)?,
            image_std,
            include_top: self.bool("include_top", d.include_top)?,
        };
        if (cfg.do_normalize || cfg.include_top) && image_std.contains(&0.0) {
            return Err(self.err(
                "image_std",
                "non-zero values",
                self.get("image_std").unwrap_or(&Value::Null),
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_nested_agree() {
        let flat = r#"{"crop_size": {"height": 289, "width": 289}, "do_center_crop": true,
            "do_normalize": false, "do_rescale": true, "do_resize": true, "include_top": false,
            "resample": 2, "rescale_factor": 0.00784313725490196, "rescale_offset": true,
            "size": {"height": 346, "width": 346}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}"#;
        let nested =
            format!(r#"{{"image_processor": {flat}, "processor_class": "AlignProcessor"}}"#);
        let a = ImageConfig::from_json_str(flat, Path::new("a.json")).unwrap();
        let b = ImageConfig::from_json_str(&nested, Path::new("b.json")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, ImageConfig::align_base());
    }

    #[test]
    fn bad_field_is_named() {
        let e = ImageConfig::from_json_str(r#"{"resample": 9}"#, Path::new("p.json")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("p.json") && msg.contains("resample") && msg.contains('9'),
            "{msg}"
        );
        let e =
            ImageConfig::from_json_str(r#"{"size": {"shortest_edge": 3}}"#, Path::new("p.json"))
                .unwrap_err();
        assert!(e.to_string().contains("size"));
    }
}
