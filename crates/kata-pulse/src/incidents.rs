//! What the agent survived, counted process-wide for its own metrics:
//! panics, log lines that could not be written, restarted background tasks.
//! Global because a panic hook and the log writer are process-wide too.

use std::sync::atomic::{AtomicU64, Ordering};

/// Panics in any thread or task since start (each one logged by the hook).
pub static PANICS: AtomicU64 = AtomicU64::new(0);
/// Log writes that failed (closed stderr, full disk) and were dropped.
pub static LOG_WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Log lines dropped because the queue to the log writer was full (its
/// reader fell behind or stopped reading).
pub static LOG_LINES_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Restarts of the sandbox discovery task.
pub static DISCOVERY_RESTARTS: AtomicU64 = AtomicU64::new(0);
/// Restarts of the CRI labelling task.
pub static LABELLER_RESTARTS: AtomicU64 = AtomicU64::new(0);

pub fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Replaces the default panic output (plain text on stderr) with one log
/// line in the configured format, and counts the panic. tokio keeps a
/// panicking task's runtime alive, so without this a panic was only a
/// stray stderr line.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let thread = std::thread::current();
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => backtrace.to_string(),
            _ => String::new(),
        };
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location,
            panic = message,
            backtrace,
            "panicked"
        );
        // A panic on the main thread ends the process: its line must be out
        // first (the log writer itself must not wait for itself).
        if !crate::logging::is_writer_thread() {
            crate::logging::flush(std::time::Duration::from_millis(100));
        }
    }));
}
