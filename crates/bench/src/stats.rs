//! Summaries of repeated measurements: median, p99 and the range, so a table shows the
//! noise next to the value.

use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Summary::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Summary {
            n,
            median: if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            },
            // Nearest rank: the smallest value with at least 99 % of them at or below it.
            p99: v[((0.99 * n as f64).ceil() as usize).clamp(1, n) - 1],
            min: v[0],
            max: v[n - 1],
            mean: v.iter().sum::<f64>() / n as f64,
        }
    }

    pub fn of_millis(values: &[Duration]) -> Summary {
        let ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Summary::of(&ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_p99_and_range() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(
            (s.n, s.median, s.p99, s.min, s.max, s.mean),
            (5, 3.0, 5.0, 1.0, 5.0, 3.0)
        );
        let even = Summary::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(even.median, 2.5);
        let hundred: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(Summary::of(&hundred).p99, 198.0);
        assert_eq!(Summary::of(&[]), Summary::default());
        assert_eq!(Summary::of(&[f64::NAN, 7.0]).median, 7.0);
    }
}
