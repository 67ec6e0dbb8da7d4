//! Reading model files through burn-store, shared by the model crates: the error type each
//! crate's `Error` wraps (`#[from]`), the check of a store's `ApplyResult` with tensors named by
//! their checkpoint keys, and key remapping.

use std::path::{Path, PathBuf};

use burn::store::{ApplyError, ApplyResult};

/// What can go wrong reading a model's files; every variant names the file, and the tensor
/// where there is one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file could not be opened or parsed as a checkpoint.
    #[error("cannot read checkpoint {path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    /// Tensors the model needs are not in the checkpoint.
    #[error("checkpoint {path} is missing tensor(s): {}", keys.join(", "))]
    MissingKeys { path: PathBuf, keys: Vec<String> },
    /// A tensor has another shape than the model built from the config.
    #[error("checkpoint {path}: tensor `{key}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    /// A tensor could not be converted (dtype, adapter, read error).
    #[error("checkpoint {path}: tensor `{key}`: {message}")]
    Tensor {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// The checkpoint holds tensors of the model that its config does not describe.
    #[error(
        "checkpoint {path}: unexpected tensor `{key}` (not part of the model the config \
         describes: a checkpoint of another variant?)"
    )]
    UnexpectedKey { path: PathBuf, key: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The text of `path` (a `config.json`).
pub fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `Ok` when `path` exists and can be read, else [`Error::Io`]: checked before a store opens
/// it, whose own error does not name the file.
pub fn require_file(path: &Path) -> Result<()> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// [`Error::Unreadable`] for `path`, from a store's error.
pub fn unreadable(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::Unreadable {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

/// A store key remapping (pattern, replacement) that removes the literal `prefix` from the
/// start of every key.
pub fn strip_prefix(prefix: &str) -> (String, String) {
    (format!("^{}", prefix.replace('.', r"\.")), String::new())
}

/// The checkpoint (PyTorch) name of a burn parameter path: burn's norm layers call PyTorch's
/// `weight` and `bias` `gamma` and `beta`.
pub fn torch_key(module_path: &str) -> String {
    if let Some(p) = module_path.strip_suffix(".gamma") {
        format!("{p}.weight")
    } else if let Some(p) = module_path.strip_suffix(".beta") {
        format!("{p}.bias")
    } else {
        module_path.to_string()
    }
}

/// The first problem `result` reports, as an error: a tensor that failed to load, else the
/// missing tensors. `key` maps a burn module path to its checkpoint key. With `torch_layout`,
/// 2-d Linear weight shapes are reported as PyTorch stores them (`[out, in]`; burn holds
/// `[in, out]`).
pub fn check_apply_result(
    result: &ApplyResult,
    path: &Path,
    key: impl Fn(&str) -> String,
    torch_layout: bool,
) -> Result<()> {
    let path = path.to_path_buf();
    if let Some(error) = result.errors.first() {
        return Err(match error {
            ApplyError::ShapeMismatch {
                path: module_path,
                expected,
                found,
            } => {
                let mut expected = expected.to_vec();
                let mut actual = found.to_vec();
                if torch_layout
                    && module_path.ends_with(".weight")
                    && !module_path.contains("embeddings")
                    && expected.len() == 2
                {
                    expected.reverse();
                    actual.reverse();
                }
                Error::ShapeMismatch {
                    path,
                    key: key(module_path),
                    expected,
                    actual,
                }
            }
            ApplyError::DTypeMismatch {
                path: module_path, ..
            }
            | ApplyError::AdapterError {
                path: module_path, ..
            }
            | ApplyError::LoadError {
                path: module_path, ..
            } => Error::Tensor {
                path,
                key: key(module_path),
                message: error.to_string(),
            },
        });
    }
    if result.missing.is_empty() {
        return Ok(());
    }
    Err(Error::MissingKeys {
        path,
        keys: result.missing.iter().map(|(p, _)| key(p)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_keys_of_norm_parameters() {
        assert_eq!(torch_key("encoder.top_bn.gamma"), "encoder.top_bn.weight");
        assert_eq!(torch_key("encoder.top_bn.beta"), "encoder.top_bn.bias");
        assert_eq!(
            torch_key("encoder.top_conv.weight"),
            "encoder.top_conv.weight"
        );
    }

    #[test]
    fn missing_files_are_io_errors_naming_them() {
        let file = Path::new("/nonexistent/model.safetensors");
        for err in [
            require_file(file).unwrap_err(),
            read_to_string(file).unwrap_err(),
        ] {
            let Error::Io { path, source } = &err else {
                panic!("{err}")
            };
            assert_eq!(
                (path.as_path(), source.kind()),
                (file, std::io::ErrorKind::NotFound)
            );
            assert!(err.to_string().contains("/nonexistent/model.safetensors"));
        }
    }
}
