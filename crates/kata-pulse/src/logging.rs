//! Log setup: tracing to stderr, text or JSON, colours only on a terminal
//! (container logs must not carry escape codes).
//!
//! Logging never stops the agent: a line that cannot be written (stderr
//! closed because whatever read it went away, a full disk) is dropped and
//! counted in `kata_pulse_log_write_errors_total`. tracing's own fallback
//! for a failed write is `eprintln!`, which panics on a closed stderr; that
//! panic once stopped the CRI labeller, and with it the agent.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;

use crate::incidents::LOG_WRITE_ERRORS;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `filter` was validated by the config.
pub fn init(filter_text: &str, format: LogFormat) {
    let mut filter = EnvFilter::builder()
        .parse(filter_text)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    if let Some(quiet) = quiet_notify(filter_text) {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| DroppingStderr)
        .log_internal_errors(false)
        .with_target(true);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber; nothing to report.
    let _ = result;
}

/// `notify` (the inotify watcher) logs a WARN or INFO line each time the
/// kernel dropped the watch of a removed sandbox folder before notify did:
/// half of a churning node's log, and a false alarm for "alert on WARN".
/// Its lines show only from ERROR up, unless the filter names `notify`.
fn quiet_notify(filter_text: &str) -> Option<tracing_subscriber::filter::Directive> {
    if filter_text.contains("notify") {
        return None;
    }
    "notify=error".parse().ok()
}

/// stderr, with every write error swallowed and counted.
pub struct DroppingStderr;

impl Write for DroppingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().write_all(buf).is_err() {
            LOG_WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if std::io::stderr().flush().is_err() {
            LOG_WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Lets a repeating failure log once per `every`, so a broken shim or a CRI
/// outage cannot flood the node's logs.
#[derive(Debug)]
pub struct RateLimit {
    every: std::time::Duration,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl RateLimit {
    pub const fn new(every: std::time::Duration) -> Self {
        RateLimit {
            every,
            last: std::sync::Mutex::new(None),
        }
    }

    /// True when the caller should log now.
    pub fn allow(&self) -> bool {
        let now = std::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(t) if now.duration_since(t) < self.every => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_is_quiet_unless_asked_for() {
        assert_eq!(
            quiet_notify("debug").map(|d| d.to_string()),
            Some("notify=error".to_string())
        );
        assert!(quiet_notify("info,notify=debug").is_none());
    }

    #[test]
    fn rate_limit_allows_once_per_period() {
        let rl = RateLimit::new(std::time::Duration::from_secs(60));
        assert!(rl.allow());
        assert!(!rl.allow());
        let fast = RateLimit::new(std::time::Duration::ZERO);
        assert!(fast.allow());
        assert!(fast.allow());
    }
}
