//! Stand-in servers for tests: every request is answered with one fixed
//! HTTP 200 body, on a unix socket (a fake shim: output kata-sim does not
//! produce, such as type conflicts, malformed lines, reserved family names)
//! or on a loopback port (a fake scrape target). They serve until the test
//! process ends.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a fake server answers, and how.
#[derive(Clone, Debug)]
pub struct FakeBody {
    body: String,
    delay: Duration,
    hits: Arc<AtomicUsize>,
}

impl FakeBody {
    /// Answers `body` as Prometheus text at once.
    pub fn new(body: impl Into<String>) -> FakeBody {
        FakeBody {
            body: body.into(),
            delay: Duration::ZERO,
            hits: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Answers only `delay` after the request arrived.
    pub fn delay(mut self, delay: Duration) -> FakeBody {
        self.delay = delay;
        self
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn answer(&self, mut stream: impl Read + Write) {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.body.len(),
            self.body
        );
        let _ = stream.write_all(response.as_bytes());
    }

    /// Serves on a unix socket at `path` (its folder is created), each
    /// connection on a thread of its own.
    pub fn serve_unix(self, path: &Path) -> FakeBody {
        use std::os::unix::net::UnixListener;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the socket's folder");
        }
        let listener = UnixListener::bind(path).expect("bind the fake socket");
        let this = self.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                this.answer_on_a_thread(stream);
            }
        });
        self
    }

    fn answer_on_a_thread(&self, stream: impl Read + Write + Send + 'static) {
        let this = self.clone();
        std::thread::spawn(move || this.answer(stream));
    }

    /// Serves on a free loopback port; returns `host:port`.
    pub fn serve_tcp(self) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address").to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                self.answer_on_a_thread(stream);
            }
        });
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_counts() {
        let fake = FakeBody::new("a 1\n");
        let addr = fake.clone().serve_tcp();
        let r = crate::http_get(&format!("http://{addr}/metrics"), Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "a 1\n");
        assert_eq!(fake.hits(), 1);
    }
}
