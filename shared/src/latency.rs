//! Latency percentiles from the log rollups' histograms (migration 0008): bucket `b` holds the
//! times in (2^((b-1)/8), 2^(b/8)] ms, so a percentile read from them is within ±4.5 % of the
//! exact one, whatever the number of rows behind it.

use std::collections::BTreeMap;

/// Buckets per doubling of the latency.
const PER_DOUBLING: f64 = 8.0;

/// Counts per latency bucket, merged from any number of rollup rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: BTreeMap<i16, i64>,
}

impl Histogram {
    pub fn add(&mut self, bucket: i16, n: i64) {
        *self.counts.entry(bucket).or_default() += n;
    }

    pub fn count(&self) -> i64 {
        self.counts.values().sum()
    }

    /// The `q` quantile (0..=1) in ms, interpolated geometrically inside its bucket; `None` when
    /// the histogram is empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0i64;
        for (&bucket, &n) in &self.counts {
            if (below + n) as f64 >= rank {
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                let lower = upper_bound(bucket - 1);
                return Some(lower * (upper_bound(bucket) / lower).powf(within));
            }
            below += n;
        }
        self.counts.keys().next_back().map(|&b| upper_bound(b))
    }
}

/// The largest time (ms) bucket `b` holds.
fn upper_bound(bucket: i16) -> f64 {
    (f64::from(bucket) / PER_DOUBLING).exp2()
}

/// The bucket a time falls in: the Rust twin of SQL's `xcam_latency_bucket`.
pub fn bucket_of(ms: f64) -> i16 {
    (PER_DOUBLING * ms.max(0.01).log2()).ceil().min(200.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_the_bucket_width_of_the_exact_ones() {
        // A skewed spread of 10 000 times from 40 ms to 1.6 s.
        let times: Vec<f64> = (0..10_000)
            .map(|i| 40.0 * (f64::from(i) / 10_000.0 * 5.3).exp2())
            .collect();
        let mut h = Histogram::default();
        for &t in &times {
            h.add(bucket_of(t), 1);
        }
        assert_eq!(h.count(), 10_000);
        for q in [0.5, 0.95, 0.99] {
            let exact = times[(q * times.len() as f64) as usize - 1];
            let estimate = h.quantile(q).unwrap();
            assert!(
                (estimate / exact - 1.0).abs() < 0.045,
                "q{q}: {estimate} vs {exact}"
            );
        }
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn buckets_hold_what_their_bounds_say() {
        for ms in [0.5, 1.0, 3.7, 60.0, 1300.0, 59_999.0] {
            let b = bucket_of(ms);
            assert!(upper_bound(b - 1) < ms * 1.000_001 && ms <= upper_bound(b) * 1.000_001);
        }
    }
}
