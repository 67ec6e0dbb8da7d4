//! Which instruction sets this CPU has: the one place the kernels' runtime dispatch asks.
//!
//! `ALIGN_KERNELS=avx512` (or `avx2`, or `portable`; `amx`, the default, caps nothing;
//! another value is ignored with a warning on stderr) caps what the kernels use below what the
//! CPU has: to measure or test the AVX-512, AVX2 or portable kernels on a machine with more.
//! Results are the same bit for bit between the AVX-512 and AVX2 kernels either way; the AMX
//! products ([`crate::gemm::amx`]) differ from them by float32 rounding.

#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

/// The highest kernel set allowed by `ALIGN_KERNELS` (read once).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cap {
    Portable,
    Avx2,
    Avx512,
    Amx,
}

#[cfg(target_arch = "x86_64")]
fn cap() -> Cap {
    static CAP: OnceLock<Cap> = OnceLock::new();
    *CAP.get_or_init(|| {
        let (cap, warning) = parse_cap(std::env::var("ALIGN_KERNELS").ok().as_deref());
        if let Some(warning) = warning {
            eprintln!("{warning}");
        }
        cap
    })
}

/// The cap an `ALIGN_KERNELS` value asks for, and the warning for a value it does not know.
#[cfg(target_arch = "x86_64")]
fn parse_cap(value: Option<&str>) -> (Cap, Option<String>) {
    match value {
        Some("portable") => (Cap::Portable, None),
        Some("avx2") => (Cap::Avx2, None),
        Some("avx512") => (Cap::Avx512, None),
        Some("amx") | None => (Cap::Amx, None),
        Some(other) => (
            Cap::Amx,
            Some(format!(
                "ALIGN_KERNELS={other}: not amx, avx512, avx2 or portable; ignored"
            )),
        ),
    }
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

/// Whether `ALIGN_KERNELS` leaves the AMX products on (where the CPU has them:
/// [`crate::gemm::amx::available`]).
#[cfg(target_arch = "x86_64")]
pub(crate) fn allows_amx() -> bool {
    cap() >= Cap::Amx
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn align_kernels_values() {
        assert_eq!(parse_cap(None), (Cap::Amx, None));
        assert_eq!(parse_cap(Some("amx")), (Cap::Amx, None));
        assert_eq!(parse_cap(Some("avx512")), (Cap::Avx512, None));
        assert_eq!(parse_cap(Some("avx2")), (Cap::Avx2, None));
        assert_eq!(parse_cap(Some("portable")), (Cap::Portable, None));
        let (cap, warning) = parse_cap(Some("avx-2"));
        assert_eq!(cap, Cap::Amx);
        assert!(
            warning
                .unwrap()
                .starts_with("ALIGN_KERNELS=avx-2: not amx, avx512")
        );
    }
}
