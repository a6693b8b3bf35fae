//! Input drift: the reference's bins kept over a sliding window of live rows, and the
//! population stability index (PSI) per feature against the version's reference.

use std::collections::VecDeque;

pub use edgeinfer_runtime::reference::{FeatureBins, Reference};

/// Share given to an empty bin, so PSI stays finite.
const EMPTY_BIN: f64 = 1e-4;

/// PSI of live bin `counts` against `expected` shares.
pub fn psi(expected: &[f64], counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    expected
        .iter()
        .zip(counts)
        .map(|(&e, &c)| {
            let (e, a) = (e.max(EMPTY_BIN), (c as f64 / total as f64).max(EMPTY_BIN));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The last `capacity` live rows, binned like the reference.
#[derive(Debug)]
pub struct DriftWindow {
    reference: Reference,
    capacity: usize,
    rows: VecDeque<Vec<u8>>,
    counts: Vec<Vec<u64>>,
}

impl DriftWindow {
    /// An empty window over `reference`.
    pub fn new(reference: Reference, capacity: usize) -> DriftWindow {
        let counts = reference.features.iter().map(|f| vec![0; f.expected.len()]).collect();
        DriftWindow { reference, capacity: capacity.max(1), rows: VecDeque::new(), counts }
    }

    /// Adds rows (features in reference order); the oldest leave the window.
    pub fn add(&mut self, rows: &[Vec<f64>]) {
        for row in rows {
            if row.len() != self.reference.features.len() {
                continue;
            }
            let bins: Vec<u8> =
                self.reference.features.iter().zip(row).map(|(f, &v)| f.bin(v).min(255) as u8).collect();
            for (counts, &bin) in self.counts.iter_mut().zip(&bins) {
                counts[usize::from(bin)] += 1;
            }
            self.rows.push_back(bins);
            if self.rows.len() > self.capacity
                && let Some(old) = self.rows.pop_front()
            {
                for (counts, &bin) in self.counts.iter_mut().zip(&old) {
                    counts[usize::from(bin)] -= 1;
                }
            }
        }
    }

    /// Rows in the window.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row has been seen.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// PSI of every feature, in reference order.
    pub fn psi(&self) -> Vec<(String, f64)> {
        self.reference.features.iter().zip(&self.counts).map(|(f, c)| (f.name.clone(), psi(&f.expected, c))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeinfer_runtime::reference::BINS;

    fn rows(n: usize, offset: f64) -> Vec<Vec<f64>> {
        (0..n).map(|i| vec![(i % 100) as f64 + offset, (i % 7) as f64]).collect()
    }

    #[test]
    fn psi_is_small_in_distribution_and_large_on_the_shifted_feature() {
        let names = vec!["a".to_string(), "b".to_string()];
        let reference = Reference::from_rows(&names, &rows(2000, 0.0)).expect("reference");
        assert_eq!(reference.features[0].edges.len(), BINS - 1);
        let mut window = DriftWindow::new(reference.clone(), 500);
        window.add(&rows(500, 0.0));
        assert!(window.psi().iter().all(|(_, p)| *p < 0.1), "{:?}", window.psi());
        window.add(&rows(500, 40.0));
        let psi = window.psi();
        assert!(psi[0].1 > 0.25, "{psi:?}");
        assert!(psi[1].1 < 0.1, "{psi:?}");
        assert_eq!(window.len(), 500);
    }

    #[test]
    fn a_constant_feature_drifts_when_it_moves() {
        let names = vec!["c".to_string()];
        let reference = Reference::from_rows(&names, &vec![vec![0.0]; 50]).expect("reference");
        assert_eq!(reference.features[0].expected, vec![1.0, 0.0]);
        let mut window = DriftWindow::new(reference, 10);
        window.add(&vec![vec![0.0]; 10]);
        assert!(window.psi()[0].1 < 1e-9);
        window.add(&vec![vec![1.0]; 10]);
        assert!(window.psi()[0].1 > 0.25);
    }
}
