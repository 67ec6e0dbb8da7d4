//! Writing standard `.npy` files.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::Context;
use npyz::WriterBuilder;

/// Writes f32 `values` of `shape` (C order) to `path`.
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> anyhow::Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let write = || -> std::io::Result<()> {
        let file = File::create(path)?;
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(BufWriter::new(file))
            .begin_nd()?;
        w.extend(values.iter().copied())?;
        w.finish()
    };
    write().with_context(|| format!("{}", path.display()))
}
