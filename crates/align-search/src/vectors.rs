//! The embedding files of a partition (`[rows, dim]` f16 or f32 `.npy`), memory-mapped: opening
//! a collection reads only their headers.

use std::fs::File;
use std::path::{Path, PathBuf};

use align_collection::io;
use half::f16;
use half::slice::HalfFloatSliceExt;
use memmap2::Mmap;

use crate::error::{Error, Result};

/// Rows converted to f32 at a time by [`Vectors::scores`].
const CHUNK_ROWS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    F16,
    F32,
}

/// One memory-mapped `.npy` matrix.
#[derive(Debug)]
pub struct Vectors {
    path: PathBuf,
    map: Mmap,
    /// Byte offset of the data (the header's length).
    offset: usize,
    rows: usize,
    dim: usize,
    element: Element,
}

impl Vectors {
    pub fn open(path: &Path) -> Result<Self> {
        let corrupt = |message: String| Error::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(io(path))?;
        // SAFETY: the collection's files are written once under a temporary name and renamed
        // into place, never modified in place; a file replaced or removed by a later run stays
        // mapped as it was.
        let map = unsafe { Mmap::map(&file) }.map_err(io(path))?;
        let npy = npyz::NpyFile::new(&map[..]).map_err(|e| corrupt(e.to_string()))?;
        let [rows, dim] = npy.shape()[..] else {
            return Err(corrupt(format!(
                "expected a 2-d array, got shape {:?}",
                npy.shape()
            )));
        };
        if npy.order() != npyz::Order::C {
            return Err(corrupt("Fortran-ordered array".into()));
        }
        let descr = match npy.dtype() {
            npyz::DType::Plain(t) => t.to_string(),
            other => other.descr(),
        };
        let element = match descr.as_str() {
            "<f2" => Element::F16,
            "<f4" => Element::F32,
            other => {
                return Err(corrupt(format!(
                    "element type {other}, expected <f2 or <f4"
                )));
            }
        };
        let (rows, dim) = (rows as usize, dim as usize);
        let size = if element == Element::F16 { 2 } else { 4 };
        let bytes = rows * dim * size;
        // The data ends the file: its start is the header's length.
        let offset = map
            .len()
            .checked_sub(bytes)
            .ok_or_else(|| corrupt(format!("shorter than its [{rows}, {dim}] shape")))?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            offset,
            rows,
            dim,
            element,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn data(&self) -> &[u8] {
        &self.map[self.offset..]
    }

    /// Rows `start..start + out.len() / dim` as f32.
    pub fn read(&self, start: usize, out: &mut [f32]) {
        let n = out.len();
        let begin = start * self.dim;
        match self.element {
            Element::F16 => {
                let bytes = &self.data()[begin * 2..(begin + n) * 2];
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Element::F32 => {
                let bytes = &self.data()[begin * 4..(begin + n) * 4];
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
    }

    /// One row as f32.
    pub fn row(&self, r: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.dim];
        self.read(r, &mut out);
        out
    }

    /// The inner product of every row with `query`, appended to `out`.
    pub fn scores(&self, query: &[f32], out: &mut Vec<f32>) {
        let dim = self.dim;
        out.reserve(self.rows);
        match self.element {
            Element::F16 => {
                // Little-endian f16 as stored; `half` converts slices with F16C where present.
                // SAFETY: every bit pattern is a valid f16.
                let (prefix, halves, _) = unsafe { self.data().align_to::<f16>() };
                let mut buf = vec![0.0f32; CHUNK_ROWS * dim];
                if prefix.is_empty() && cfg!(target_endian = "little") {
                    let halves = &halves[..self.rows * dim];
                    for chunk in halves.chunks(CHUNK_ROWS * dim) {
                        let buf = &mut buf[..chunk.len()];
                        chunk.convert_to_f32_slice(buf);
                        out.extend(buf.chunks_exact(dim).map(|row| dot(row, query)));
                    }
                } else {
                    for start in (0..self.rows).step_by(CHUNK_ROWS) {
                        let n = CHUNK_ROWS.min(self.rows - start);
                        let buf = &mut buf[..n * dim];
                        self.read(start, buf);
                        out.extend(buf.chunks_exact(dim).map(|row| dot(row, query)));
                    }
                }
            }
            Element::F32 => {
                // SAFETY: every bit pattern is a valid f32.
                let (prefix, floats, _) = unsafe { self.data().align_to::<f32>() };
                if prefix.is_empty() && cfg!(target_endian = "little") {
                    let floats = &floats[..self.rows * dim];
                    out.extend(floats.chunks_exact(dim).map(|row| dot(row, query)));
                } else {
                    let mut row = vec![0.0f32; dim];
                    for r in 0..self.rows {
                        self.read(r, &mut row);
                        out.push(dot(&row, query));
                    }
                }
            }
        }
    }
}

/// Inner product in eight independent lanes (vectorised by the compiler).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}
