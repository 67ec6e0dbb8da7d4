//! burn's ops with two of them computed in place on flex tensors (the engine
//! `BurnOpsInPlace`, when the fused path is not in use): SiLU from [`kernels`] and the
//! squeeze-excite channel scaling (burn-flex's broadcasting multiply runs on one thread).

use burn::tensor::Tensor;
use rayon::prelude::*;

use kernels::silu_inplace;

/// `x * sigmoid(x)` of a tensor on a fused device (see [`kernels::is_fused_device`]).
pub(crate) fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    kernels::map_in_place(x, silu_inplace, burn::tensor::activation::silu)
}

/// `x * scale` for `x` `[B, C, H, W]` and `scale` `[B, C, 1, 1]` (squeeze-excite) on a fused
/// device: in place, one (b, c) plane per task. burn-flex's broadcasting multiply runs on one
/// thread.
pub(crate) fn scale_channels(x: Tensor<4>, scale: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let [_, _, h, w] = x.dims();
    let mut data = x.into_data();
    let scale = scale.into_data();
    if let (Ok(values), Ok(factors)) = (data.as_mut_slice::<f32>(), scale.as_slice::<f32>())
        && h * w > 0
    {
        values
            .par_chunks_mut(h * w)
            .zip(factors.par_iter())
            .for_each(|(plane, &s)| plane.iter_mut().for_each(|v| *v *= s));
        return Tensor::from_data(data, &device);
    }
    Tensor::from_data(data, &device) * Tensor::from_data(scale, &device)
}
