//! Which instruction sets this CPU has: the one place the kernels' runtime dispatch asks.

/// Whether this CPU has AVX2 and FMA, which the `avx2` kernels of every operation
/// require.
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU also has AVX-512F, which the `avx512` kernels require (with AVX2 and
/// FMA).
pub fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    return has_avx2_fma() && std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}
