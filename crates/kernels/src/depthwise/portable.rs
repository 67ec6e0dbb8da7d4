//! The depthwise kernel in portable code (before the activation).

use super::{Depthwise, Layout, PANEL};

impl Depthwise {
    /// Output row `oy` before the activation, portable code.
    pub(super) fn row_generic(
        &self,
        row: &mut [f32],
        oy: usize,
        input: &[f32],
        layout: Layout,
        height: usize,
        width: usize,
    ) {
        let c = self.channels;
        let cp = self.padded();
        let (k, s) = (self.kernel, self.stride);
        let [pt, pl, ..] = self.padding;
        let wo = row.len() / c;
        row.chunks_exact_mut(c)
            .for_each(|px| px.copy_from_slice(&self.bias[..c]));
        for ky in 0..k {
            let Some(iy) = (oy * s + ky).checked_sub(pt).filter(|&iy| iy < height) else {
                continue;
            };
            for kx in 0..k {
                let taps = &self.weight[(ky * k + kx) * cp..][..c];
                // the output columns whose input column ox * s + kx - pl is inside
                let first = pl.saturating_sub(kx).div_ceil(s);
                let end = (width + pl).saturating_sub(kx).div_ceil(s).min(wo);
                for ox in first..end {
                    let ix = ox * s + kx - pl;
                    let acc = &mut row[ox * c..(ox + 1) * c];
                    // 16 channels at a time: contiguous in both layouts
                    for (j, (acc, taps)) in
                        acc.chunks_mut(PANEL).zip(taps.chunks(PANEL)).enumerate()
                    {
                        let at = match layout {
                            Layout::Nhwc => (iy * width + ix) * c + j * PANEL,
                            Layout::Panels { rows } => {
                                ((j * rows + iy % rows) * width + ix) * PANEL
                            }
                        };
                        let x = &input[at..at + acc.len()];
                        for ((a, &x), &w) in acc.iter_mut().zip(x).zip(taps) {
                            *a += x * w;
                        }
                    }
                }
            }
        }
    }
}
