//! Keeps a background task (discovery, the CRI labeller) running: they are
//! loops that never return, so when one ends it panicked. Both are safe to
//! start afresh (discovery rescans every root, the labeller asks CRI
//! again; their state is in the registry, whose locks survive a panic), so
//! the agent goes on serving instead of exiting or freezing its view.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;

/// First delay before a restart; doubled per quick failure up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run this long resets the delay: the failure was not a crash loop.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs `start()` again and again; each end is logged and counted in
/// `restarts`, and the next start waits the back-off.
pub async fn keep_running<F, Fut>(name: &'static str, restarts: &'static AtomicU64, start: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut delay = FIRST_DELAY;
    loop {
        let began = tokio::time::Instant::now();
        let outcome = std::panic::AssertUnwindSafe(start()).catch_unwind().await;
        let how = if outcome.is_err() {
            "panicked"
        } else {
            "returned"
        };
        if began.elapsed() >= HEALTHY_RUN {
            delay = FIRST_DELAY;
        }
        restarts.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            task = name,
            how,
            restart_in_secs = delay.as_secs_f64(),
            "background task stopped; restarting it"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// A task that panics at once is restarted after 1, 2, 4 … 60 s; one
    /// that then runs long enough starts the back-off from 1 s again.
    #[tokio::test(start_paused = true)]
    async fn a_failing_task_is_restarted_with_back_off() {
        static RESTARTS: AtomicU64 = AtomicU64::new(0);
        let starts = Arc::new(AtomicUsize::new(0));
        let s = starts.clone();
        let supervisor = tokio::spawn(keep_running("test", &RESTARTS, move || {
            let n = s.fetch_add(1, Ordering::SeqCst);
            async move {
                // The 9th run lasts two minutes before it fails too.
                if n == 8 {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                }
                panic!("run {n} failed");
            }
        }));
        let t0 = tokio::time::Instant::now();
        // Starts at 0, 1, 3, 7, 15, 31, 63, 123, 183 (+120 running), then
        // 1 s after that failure.
        for (at, want) in [
            (0.5, 1),
            (1.5, 2),
            (2.5, 2),
            (3.5, 3),
            (7.5, 4),
            (15.5, 5),
            (31.5, 6),
            (63.5, 7),
            (122.5, 7),
            (123.5, 8),
            (183.5, 9),
            (303.5, 9),
            (304.5, 10),
        ] {
            tokio::time::sleep_until(t0 + Duration::from_secs_f64(at)).await;
            assert_eq!(starts.load(Ordering::SeqCst), want, "starts by {at} s");
        }
        // Every end is counted, the 10th run's (at once) included.
        assert_eq!(RESTARTS.load(Ordering::Relaxed), 10);
        supervisor.abort();
    }
}
