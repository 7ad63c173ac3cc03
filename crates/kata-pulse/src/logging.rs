//! Log setup: tracing to stderr, text or JSON, colours only on a terminal
//! (container logs must not carry escape codes).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `filter` was validated by the config.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::builder()
        .parse(filter)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
    fn rate_limit_allows_once_per_period() {
        let rl = RateLimit::new(std::time::Duration::from_secs(60));
        assert!(rl.allow());
        assert!(!rl.allow());
        let fast = RateLimit::new(std::time::Duration::ZERO);
        assert!(fast.allow());
        assert!(fast.allow());
    }
}
