//! Which instruction sets this CPU has: the one place the kernels' runtime dispatch asks.
//!
//! `ALIGN_KERNELS=avx2` (or `portable`) caps what the kernels use below what the CPU has: to
//! measure or test the AVX2 (or portable) kernels on an AVX-512 machine. Results are the same
//! bit for bit between the SIMD kernels either way.

#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

/// The highest kernel set allowed by `ALIGN_KERNELS` (read once).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cap {
    Portable,
    Avx2,
    Avx512,
}

#[cfg(target_arch = "x86_64")]
fn cap() -> Cap {
    static CAP: OnceLock<Cap> = OnceLock::new();
    *CAP.get_or_init(|| match std::env::var("ALIGN_KERNELS").as_deref() {
        Ok("portable") => Cap::Portable,
        Ok("avx2") => Cap::Avx2,
        _ => Cap::Avx512,
    })
}

/// Whether this CPU has AVX2 and FMA, which the `avx2` kernels of every operation
/// require.
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return cap() >= Cap::Avx2
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU also has AVX-512F, which the `avx512` kernels require (with AVX2 and
/// FMA).
pub fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    return cap() >= Cap::Avx512
        && has_avx2_fma()
        && std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}
