//! The unit of the guest agent's CPU times, learnt from how fast they grow.
//!
//! The rule: the first interval whose growth matches a unit sets it; once
//! set, another unit replaces it only after [`CONFIRMATIONS`] consecutive
//! intervals all measured that same other unit. One odd interval (a vCPU
//! hot-unplugged or plugged between two scrapes changes the per-CPU mean,
//! a stalled guest clock, a counter reset) never flips a sandbox's CPU
//! series by 10x or 1000x; a unit wrongly learnt from an odd first interval
//! is corrected within a few scrapes.

use tokio::time::Instant;

/// Consecutive agreeing intervals needed to change a learnt unit.
pub(super) const CONFIRMATIONS: u32 = 3;

#[derive(Debug, Clone, Copy)]
pub(super) struct CpuUnit {
    /// Seconds per unit: 0.001 (ms, Kata >= 2.5, assumed until measured),
    /// 0.01 (clock ticks, Kata 2.3.1-2.4) or 1.0 (seconds, older).
    scale: f64,
    last: Option<(Instant, f64)>,
    /// True once the growth rate matched a known unit.
    known: bool,
    /// Another unit measured, and in how many consecutive intervals.
    challenger: Option<(f64, u32)>,
}

impl Default for CpuUnit {
    fn default() -> Self {
        CpuUnit {
            scale: 0.001,
            last: None,
            known: false,
            challenger: None,
        }
    }
}

impl CpuUnit {
    /// Feeds the mean per-CPU clock (sum of all items) seen at `at`;
    /// returns the seconds per unit once known.
    pub(super) fn observe(&mut self, at: Instant, clock: f64) -> Option<f64> {
        if let Some((t0, c0)) = self.last {
            let dt = at.saturating_duration_since(t0).as_secs_f64();
            if dt >= 0.5 {
                let rate = (clock - c0) / dt;
                let scale = if (500.0..2000.0).contains(&rate) {
                    Some(0.001)
                } else if (50.0..200.0).contains(&rate) {
                    Some(0.01)
                } else if (0.5..2.0).contains(&rate) {
                    Some(1.0)
                } else {
                    None
                };
                self.judge(scale);
                self.last = Some((at, clock));
            }
        } else {
            self.last = Some((at, clock));
        }
        self.current()
    }

    /// Applies the rule to one interval's verdict (`None`: no unit fits).
    fn judge(&mut self, measured: Option<f64>) {
        let Some(scale) = measured else {
            self.challenger = None;
            return;
        };
        if !self.known || scale == self.scale {
            if !self.known {
                tracing::info!(
                    seconds_per_unit = scale,
                    "guest agent CPU time unit recognised"
                );
            }
            self.scale = scale;
            self.known = true;
            self.challenger = None;
            return;
        }
        let seen = match self.challenger {
            Some((s, n)) if s == scale => n + 1,
            _ => 1,
        };
        if seen >= CONFIRMATIONS {
            tracing::info!(
                seconds_per_unit = scale,
                previous = self.scale,
                "guest agent CPU time unit changed"
            );
            self.scale = scale;
            self.challenger = None;
        } else {
            self.challenger = Some((scale, seen));
        }
    }

    pub(super) fn current(&self) -> Option<f64> {
        self.known.then_some(self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A clock growing `per_sec` units per second, observed every 10 s.
    fn feed(
        u: &mut CpuUnit,
        t0: Instant,
        clock: &mut f64,
        step: &mut u64,
        per_sec: f64,
    ) -> Option<f64> {
        *step += 1;
        *clock += per_sec * 10.0;
        u.observe(t0 + Duration::from_secs(10 * *step), *clock)
    }

    #[test]
    fn cpu_unit_is_learnt_from_growth() {
        let t0 = Instant::now();
        let mut u = CpuUnit::default();
        // Unknown until the growth was seen.
        assert_eq!(u.observe(t0, 1_000_000.0), None);
        // Ticks: 100 per second of wall time.
        assert_eq!(
            u.observe(t0 + Duration::from_secs(10), 1_001_000.0),
            Some(0.01)
        );
        // Too close together: no new decision.
        assert_eq!(
            u.observe(t0 + Duration::from_millis(10_100), 9e9),
            Some(0.01)
        );
        // Nonsense growth (a reset): keep what was known.
        assert_eq!(u.observe(t0 + Duration::from_secs(20), 5.0), Some(0.01));
    }

    /// Once learnt, one odd interval (here a vCPU hot-unplug that makes the
    /// per-CPU mean jump) never flips the unit; neither do two.
    #[test]
    fn a_learnt_unit_survives_odd_intervals() {
        let t0 = Instant::now();
        let (mut clock, mut step) = (0.0, 0);
        let mut u = CpuUnit::default();
        u.observe(t0, clock);
        assert_eq!(feed(&mut u, t0, &mut clock, &mut step, 1000.0), Some(0.001));
        // One interval that reads like ticks, then normal again.
        assert_eq!(feed(&mut u, t0, &mut clock, &mut step, 100.0), Some(0.001));
        assert_eq!(feed(&mut u, t0, &mut clock, &mut step, 1000.0), Some(0.001));
        // Two odd ones in a row, interrupted: the count starts over.
        for _ in 0..CONFIRMATIONS - 1 {
            assert_eq!(feed(&mut u, t0, &mut clock, &mut step, 1.0), Some(0.001));
        }
        assert_eq!(
            feed(&mut u, t0, &mut clock, &mut step, 3e6),
            Some(0.001),
            "no unit fits"
        );
        for _ in 0..CONFIRMATIONS - 1 {
            assert_eq!(feed(&mut u, t0, &mut clock, &mut step, 1.0), Some(0.001));
        }
    }

    /// A unit learnt from an odd first interval is corrected once the true
    /// one has been measured CONFIRMATIONS times in a row.
    #[test]
    fn a_wrong_first_guess_is_corrected() {
        let t0 = Instant::now();
        let (mut clock, mut step) = (0.0, 0);
        let mut u = CpuUnit::default();
        u.observe(t0, clock);
        assert_eq!(feed(&mut u, t0, &mut clock, &mut step, 100.0), Some(0.01));
        for _ in 0..CONFIRMATIONS - 1 {
            assert_eq!(feed(&mut u, t0, &mut clock, &mut step, 1000.0), Some(0.01));
        }
        assert_eq!(feed(&mut u, t0, &mut clock, &mut step, 1000.0), Some(0.001));
    }
}
