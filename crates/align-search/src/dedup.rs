//! clip-back's `deduplicate`: among the results, those whose embeddings are near-identical to a
//! better-ranked result's (inner product >= 0.94, transitively) are dropped.

/// clip-back's threshold on the inner product of two L2-normalised embeddings.
pub const THRESHOLD: f32 = 0.94;

/// Which of `vectors` (best first) to keep: the first of every group of near-duplicates.
pub fn keep(vectors: &[Vec<f32>]) -> Vec<bool> {
    let n = vectors.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..n {
        for j in i + 1..n {
            if crate::vectors::dot(&vectors[i], &vectors[j]) >= THRESHOLD {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                // The group is represented by its best-ranked member.
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    (0..n).map(|i| root(&mut parent, i) == i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn keeps_the_first_of_each_group_transitively() {
        // 0 ~ 2 directly; 3 ~ 2 but not ~ 0 directly (a chain); 1 is apart.
        let a = unit(&[1.0, 0.0, 0.0]);
        let b = unit(&[0.0, 1.0, 0.0]);
        let c = unit(&[1.0, 0.3, 0.0]); // a.c = 0.958
        let d = unit(&[1.0, 0.62, 0.0]); // c.d = 0.975, a.d = 0.85
        assert!(crate::vectors::dot(&a, &d) < THRESHOLD);
        assert_eq!(keep(&[a, b, c, d]), [true, true, false, false]);
    }
}
