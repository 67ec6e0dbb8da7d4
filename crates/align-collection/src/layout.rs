//! The output folder, in clip-retrieval's layout:
//!
//! ```text
//! OUT/align.json                     settings of the collection (model, dtype, --text, shards)
//! OUT/img_emb/img_emb_P.npy          [rows, dim] L2-normalised image embeddings (f16 or f32)
//! OUT/text_emb/text_emb_P.npy        [rows, dim] caption embeddings (with --text; zero rows
//!                                    for samples without a caption)
//! OUT/metadata/metadata_P.parquet    row i describes row i of the .npy files of partition P
//! OUT/failures/failures_P.jsonl      samples that could not be read or decoded
//! OUT/manifest/P.json                the partition's commit record (written last)
//! ```
//!
//! Every file is written under a temporary name (`.NAME.tmp`) and renamed into place; a
//! partition exists once its manifest does. Data files without a manifest are the leftovers of
//! an interrupted run and are removed by the next run of the same shard.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchReader};
use half::f16;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoError, Result, io};

/// Element type of the embedding files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbDtype {
    F16,
    F32,
}

/// `OUT/align.json`: what every run on the same OUT must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The model: a hub id, or a model directory's absolute path.
    pub model: String,
    /// Embedding width.
    pub dim: usize,
    pub emb_dtype: EmbDtype,
    /// Whether captions are embedded too (`text_emb/`).
    pub text: bool,
    /// The number of shards the collection is split into (1: not sharded).
    pub shards: u32,
}

/// One indexed sample of a partition, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub image_path: String,
    pub fingerprint: String,
}

/// One sample that could not be read or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub image_path: String,
    pub key: String,
    pub error: String,
    /// Empty for a folder or archive that could not be listed.
    pub fingerprint: String,
}

/// `OUT/manifest/P.json`: the rows of partition P (in order) and its failures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub rows: Vec<Entry>,
    pub failures: Vec<Failure>,
}

/// The folders of an output directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

pub const IMG_EMB: &str = "img_emb";
pub const TEXT_EMB: &str = "text_emb";
pub const METADATA: &str = "metadata";
pub const FAILURES: &str = "failures";
pub const MANIFEST: &str = "manifest";

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn settings(&self) -> PathBuf {
        self.root.join("align.json")
    }

    pub fn img_emb(&self, p: &str) -> PathBuf {
        self.root.join(IMG_EMB).join(format!("img_emb_{p}.npy"))
    }

    pub fn text_emb(&self, p: &str) -> PathBuf {
        self.root.join(TEXT_EMB).join(format!("text_emb_{p}.npy"))
    }

    pub fn metadata(&self, p: &str) -> PathBuf {
        self.root
            .join(METADATA)
            .join(format!("metadata_{p}.parquet"))
    }

    pub fn failures(&self, p: &str) -> PathBuf {
        self.root.join(FAILURES).join(format!("failures_{p}.jsonl"))
    }

    pub fn manifest(&self, p: &str) -> PathBuf {
        self.root.join(MANIFEST).join(format!("{p}.json"))
    }

    /// The data files of partition `p` (whether they exist or not), manifest excluded.
    pub fn data_files(&self, p: &str) -> [PathBuf; 4] {
        [
            self.img_emb(p),
            self.text_emb(p),
            self.metadata(p),
            self.failures(p),
        ]
    }

    /// Creates the folders.
    pub fn create(&self) -> Result<()> {
        for d in [IMG_EMB, TEXT_EMB, METADATA, FAILURES, MANIFEST] {
            let dir = self.root.join(d);
            std::fs::create_dir_all(&dir).map_err(io(dir))?;
        }
        Ok(())
    }

    /// The partition names of committed partitions (manifests), sorted.
    pub fn partitions(&self) -> Result<Vec<String>> {
        let dir = self.root.join(MANIFEST);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let name = entry.map_err(io(&dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(p) = name.strip_suffix(".json")
                && !name.starts_with('.')
            {
                names.push(p.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Reads `align.json`, if present.
    pub fn read_settings(&self) -> Result<Option<Settings>> {
        let path = self.settings();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    path,
                    message: format!("not an align.json written by `align index`: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IoError { path, error: e }.into()),
        }
    }

    pub fn read_manifest(&self, p: &str) -> Result<Manifest> {
        let path = self.manifest(p);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path,
            message: format!("not a manifest written by `align index`: {e}"),
        })
    }
}

/// Writes `path` atomically: `write` fills a temporary file beside it (`.NAME.tmp`), which is
/// synced and renamed over `path`. On error the temporary file is removed and `path` is
/// untouched.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| IoError {
            path: tmp.clone(),
            error: e.into_error(),
        })?;
        file.sync_all().map_err(io(&tmp))?;
        Ok(std::fs::rename(&tmp, path).map_err(io(path))?)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `dir/.NAME.tmp` for `dir/NAME`.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `value` as JSON to `path` unless `path` exists, atomically; returns whether it wrote.
/// Runs starting together into one OUT each fill a temporary file of their own
/// (`.NAME.PID.tmp`) and hard-link it into place, which fails for all but the first, so the
/// file is always one run's whole text.
pub fn create_json<T: Serialize>(path: &Path, value: &T) -> Result<bool> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    write_json(&tmp, value)?;
    let created = match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(IoError {
            path: path.to_path_buf(),
            error: e,
        }
        .into()),
    };
    let _ = std::fs::remove_file(&tmp);
    created
}

/// Writes `value` as JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, |w| {
        serde_json::to_writer(&mut *w, value).map_err(|e| IoError {
            path: path.to_path_buf(),
            error: e.into(),
        })?;
        Ok(w.write_all(b"\n").map_err(io(path))?)
    })
}

/// Writes `values` (row-major `[n, dim]`) as a `.npy` file of `dtype`, atomically, byte for
/// byte as `numpy.save` writes it: embedding_reader (autofaiss, clip-retrieval) parses the
/// header text with a regular expression that only numpy's spelling of the shape matches.
pub fn write_npy(path: &Path, values: &[f32], dim: usize, dtype: EmbDtype) -> Result<()> {
    let n = values.len().checked_div(dim).unwrap_or(0);
    let descr = match dtype {
        EmbDtype::F16 => "<f2",
        EmbDtype::F32 => "<f4",
    };
    write_atomic(path, |w| {
        let mut write = || -> std::io::Result<()> {
            w.write_all(&npy_header(descr, n, dim))?;
            match dtype {
                EmbDtype::F32 => values
                    .iter()
                    .try_for_each(|v| w.write_all(&v.to_le_bytes())),
                EmbDtype::F16 => values
                    .iter()
                    .try_for_each(|&v| w.write_all(&f16::from_f32(v).to_le_bytes())),
            }
        };
        Ok(write().map_err(io(path))?)
    })
}

/// numpy's format 1.0 header of a C-order `[rows, cols]` array: the dict with its keys
/// sorted, room for the row count to grow to 21 digits, spaces up to a multiple of 64 bytes,
/// then a newline (numpy's `_write_array_header`).
fn npy_header(descr: &str, rows: usize, cols: usize) -> Vec<u8> {
    let mut dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    dict.push_str(&" ".repeat(21usize.saturating_sub(rows.to_string().len())));
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(64 - unpadded % 64));
    dict.push('\n');
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header
}

/// Reads a `[n, dim]` f16 or f32 `.npy` file as f32 values; returns them and `dim`.
pub fn read_npy(path: &Path) -> Result<(Vec<f32>, usize)> {
    let corrupt = |message: String| Error::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(io(path))?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(|e| corrupt(e.to_string()))?;
    let shape = npy.shape().to_vec();
    let [_, dim] = shape[..] else {
        return Err(corrupt(format!(
            "expected a 2-d array, got shape {shape:?}"
        )));
    };
    let values = match npy.dtype() {
        npyz::DType::Plain(t) if t.size_field() == 2 => npy
            .into_vec::<f16>()
            .map(|v| v.into_iter().map(f16::to_f32).collect()),
        _ => npy.into_vec::<f32>(),
    }
    .map_err(|e| corrupt(e.to_string()))?;
    Ok((values, dim as usize))
}

/// Writes `batch` as a parquet file (snappy-compressed, as pandas writes them), atomically.
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let parquet_err = |e: parquet::errors::ParquetError| Error::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    write_atomic(path, |w| {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let mut writer = parquet::arrow::ArrowWriter::try_new(&mut *w, batch.schema(), Some(props))
            .map_err(parquet_err)?;
        writer.write(batch).map_err(parquet_err)?;
        writer.close().map_err(parquet_err)?;
        Ok(())
    })
}

/// Reads a parquet file into one record batch.
pub fn read_parquet(path: &Path) -> Result<RecordBatch> {
    let parquet_err = |message: String| Error::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(io(path))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| parquet_err(e.to_string()))?
        .build()
        .map_err(|e| parquet_err(e.to_string()))?;
    let schema: Arc<arrow_schema::Schema> = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| parquet_err(e.to_string()))?;
    arrow_select::concat::concat_batches(&schema, &batches).map_err(|e| parquet_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_json_keeps_the_first_writers_text_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("align.json");
        assert!(create_json(&path, &"first").unwrap());
        assert!(!create_json(&path, &"second").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "\"first\"\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["align.json"]);
    }
}
