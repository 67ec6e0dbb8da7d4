//! CLIP_benchmark's metrics (`clip_benchmark/metrics/zeroshot_classification.py` and
//! `zeroshot_retrieval.py`), on row-major score matrices.

/// Indices of the `k` largest values of `row`, largest first (ties: the lower index first).
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let order = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..row.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k, order);
        idx.truncate(k);
    }
    idx.sort_by(order);
    idx
}

/// Top-k accuracy: the share of samples whose target is among the `k` highest logits
/// (`accuracy(logits, target, topk=(k,))`). `logits` is `[targets.len(), classes]`.
pub fn top_k_accuracy(logits: &[f32], classes: usize, targets: &[usize], k: usize) -> f64 {
    if targets.is_empty() {
        return f64::NAN;
    }
    let hits = logits
        .chunks_exact(classes)
        .zip(targets)
        .filter(|(row, t)| top_k(row, k).contains(t))
        .count();
    hits as f64 / targets.len() as f64
}

/// Mean per-class recall (scikit-learn's `balanced_accuracy_score(target, pred)`): the recall
/// of each class that has samples, averaged over those classes.
pub fn mean_per_class_recall(targets: &[usize], preds: &[usize], classes: usize) -> f64 {
    let mut total = vec![0usize; classes];
    let mut correct = vec![0usize; classes];
    for (&t, &p) in targets.iter().zip(preds) {
        total[t] += 1;
        correct[t] += usize::from(t == p);
    }
    let recalls: Vec<f64> = total
        .iter()
        .zip(&correct)
        .filter(|(n, _)| **n > 0)
        .map(|(&n, &c)| c as f64 / n as f64)
        .collect();
    if recalls.is_empty() {
        return f64::NAN;
    }
    recalls.iter().sum::<f64>() / recalls.len() as f64
}

/// Retrieval recall@k as CLIP-like papers and CLIP_benchmark report it: the share of queries
/// (rows of `scores`, `[queries, items]`) with at least one of their positives among their `k`
/// best-scored items. `positives[q]` lists query q's positive items.
pub fn recall_at_k(scores: &[f32], items: usize, positives: &[Vec<usize>], k: usize) -> f64 {
    if positives.is_empty() {
        return f64::NAN;
    }
    let hits = scores
        .chunks_exact(items)
        .zip(positives)
        .filter(|(row, pos)| top_k(row, k).iter().any(|i| pos.contains(i)))
        .count();
    hits as f64 / positives.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracies_count_targets_in_the_top_k() {
        // 3 samples, 4 classes.
        let logits = [
            0.9, 0.1, 0.3, 0.2, // top: 0, 2, 3, 1
            0.1, 0.2, 0.3, 0.4, // top: 3, 2, 1, 0
            0.5, 0.6, 0.1, 0.0, // top: 1, 0, 2, 3
        ];
        let targets = [0, 2, 2];
        assert_eq!(top_k_accuracy(&logits, 4, &targets, 1), 1.0 / 3.0);
        assert_eq!(top_k_accuracy(&logits, 4, &targets, 2), 2.0 / 3.0);
        assert_eq!(top_k_accuracy(&logits, 4, &targets, 3), 1.0);
        // Class 0: 1/1, class 2: 0/2 -> mean 0.5 (classes without samples do not count).
        assert_eq!(mean_per_class_recall(&targets, &[0, 3, 1], 4), 0.5);
    }

    #[test]
    fn recall_needs_one_positive_in_the_top_k() {
        // 2 queries, 3 items.
        let scores = [0.1, 0.9, 0.5, 0.7, 0.2, 0.3];
        let positives = vec![vec![2], vec![1, 2]];
        assert_eq!(recall_at_k(&scores, 3, &positives, 1), 0.0);
        assert_eq!(recall_at_k(&scores, 3, &positives, 2), 1.0);
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 3), vec![1, 2, 3]);
    }
}
