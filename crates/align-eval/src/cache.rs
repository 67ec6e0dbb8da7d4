//! Classifiers kept between runs. Embedding every prompt is most of a zero-shot run at
//! ImageNet's shape (80,000 prompts against 1,000 images), and datasets that share their classes
//! (ImageNet's validation set, -V2, -Sketch, -R and -A subsets...) share the classifier: it is
//! stored once under a key of everything it depends on (the model's identity and weights, the
//! class names and the templates, in order) and read back by later runs.

use std::path::{Path, PathBuf};

use align_collection::io;
use align_collection::layout::{EmbDtype, read_npy, write_npy};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};

/// A folder of classifiers, `KEY.npy` each (`[classes, dim]` f32).
#[derive(Debug, Clone)]
pub struct ClassifierCache {
    pub dir: PathBuf,
}

impl ClassifierCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$ALIGN_CACHE_DIR/classifiers`, else `$XDG_CACHE_HOME/align/classifiers`, else
    /// `~/.cache/align/classifiers`.
    pub fn default_dir() -> Option<PathBuf> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = env("ALIGN_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("align")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/align")))?;
        Some(root.join("classifiers"))
    }

    /// The key of a classifier: `model` names the model and its weights exactly (the caller's
    /// choice: e.g. its path or id with the weight files' sizes and times, and the precision).
    pub fn key(model: &str, classnames: &[String], templates: &[String]) -> String {
        let mut h = Xxh3::new();
        for part in [model].into_iter().chain(
            std::iter::once("\0classes")
                .chain(classnames.iter().map(String::as_str))
                .chain(std::iter::once("\0templates"))
                .chain(templates.iter().map(String::as_str)),
        ) {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        format!("{:032x}", h.digest128())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.npy"))
    }

    /// The stored classifier of `key`, if there is one of `classes` rows of `dim` values (a
    /// file of another shape or not readable counts as absent: it is rebuilt and replaced).
    pub fn load(&self, key: &str, classes: usize, dim: usize) -> Option<Vec<f32>> {
        let (values, d) = read_npy(&self.path(key)).ok()?;
        (d == dim && values.len() == classes * dim).then_some(values)
    }

    /// Stores `classifier` under `key` (written under a temporary name, then renamed).
    pub fn store(&self, key: &str, classifier: &[f32], dim: usize) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        Ok(write_npy(&self.path(key), classifier, dim, EmbDtype::F32)?)
    }
}

/// A classifier saved by `--save-classifier` (`[classes, dim]` .npy): an error naming the file
/// if its shape does not fit.
pub fn read_classifier(path: &Path, classes: usize, dim: usize) -> Result<Vec<f32>> {
    let (values, d) = read_npy(path)?;
    if d != dim || values.len() != classes * dim {
        return Err(Error::Dataset {
            path: path.to_path_buf(),
            message: format!(
                "a classifier of {} x {d} values; this model and dataset need {classes} x {dim}",
                values.len() / d.max(1)
            ),
        });
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_key_depends_on_everything_in_order() {
        let key = |m, c: &[&str], t: &[&str]| ClassifierCache::key(m, &s(c), &s(t));
        let base = key("m", &["cat", "dog"], &["a {c}"]);
        assert_eq!(base, key("m", &["cat", "dog"], &["a {c}"]));
        for other in [
            key("m2", &["cat", "dog"], &["a {c}"]),
            key("m", &["dog", "cat"], &["a {c}"]),
            key("m", &["cat", "dog"], &["a {c}."]),
            key("m", &["catdog"], &["a {c}"]),
            key("m", &["cat"], &["dog", "a {c}"]),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn stores_and_loads_only_the_right_shape() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ClassifierCache::new(dir.path().join("c"));
        let values: Vec<f32> = (0..6).map(|i| i as f32 / 7.0).collect();
        assert_eq!(cache.load("k", 2, 3), None);
        cache.store("k", &values, 3).unwrap();
        assert_eq!(cache.load("k", 2, 3), Some(values.clone()));
        assert_eq!(cache.load("k", 3, 2), None);
        let path = dir.path().join("c/k.npy");
        assert_eq!(read_classifier(&path, 2, 3).unwrap(), values);
        let err = read_classifier(&path, 4, 3).unwrap_err().to_string();
        assert!(err.contains("k.npy") && err.contains("4 x 3"), "{err}");
    }
}
