//! Layer normalisation of rows in host memory: `(x - mean) / sqrt(var + eps) * gamma + beta`
//! per row, the variance the biased one over the row (PyTorch's `LayerNorm`), both by two
//! passes over the row. Eight lanes at a time with AVX2+FMA ([`avx2`]), else portable
//! scalar code.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod portable;

use rayon::prelude::*;

/// Rows a task of the pool normalises at the least.
const ROWS_PER_TASK: usize = 16;

/// Normalises each row of `n = gamma.len()` values of `rows` in place, rows in parallel.
pub fn layer_norm_rows(rows: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = gamma.len();
    assert_eq!(beta.len(), n, "gamma and beta differ in length");
    assert!(n > 0 && rows.len().is_multiple_of(n), "rows are not [m, n]");
    let norm = |row: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::has_avx2_fma() {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { avx2::layer_norm(row, gamma, beta, eps) };
            return;
        }
        portable::layer_norm(row, gamma, beta, eps);
    };
    rows.par_chunks_mut(n * ROWS_PER_TASK)
        .for_each(|rows| rows.chunks_exact_mut(n).for_each(norm));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Float64 layer norm of `row`.
    fn reference(row: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f64> {
        let n = row.len() as f64;
        let mean = row.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        row.iter()
            .zip(gamma.iter().zip(beta))
            .map(|(&x, (&g, &b))| (x as f64 - mean) * rstd * g as f64 + b as f64)
            .collect()
    }

    #[test]
    fn rows_match_float64_on_every_path() {
        for n in [1usize, 5, 8, 37, 384, 768] {
            let m = 40;
            let rows: Vec<f32> = (0..m * n)
                .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 5.0 + (i / n) as f32)
                .collect();
            let gamma: Vec<f32> = (0..n).map(|j| 0.5 + (j % 7) as f32 * 0.1).collect();
            let beta: Vec<f32> = (0..n).map(|j| (j % 3) as f32 - 1.0).collect();
            let eps = 1e-12;
            let mut dispatched = rows.clone();
            layer_norm_rows(&mut dispatched, &gamma, &beta, eps);
            let mut portable = rows.clone();
            portable
                .chunks_exact_mut(n)
                .for_each(|r| portable::layer_norm(r, &gamma, &beta, eps));
            for (r, row) in rows.chunks_exact(n).enumerate() {
                let want = reference(row, &gamma, &beta, eps);
                for (j, &w) in want.iter().enumerate() {
                    for got in [dispatched[r * n + j], portable[r * n + j]] {
                        assert!(
                            (got as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                            "n {n} row {r} col {j}: {got} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
