//! Log setup: tracing to stderr, text or JSON, colours only on a terminal
//! (container logs must not carry escape codes).
//!
//! Logging never stops or slows the agent: a line that cannot be written
//! (stderr closed because whatever read it went away, a full disk) is
//! dropped and counted in `kata_pulse_log_write_errors_total`. tracing's own
//! fallback for a failed write is `eprintln!`, which panics on a closed
//! stderr; that panic once stopped the CRI labeller, and with it the agent.
//! Lines are written by a thread of their own from a bounded queue: a reader
//! that stops reading (a stuck log collector) fills the pipe, and a write to
//! a full pipe waits; it once blocked discovery and the async workers. What
//! does not fit the queue is dropped and counted in
//! `kata_pulse_log_lines_dropped_total`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::incidents::{LOG_LINES_DROPPED, LOG_WRITE_ERRORS};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `filter` was validated by the config.
pub fn init(filter_text: &str, format: LogFormat) {
    start_writer();
    let mut filter = EnvFilter::builder()
        .parse(filter_text)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    if let Some(quiet) = quiet_notify(filter_text) {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| QueuedStderr)
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

/// Lines the writer thread may be behind by; one more is dropped and
/// counted.
pub const QUEUED_LINES: usize = 1024;
/// Bytes the queued lines may hold, whatever their length (a backtrace, a
/// long error chain): the queue's memory bound.
pub const QUEUED_BYTES: usize = 1 << 20;

static QUEUE: OnceLock<SyncSender<Vec<u8>>> = OnceLock::new();
/// Lines queued and not yet written, for [`flush`].
static PENDING: AtomicUsize = AtomicUsize::new(0);
static PENDING_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Starts the thread that writes queued lines to stderr, once; lines are
/// written directly when no thread could be started.
fn start_writer() {
    if QUEUE.get().is_some() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUED_LINES);
    let writer = std::thread::Builder::new()
        .name(WRITER_THREAD.into())
        .spawn(move || {
            for line in rx {
                let _ = DroppingStderr.write(&line);
                PENDING_BYTES.fetch_sub(line.len(), Ordering::AcqRel);
                PENDING.fetch_sub(1, Ordering::Release);
            }
        });
    if writer.is_ok() {
        let _ = QUEUE.set(tx);
    }
}

const WRITER_THREAD: &str = "log-writer";

/// True on the thread that writes the log (which must not wait for itself).
pub fn is_writer_thread() -> bool {
    std::thread::current().name() == Some(WRITER_THREAD)
}

/// Waits until the queued lines are written, at most `timeout`: before the
/// process exits, which would otherwise lose them.
pub fn flush(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while PENDING.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The writer tracing is given: each event's line (tracing writes it with
/// one call) goes, whole, into the queue, or is dropped and counted when
/// the queue is full.
struct QueuedStderr;

impl Write for QueuedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(queue) = QUEUE.get() else {
            return DroppingStderr.write(buf);
        };
        let len = buf.len();
        PENDING.fetch_add(1, Ordering::AcqRel);
        let queued = PENDING_BYTES.fetch_add(len, Ordering::AcqRel);
        if queued + len > QUEUED_BYTES || queue.try_send(buf.to_vec()).is_err() {
            PENDING_BYTES.fetch_sub(len, Ordering::AcqRel);
            PENDING.fetch_sub(1, Ordering::AcqRel);
            LOG_LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(len)
    }

    fn flush(&mut self) -> std::io::Result<()> {
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
