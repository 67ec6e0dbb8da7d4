//! The kernels of the vision tower's fused path, on align-base's shapes (EfficientNet-B7 at
//! 289x289), with the FMA peak of this CPU measured beside them: `cargo bench -p kernels`.
//!
//! * `products/<kind>_<m>x<k>x<n>`: [`kernels::gemm::gemm`] on every distinct 1x1 product of
//!   the network (`e`: an expansion, `[H*W, C]` rows times `[C, 6C]`, bias and SiLU applied as
//!   the network does, written as panels of 16 columns ([`gemm_panels`]); `p`: a
//!   projection, bias and residual, reading `a` as panels of 16 columns ([`gemm_from_panels`])
//!   as the network does after an expansion; `r`: the projections of the blocks without
//!   expansion, which read `a` as rows ([`gemm()`])). Throughput is in floating-point
//!   operations (`2 m k n` per product). Weights are distinct per call, as in the network,
//!   where each layer's weights come from memory. The benches run inside rayon's pool, as
//!   the network's products do.
//! * `fma_peak/one_thread`: twelve independent chains of 8-lane fused multiply-adds, the most
//!   one core does with AVX2 (twice that is the ceiling of a 2-core product);
//!   `fma_peak/one_thread_16_lanes`: the same with 16-lane (AVX-512) ones, where the CPU has
//!   AVX-512F (twice the 8-lane rate where the CPU runs 512-bit operations at full width).
//! * `silu/<n>`: [`kernels::silu_inplace`] on n values (one thread).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use kernels::gemm::{Epilogue, Packed, gemm, gemm_from_panels, gemm_panels};
use test_support::values;

/// (kind, rows, inner, columns, times in the network) for align-base at 289x289.
const SHAPES: [(char, usize, usize, usize, usize); 21] = [
    ('r', 20736, 64, 32, 1),
    ('r', 20736, 32, 32, 3),
    ('e', 20736, 32, 192, 1),
    ('p', 5184, 192, 48, 1),
    ('e', 5184, 48, 288, 7),
    ('p', 5184, 288, 48, 6),
    ('p', 1296, 288, 80, 1),
    ('e', 1296, 80, 480, 7),
    ('p', 1296, 480, 80, 6),
    ('p', 324, 480, 160, 1),
    ('e', 324, 160, 960, 10),
    ('p', 324, 960, 160, 9),
    ('p', 324, 960, 224, 1),
    ('e', 324, 224, 1344, 10),
    ('p', 324, 1344, 224, 9),
    ('p', 81, 1344, 384, 1),
    ('e', 81, 384, 2304, 13),
    ('p', 81, 2304, 384, 12),
    ('p', 81, 2304, 640, 1),
    ('e', 81, 640, 3840, 3),
    ('p', 81, 3840, 640, 3),
];

/// (rows, inner, columns) of BERT-base's linear layers on 32 x 64 and 1 x 64 tokens: Q/K/V
/// side by side, the attention output, the two feed-forward layers.
const TEXT_SHAPES: [(usize, usize, usize); 8] = [
    (2048, 768, 2304),
    (2048, 768, 768),
    (2048, 768, 3072),
    (2048, 3072, 768),
    (64, 768, 2304),
    (64, 768, 768),
    (64, 768, 3072),
    (64, 3072, 768),
];

/// The text tower's products through the float32 kernel ([`gemm()`]) and, where the CPU has
/// AMX, [`kernels::gemm::amx::gemm`]; bias and residual (GELU on the first feed-forward
/// layer), distinct weights per call as in the network's twelve layers.
fn text_products(c: &mut Criterion) {
    let mut group = c.benchmark_group("text_products");
    group.sample_size(10);
    for (m, k, n) in TEXT_SHAPES {
        let packed: Vec<Packed> = (0..4)
            .map(|i| Packed::from_out_in(&values(n * k, 10 + i as u32), n, k))
            .collect();
        let a = values(m * k, 1);
        let bias = values(n, 2);
        let residual = values(m * n, 3);
        let mut out = vec![0.0f32; m * n];
        let gelu = n == 3072;
        let epilogue = Epilogue {
            bias: Some(&bias),
            residual: (!gelu).then_some(&residual[..]),
            silu: false,
            gelu,
        };
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let mut next = 0;
        group.bench_function(format!("f32_{m}x{k}x{n}"), |b| {
            b.iter(|| {
                next = (next + 1) % packed.len();
                gemm(&a, &packed[next], &mut out, epilogue);
                black_box(&out);
            })
        });
        #[cfg(target_arch = "x86_64")]
        if kernels::gemm::amx::available() {
            use kernels::gemm::amx;
            let split: Vec<amx::Split> = packed.iter().map(amx::Split::new).collect();
            let mut parts = Vec::new();
            group.bench_function(format!("amx_{m}x{k}x{n}"), |b| {
                b.iter(|| {
                    next = (next + 1) % packed.len();
                    amx::gemm(&a, &split[next], &mut out, epilogue, &mut parts);
                    black_box(&out);
                })
            });
        }
    }
    group.finish();
}

fn products(c: &mut Criterion) {
    let mut group = c.benchmark_group("products");
    group.sample_size(10);
    for (kind, m, k, n, count) in SHAPES {
        // As many distinct weights as the network has of this shape (at least 2), cycled.
        let weights: Vec<Packed> = (0..count.max(2))
            .map(|i| Packed::from_out_in(&values(n * k, 10 + i as u32), n, k))
            .collect();
        let a = values(m * k, 1);
        let bias = values(n, 2);
        let residual = values(m * n, 3);
        let mut out = vec![0.0f32; m * n.div_ceil(16) * 16];
        let epilogue = match kind {
            'e' => Epilogue {
                bias: Some(&bias),
                residual: None,
                silu: true,
                gelu: false,
            },
            _ => Epilogue {
                bias: Some(&bias),
                residual: Some(&residual),
                silu: false,
                gelu: false,
            },
        };
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let mut next = 0;
        group.bench_function(format!("{kind}_{m}x{k}x{n}"), |b| {
            b.iter(|| {
                next = (next + 1) % weights.len();
                match kind {
                    'e' => gemm_panels(&a, &weights[next], &mut out, m * 16, epilogue),
                    'p' => gemm_from_panels(&a, &weights[next], &mut out[..m * n], epilogue),
                    _ => gemm(&a, &weights[next], &mut out[..m * n], epilogue),
                }
                black_box(&out);
            })
        });
    }
    group.finish();
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_chains(iterations: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let (m, c) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-4));
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
    _mm256_cvtss_f32(sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_chains_16_lanes(iterations: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 12];
    let (m, c) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-4));
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    _mm512_reduce_add_ps(
        acc.iter()
            .fold(_mm512_setzero_ps(), |s, &a| _mm512_add_ps(s, a)),
    )
}

fn fma_peak(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx2_fma() {
        let iterations = 1 << 20;
        let mut group = c.benchmark_group("fma_peak");
        // 12 chains x 8 lanes x 2 operations per iteration
        group.throughput(Throughput::Elements((iterations * 12 * 8 * 2) as u64));
        group.bench_function("one_thread", |b| {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            b.iter(|| black_box(unsafe { fma_chains(black_box(iterations)) }))
        });
        if kernels::has_avx512f() {
            group.throughput(Throughput::Elements((iterations * 12 * 16 * 2) as u64));
            group.bench_function("one_thread_16_lanes", |b| {
                // SAFETY: the CPU has AVX-512F (checked above).
                b.iter(|| black_box(unsafe { fma_chains_16_lanes(black_box(iterations)) }))
            });
        }
        group.finish();
    }
    let _ = c;
}

fn silu(c: &mut Criterion) {
    let mut group = c.benchmark_group("silu");
    for len in [1 << 12, 1 << 16] {
        let mut y = values(len, 4);
        group.throughput(Throughput::Elements(len as u64));
        group.bench_function(format!("{len}"), |b| {
            b.iter(|| {
                // (repeated on its own output: the time does not depend on the values)
                kernels::silu_inplace(black_box(&mut y));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, products, text_products, fma_peak, silu);

/// `criterion_main!`, but with the benches inside rayon's pool, as the network calls the
/// products (`EfficientNet::run_on_host` runs each image on a worker): called from the main
/// thread, every product would first hand its tasks to the pool and wait to be woken, which
/// would understate most shapes' single-thread figures.
fn main() {
    rayon::scope(|_| benches());
    Criterion::default().configure_from_args().final_summary();
}
