//! The unit of the guest agent's CPU times, learnt from how fast they grow.

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(super) struct CpuUnit {
    /// Seconds per unit: 0.001 (ms, Kata >= 2.5, assumed until measured),
    /// 0.01 (clock ticks, Kata 2.3.1-2.4) or 1.0 (seconds, older).
    scale: f64,
    last: Option<(Instant, f64)>,
    /// True once the growth rate matched a known unit.
    known: bool,
}

impl Default for CpuUnit {
    fn default() -> Self {
        CpuUnit {
            scale: 0.001,
            last: None,
            known: false,
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
                if let Some(scale) = scale {
                    if scale != self.scale {
                        tracing::info!(
                            seconds_per_unit = scale,
                            "guest agent CPU time unit recognised"
                        );
                    }
                    self.scale = scale;
                    self.known = true;
                }
                self.last = Some((at, clock));
            }
        } else {
            self.last = Some((at, clock));
        }
        self.current()
    }

    pub(super) fn current(&self) -> Option<f64> {
        self.known.then_some(self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        // Milliseconds: 1000 per second.
        assert_eq!(
            u.observe(t0 + Duration::from_secs(20), 1_011_000.0),
            Some(0.001)
        );
        // Nonsense growth (a reset): keep what was known.
        assert_eq!(u.observe(t0 + Duration::from_secs(30), 5.0), Some(0.001));
    }
}
