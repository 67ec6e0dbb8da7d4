//! Search over generated collections, checked against exact search computed here.

use align_search::{Collection, Method, Modality, OpenOptions, ann};
use half::f16;
use test_support::{clustered, write_collection};

const DIM: usize = 640;

/// What the `.npy` holds: the values rounded to f16.
fn stored(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// Exact top-k ids and similarities over `rows` (row-major), computed independently.
fn brute_force(rows: &[f32], query: &[f32], k: usize) -> Vec<(u64, f32)> {
    let mut scored: Vec<(u64, f32)> = rows
        .chunks_exact(DIM)
        .enumerate()
        .map(|(i, r)| {
            let s: f64 = r
                .iter()
                .zip(query)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            (i as u64, s as f32)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

#[test]
fn exact_search_equals_brute_force_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let all = clustered(3_003, DIM, 3);
    // The last three rows are queries from the same clusters, not in the collection.
    let (all, queries) = all.split_at(3_000 * DIM);
    let parts = vec![all[..1_000 * DIM].to_vec(), all[1_000 * DIM..].to_vec()];
    write_collection(dir.path(), DIM, &parts);
    let collection = Collection::open(dir.path(), OpenOptions::default()).unwrap();
    assert_eq!(collection.rows(), 3_000);
    let rows = stored(all);
    for q in queries.chunks_exact(DIM) {
        let got = collection
            .search(q, 10, Modality::Image, Method::Exact)
            .unwrap();
        let want = brute_force(&rows, q, 10);
        assert_eq!(got.len(), 10);
        for (g, (id, sim)) in got.iter().zip(&want) {
            assert_eq!(g.id, *id);
            assert!(
                (g.similarity - sim).abs() < 1e-5,
                "{} vs {sim}",
                g.similarity
            );
        }
    }
    // A stored row finds itself first; its vector reads back as stored.
    let v = collection.vector(1_234, Modality::Image).unwrap();
    assert_eq!(v, rows[1_234 * DIM..1_235 * DIM]);
    let hits = collection
        .search(&v, 1, Modality::Image, Method::Exact)
        .unwrap();
    assert_eq!(hits[0].id, 1_234);
    // Bad queries are errors, not panics.
    assert!(
        collection
            .search(&v[..10], 1, Modality::Image, Method::Exact)
            .is_err()
    );
    assert!(
        collection
            .search(&v, 1, Modality::Text, Method::Exact)
            .is_err()
    );
    assert!(collection.vector(3_000, Modality::Image).is_err());
    assert!(
        collection
            .search(&v, 1, Modality::Image, Method::Ann)
            .is_err()
    );
}

#[test]
fn hnsw_recall_at_10_on_20000_clustered_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let all = clustered(20_200, DIM, 5);
    let (all, queries) = all.split_at(20_000 * DIM);
    let parts: Vec<Vec<f32>> = all.chunks(5_000 * DIM).map(<[f32]>::to_vec).collect();
    write_collection(dir.path(), DIM, &parts);
    let done = ann::update(dir.path(), 2).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].1.added, done[0].1.size), (20_000, 20_000));

    let collection = Collection::open(dir.path(), OpenOptions::default()).unwrap();
    assert!(collection.has_ann(Modality::Image));
    let (mut found, mut total) = (0, 0);
    for q in queries.chunks_exact(DIM) {
        let exact = collection
            .search(q, 10, Modality::Image, Method::Exact)
            .unwrap();
        let approx = collection
            .search(q, 10, Modality::Image, Method::Ann)
            .unwrap();
        found += approx
            .iter()
            .filter(|h| exact.iter().any(|e| e.id == h.id))
            .count();
        total += exact.len();
        // Similarities of HNSW hits are the exact ones of those rows.
        for h in &approx {
            let v = collection.vector(h.id, Modality::Image).unwrap();
            let s: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
            assert!((h.similarity - s).abs() < 1e-5);
        }
    }
    let recall = found as f64 / total as f64;
    assert!(recall >= 0.95, "recall@10 {recall}");
}

#[test]
fn the_index_follows_partitions_added_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let all = clustered(600, DIM, 9);
    let part = |i: usize| all[i * 200 * DIM..(i + 1) * 200 * DIM].to_vec();
    write_collection(dir.path(), DIM, &[part(0), part(1)]);
    let first = ann::update(dir.path(), 2).unwrap()[0].1.clone();
    assert_eq!((first.added, first.removed, first.size), (400, 0, 400));

    // A run adds partition 2 and drops partition 0 (as a rewrite does).
    write_collection(dir.path(), DIM, &[part(0), part(1), part(2)]);
    let layout = align_collection::Layout::new(dir.path());
    for f in layout
        .data_files("000000")
        .iter()
        .chain([&layout.manifest("000000")])
    {
        let _ = std::fs::remove_file(f);
    }
    let second = ann::update(dir.path(), 2).unwrap()[0].1.clone();
    assert_eq!((second.added, second.removed, second.size), (200, 200, 400));
    // Nothing changed: nothing to do.
    let third = ann::update(dir.path(), 2).unwrap()[0].1.clone();
    assert_eq!((third.added, third.removed), (0, 0));
    let files: Vec<String> = std::fs::read_dir(ann::dir(&layout))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".usearch"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");

    // Ids are positions among the committed rows (partitions 1 and 2); the HNSW index and
    // the scan agree.
    let collection = Collection::open(dir.path(), OpenOptions::default()).unwrap();
    assert_eq!(collection.rows(), 400);
    let rows = stored(&all[200 * DIM..]);
    for id in [0u64, 199, 200, 399] {
        let v = rows[id as usize * DIM..][..DIM].to_vec();
        for method in [Method::Exact, Method::Ann] {
            let hits = collection.search(&v, 3, Modality::Image, method).unwrap();
            assert_eq!(hits[0].id, id, "{method:?}");
        }
    }

    // A partition committed after the index was built is scanned until the next update.
    write_collection(dir.path(), DIM, &[part(0)]);
    let collection = Collection::open(dir.path(), OpenOptions::default()).unwrap();
    assert_eq!(collection.rows(), 600);
    let v = stored(&all[5 * DIM..6 * DIM]);
    let hits = collection
        .search(&v, 1, Modality::Image, Method::Ann)
        .unwrap();
    assert_eq!(hits[0].id, 5);
}
