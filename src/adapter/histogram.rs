//! Cumulative Prometheus histograms: interval deltas (reset-aware) and quantiles with
//! Prometheus `histogram_quantile` semantics.

/// A cumulative histogram as exposed: `(le, cumulative count)` sorted by `le`, plus sum
/// and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

/// Where a quantile landed relative to the finite buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    None,
    /// In the first bucket: the true value is only known to be at most its bound.
    Lower,
    /// In the `+Inf` bucket: reported as the last finite bound, the true value is larger.
    Upper,
}

impl Histogram {
    /// Sorts buckets by bound and makes counts monotone, as Prometheus does.
    pub fn normalize(&mut self) {
        // Exporters write buckets in order: sort only when they are not.
        if !self.buckets.is_sorted_by(|a, b| a.0 < b.0) {
            self.buckets
                .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
            self.buckets.dedup_by(|a, b| a.0 == b.0);
        }
        let mut max = 0.0f64;
        for b in &mut self.buckets {
            if b.1.is_nan() {
                b.1 = max;
            }
            max = max.max(b.1);
            b.1 = max;
        }
    }

    /// Observations in `+Inf` (or `count` when the `+Inf` bucket is missing).
    pub fn total(&self) -> f64 {
        match self.buckets.last() {
            Some(&(le, c)) if le == f64::INFINITY => c,
            _ => self.count,
        }
    }

    /// The increase from `prev` to `self`. A decrease of the count or of any bucket, or a
    /// changed bucket layout, means the server restarted: the delta is then `self` itself
    /// (what Prometheus `increase()` assumes). Returns the delta and whether a reset was
    /// seen.
    pub fn delta_since(&self, prev: &Histogram) -> (Histogram, bool) {
        let same_layout = self.buckets.len() == prev.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&prev.buckets)
                .all(|(a, b)| a.0 == b.0);
        let decreased = self.count < prev.count
            || self
                .buckets
                .iter()
                .zip(&prev.buckets)
                .any(|(a, b)| a.1 < b.1);
        if !same_layout || decreased {
            return (self.clone(), decreased);
        }
        let buckets = self
            .buckets
            .iter()
            .zip(&prev.buckets)
            .map(|(a, b)| (a.0, a.1 - b.1))
            .collect();
        (
            Histogram {
                buckets,
                sum: self.sum - prev.sum,
                count: self.count - prev.count,
            },
            false,
        )
    }

    /// Adds another histogram with the same layout (used to merge engines or intervals).
    /// Returns false, leaving `self` unchanged, when the layouts differ.
    pub fn add(&mut self, other: &Histogram) -> bool {
        if self.buckets.is_empty() && self.count == 0.0 {
            *self = other.clone();
            return true;
        }
        if self.buckets.len() != other.buckets.len()
            || self
                .buckets
                .iter()
                .zip(&other.buckets)
                .any(|(a, b)| a.0 != b.0)
        {
            return false;
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            a.1 += b.1;
        }
        self.sum += other.sum;
        self.count += other.count;
        true
    }

    /// Mean observation, when there is at least one.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0 && self.sum.is_finite()).then(|| self.sum / self.count)
    }

    /// What the buckets prove about the q-quantile: the lower edge of the bucket that holds
    /// its rank (0 for the first bucket, the last finite bound for `+Inf`). With a handful
    /// of observations this, not the interpolation, is the honest estimate: one 1.01 s
    /// TTFT in the (1, 2.5] bucket proves "more than 1 s", while `histogram_quantile`
    /// reads p95 as 2.4 s.
    pub fn quantile_floor(&self, q: f64) -> Option<f64> {
        let last = self.buckets.last()?;
        if last.0 != f64::INFINITY || !(0.0..=1.0).contains(&q) || last.1 <= 0.0 {
            return None;
        }
        let rank = q * last.1;
        let idx = self.buckets.iter().position(|b| b.1 >= rank)?;
        Some(match idx {
            0 => 0.0,
            i => self.buckets.get(i - 1)?.0,
        })
    }

    /// `histogram_quantile(q)`. None when there are no observations or no `+Inf` bucket.
    pub fn quantile(&self, q: f64) -> Option<(f64, Clamp)> {
        let last = self.buckets.last()?;
        if last.0 != f64::INFINITY || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let total = last.1;
        if total <= 0.0 || !total.is_finite() {
            return None;
        }
        let rank = q * total;
        let idx = self.buckets.iter().position(|b| b.1 >= rank)?;
        let n = self.buckets.len();
        if idx == n - 1 {
            // Above the last finite bucket: Prometheus answers with that bucket's bound.
            return match n {
                1 => None,
                _ => self.buckets.get(n - 2).map(|b| (b.0, Clamp::Upper)),
            };
        }
        let (end, end_count) = *self.buckets.get(idx)?;
        let (start, start_count) = if idx == 0 {
            if end <= 0.0 {
                return Some((end, Clamp::Lower));
            }
            (0.0, 0.0)
        } else {
            *self.buckets.get(idx - 1)?
        };
        let width = end_count - start_count;
        let v = if width > 0.0 {
            start + (end - start) * ((rank - start_count) / width)
        } else {
            end
        };
        Some((v, if idx == 0 { Clamp::Lower } else { Clamp::None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: &[(f64, f64)]) -> Histogram {
        Histogram {
            buckets: b.to_vec(),
            sum: 0.0,
            count: b.last().map(|x| x.1).unwrap_or(0.0),
        }
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 10 observations: 5 in (0,1], 5 in (1,2].
        let x = h(&[(1.0, 5.0), (2.0, 10.0), (f64::INFINITY, 10.0)]);
        assert_eq!(x.quantile(0.5), Some((1.0, Clamp::Lower)));
        assert_eq!(x.quantile(0.75), Some((1.5, Clamp::None)));
        assert_eq!(x.quantile(0.25), Some((0.5, Clamp::Lower)));
    }

    #[test]
    fn quantile_floor_is_what_the_buckets_prove() {
        // One observation of 1.01 s in vLLM's TTFT buckets (…, 1, 2.5, …).
        let one = h(&[(0.5, 0.0), (1.0, 0.0), (2.5, 1.0), (f64::INFINITY, 1.0)]);
        assert!((one.quantile(0.95).unwrap().0 - 2.425).abs() < 1e-9);
        assert_eq!(one.quantile_floor(0.95), Some(1.0));
        let inf = h(&[(1.0, 0.0), (2.0, 0.0), (f64::INFINITY, 2.0)]);
        assert_eq!(inf.quantile_floor(0.95), Some(2.0));
        assert_eq!(
            h(&[(1.0, 3.0), (f64::INFINITY, 3.0)]).quantile_floor(0.5),
            Some(0.0)
        );
    }

    #[test]
    fn quantile_in_inf_bucket_is_clamped_upper() {
        let x = h(&[(1.0, 1.0), (2.0, 2.0), (f64::INFINITY, 10.0)]);
        assert_eq!(x.quantile(0.95), Some((2.0, Clamp::Upper)));
    }

    #[test]
    fn no_inf_bucket_or_empty_gives_none() {
        assert_eq!(h(&[(1.0, 5.0)]).quantile(0.5), None);
        assert_eq!(h(&[(1.0, 0.0), (f64::INFINITY, 0.0)]).quantile(0.5), None);
    }

    #[test]
    fn delta_detects_reset() {
        let a = h(&[(1.0, 5.0), (f64::INFINITY, 8.0)]);
        let b = h(&[(1.0, 7.0), (f64::INFINITY, 12.0)]);
        let (d, reset) = b.delta_since(&a);
        assert!(!reset);
        assert_eq!(d.buckets, vec![(1.0, 2.0), (f64::INFINITY, 4.0)]);
        let c = h(&[(1.0, 1.0), (f64::INFINITY, 1.0)]);
        let (d, reset) = c.delta_since(&b);
        assert!(reset);
        assert_eq!(d.total(), 1.0);
    }
}
