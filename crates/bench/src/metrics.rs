//! Reading Prometheus text: single values, sums over label sets, and histograms (whose
//! bucket counts are subtracted between two scrapes to get one window's distribution).

/// The sum of every sample of metric `name` (all label sets); `None` if there is none.
pub fn value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = match rest.chars().next() {
            Some('{') => rest.split_once('}').map_or("", |(_, after)| after),
            Some(' ') => rest,
            _ => continue,
        };
        if let Some(sample) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += sample;
        }
    }
    found
}

/// A histogram's cumulative bucket counts by upper bound (`+Inf` last), summed over label
/// sets and over several scrapes (several processes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// Histogram `name` (without `_bucket`) in `text`.
    pub fn parse(text: &str, name: &str) -> Histogram {
        let prefix = format!("{name}_bucket{{");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Some((labels, sample)) = rest.split_once('}') else {
                continue;
            };
            let Some(le) = labels
                .split(',')
                .find_map(|label| label.trim().strip_prefix("le=\""))
                .map(|le| le.trim_end_matches('"'))
            else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse::<f64>() {
                    Ok(bound) => bound,
                    Err(_) => continue,
                }
            };
            let Some(count) = sample
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            else {
                continue;
            };
            match buckets.iter_mut().find(|(b, _)| *b == bound) {
                Some(bucket) => bucket.1 += count,
                None => buckets.push((bound, count)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram { buckets }
    }

    /// The sum of several histograms with the same buckets (several workers).
    pub fn sum(all: impl IntoIterator<Item = Histogram>) -> Histogram {
        let mut total = Histogram::default();
        for histogram in all {
            for (bound, count) in histogram.buckets {
                match total.buckets.iter_mut().find(|(b, _)| *b == bound) {
                    Some(bucket) => bucket.1 += count,
                    None => total.buckets.push((bound, count)),
                }
            }
        }
        total.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        total
    }

    /// What was observed after `earlier` was scraped.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(bound, count)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|(b, _)| b == bound)
                        .map_or(0.0, |(_, c)| *c);
                    (*bound, count - before)
                })
                .collect(),
        }
    }

    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, count)| *count)
    }

    /// The `q` quantile, interpolated linearly inside its bucket as Prometheus'
    /// `histogram_quantile` does; the largest finite bound if it falls in `+Inf`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &self.buckets {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let inside = count - lower.1;
                let fraction = if inside > 0.0 {
                    (rank - lower.1) / inside
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * fraction);
            }
            lower = (bound, count);
        }
        None
    }

    /// The upper bound of the highest non-empty bucket: the maximum is at most this.
    pub fn max_bound(&self) -> Option<f64> {
        let mut previous = 0.0;
        let mut highest = None;
        for &(bound, count) in &self.buckets {
            if count > previous {
                highest = Some(bound);
            }
            previous = count;
        }
        highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE lag histogram
lag_bucket{le=\"0.001\"} 10
lag_bucket{le=\"0.005\"} 90
lag_bucket{le=\"0.01\"} 100
lag_bucket{le=\"+Inf\"} 100
lag_sum 0.3
lag_count 100
up{a=\"b\"} 1
up{a=\"c\"} 2
";

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let lag = Histogram::parse(TEXT, "lag");
        assert_eq!(lag.count(), 100.0);
        let p50 = lag.quantile(0.5).expect("a p50");
        assert!((p50 - 0.003).abs() < 1e-9, "{p50}");
        assert_eq!(lag.max_bound(), Some(0.01));
    }

    #[test]
    fn a_window_is_the_difference_of_two_scrapes() {
        let before = Histogram::parse(TEXT, "lag");
        let after = Histogram::sum([before.clone(), before.clone()]);
        assert_eq!(after.since(&before), before);
    }

    #[test]
    fn values_sum_over_label_sets() {
        assert_eq!(value(TEXT, "up"), Some(3.0));
        assert_eq!(value(TEXT, "lag_count"), Some(100.0));
        assert_eq!(value(TEXT, "missing"), None);
    }
}
