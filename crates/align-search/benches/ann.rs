//! HNSW against exact search on generated collections: recall@10 and one-thread query latency
//! (p50/p99, search only) for several `ef`, plus the index's build rate.
//!
//! `cargo xtask bench search [--rows 100000,1000000] [--queries 300] [--ef 16,32,64,128]`
//! (= `cargo bench -p align-search --bench ann -- ...`). Vectors: 640 values, clustered as
//! embeddings are (`test_support::clustered`), stored as f16 in partitions of 100,000 rows;
//! the queries are drawn from the same clusters and are not in the collection. `--keep DIR`
//! leaves the last collection in DIR with its queries (`DIR/queries.npy`), for other
//! libraries to be measured on the same vectors (xtask/bench/ann_faiss.py).

use std::time::Instant;

use align_search::{Collection, Method, Modality, OpenOptions, ann};

const DIM: usize = 640;
const PARTITION: usize = 100_000;

fn list(args: &[String], flag: &str, default: &str) -> Vec<usize> {
    let value = args
        .iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map_or(default, String::as_str);
    value
        .split(',')
        .map(|v| {
            v.trim()
                .replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{flag} {value}"))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let sizes = list(&args, "--rows", "100000,1000000");
    let queries = list(&args, "--queries", "300")[0];
    let efs = list(&args, "--ef", "16,32,64,128");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Relative paths are the workspace's (cargo runs benches in the package's folder).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target");
    let keep = args
        .iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1))
        .map(|k| root.join(k));
    println!("| rows | method | ef | recall@10 | p50 ms | p99 ms |");
    println!("|---:|---|---:|---:|---:|---:|");
    for &rows in &sizes {
        let dir = tempfile::tempdir_in(&target).expect("a temporary folder in target/");
        let all = test_support::clustered(rows + queries, DIM, 42);
        let (data, qs) = all.split_at(rows * DIM);
        let parts: Vec<Vec<f32>> = data.chunks(PARTITION * DIM).map(<[f32]>::to_vec).collect();
        test_support::write_collection(dir.path(), DIM, &parts);
        drop(parts);
        if keep.is_some() {
            let queries = dir.path().join("queries.npy");
            align_collection::layout::write_npy(&queries, qs, DIM, align_collection::EmbDtype::F32)
                .expect("writing the queries");
        }
        let start = Instant::now();
        ann::update(dir.path(), threads).expect("building the HNSW index");
        let build = start.elapsed().as_secs_f64();
        eprintln!(
            "{rows} rows: HNSW built in {build:.1} s on {threads} threads ({:.0} vectors/s)",
            rows as f64 / build
        );

        let collection = Collection::open(dir.path(), OpenOptions::default()).expect("open");
        let mut truth = Vec::new();
        let mut exact_ms = Vec::new();
        for q in qs.chunks_exact(DIM) {
            let t = Instant::now();
            let hits = collection
                .search(q, 10, Modality::Image, Method::Exact)
                .unwrap();
            exact_ms.push(t.elapsed().as_secs_f64() * 1e3);
            truth.push(hits.iter().map(|h| h.id).collect::<Vec<_>>());
        }
        exact_ms.sort_by(f64::total_cmp);
        println!(
            "| {rows} | exact | - | 1.000 | {:.2} | {:.2} |",
            percentile(&exact_ms, 0.5),
            percentile(&exact_ms, 0.99)
        );
        for &ef in &efs {
            let collection =
                Collection::open(dir.path(), OpenOptions { expansion: ef }).expect("open");
            // One pass to page the index in, then the measured pass.
            for q in qs.chunks_exact(DIM).take(50) {
                collection
                    .search(q, 10, Modality::Image, Method::Ann)
                    .unwrap();
            }
            let (mut found, mut ms) = (0usize, Vec::new());
            for (q, want) in qs.chunks_exact(DIM).zip(&truth) {
                let t = Instant::now();
                let hits = collection
                    .search(q, 10, Modality::Image, Method::Ann)
                    .unwrap();
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                found += hits.iter().filter(|h| want.contains(&h.id)).count();
            }
            ms.sort_by(f64::total_cmp);
            println!(
                "| {rows} | HNSW | {ef} | {:.3} | {:.3} | {:.3} |",
                found as f64 / (10 * truth.len()) as f64,
                percentile(&ms, 0.5),
                percentile(&ms, 0.99)
            );
        }
        if let Some(keep) = &keep {
            let _ = std::fs::remove_dir_all(keep);
            std::fs::rename(dir.keep(), keep).expect("moving the collection to --keep");
        }
    }
}
