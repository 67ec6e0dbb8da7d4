//! Top-k selection over scored rows.

use std::cmp::Ordering;

/// A row and its inner product with the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub row: u64,
    pub score: f32,
}

/// Best first; equal scores by row, so results are reproducible.
pub fn by_score(a: &Scored, b: &Scored) -> Ordering {
    b.score.total_cmp(&a.score).then_with(|| a.row.cmp(&b.row))
}

/// The `k` best of `scores` (row `first + i` scored `scores[i]`), best first, skipping rows
/// for which `skip(row, score)` holds.
pub fn top_k(scores: &[f32], first: u64, k: usize, skip: impl Fn(u64, f32) -> bool) -> Vec<Scored> {
    let mut all: Vec<Scored> = scores
        .iter()
        .enumerate()
        .map(|(i, &score)| Scored {
            row: first + i as u64,
            score,
        })
        .filter(|s| !s.score.is_nan() && !skip(s.row, s.score))
        .collect();
    if k < all.len() {
        all.select_nth_unstable_by(k, by_score);
        all.truncate(k);
    }
    all.sort_unstable_by(by_score);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_first_ties_by_row_and_skips() {
        let scores = [0.1, 0.9, 0.5, 0.9, -1.0, 0.7];
        let got: Vec<u64> = top_k(&scores, 10, 3, |r, _| r == 15)
            .iter()
            .map(|s| s.row)
            .collect();
        assert_eq!(got, [11, 13, 12]);
        assert_eq!(top_k(&scores, 0, 100, |_, _| false).len(), 6);
    }
}
