//! Float32 kernels in host memory for burn's flex backend, laid out by operation and
//! instruction set: each operation's module dispatches at run time ([`cpu`]) to its `avx512`,
//! `avx2` or `portable` code, which compute the same values (bit for bit between the SIMD
//! ones, unless an operation says otherwise). No other crate of the workspace uses
//! `std::arch`.
//!
//! * [`activation`]: SiLU and exact GELU in place over slices, and on registers for the other
//!   kernels. burn-flex 0.22 evaluates them one element at a time with libm on one thread;
//!   flex tensors live in host memory and `into_data` / `from_data` hand the buffer over
//!   without copying ([`map_in_place`]), so on flex they are computed here instead.
//! * [`gemm`]: matrix products against weights packed once, with bias, residual add, SiLU or
//!   GELU applied in registers (the vision tower's 1x1 convolutions, the text tower's linear
//!   layers and attention products); on CPUs with AMX-BF16 also float32-accurate products on
//!   AMX tiles ([`gemm::amx`], the text tower's products of 128 rows or more).
//! * [`norm`]: layer normalisation of rows (the text tower's).
//! * [`depthwise`]: depthwise convolutions + bias + SiLU with per-channel sums (the vision
//!   tower's depthwise layers and squeeze-excite pooling).

use burn::tensor::{DType, Device, Tensor};
use rayon::prelude::*;

pub mod activation;
pub mod cpu;
pub mod depthwise;
pub mod gemm;
pub mod norm;

pub use activation::{gelu_inplace, silu_inplace, softmax_rows};
pub use cpu::{has_avx2_fma, has_avx512f};

/// Whether `device` runs the fused CPU path: it keeps its tensors in host memory with
/// zero-copy `into_data` (flex), so the kernels here can work on them in place. Model code
/// asks this, and only this, about the device.
pub fn is_fused_device(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        *device == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// Applies `f` in place to the values of a float32 tensor on a fused device (see
/// [`is_fused_device`]), in parallel chunks; a tensor of another float type goes through
/// `fallback` (burn's own op).
pub fn map_in_place<const D: usize>(
    x: Tensor<D>,
    f: fn(&mut [f32]),
    fallback: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    if x.dtype() != DType::F32 {
        return fallback(x);
    }
    let device = x.device();
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) => {
            values.par_chunks_mut(1 << 15).for_each(f);
            Tensor::from_data(data, &device)
        }
        Err(_) => fallback(Tensor::from_data(data, &device)),
    }
}
