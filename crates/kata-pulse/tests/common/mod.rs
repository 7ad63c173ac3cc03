//! Helpers for tests that run the real `kata-pulse` binary.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running agent; killed (and its log printed) on drop.
pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent on a free port with the given extra arguments and
    /// waits until `/readyz` answers 200.
    pub fn start(args: &[&str]) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("agent.log");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kata-pulse"))
            .arg("--listen-address")
            .arg(addr.to_string())
            .args(args)
            .env_remove("RUST_LOG")
            .env("RUST_LOG", "info,kata_pulse=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn kata-pulse");
        let agent = Agent {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = try_get(addr, "/readyz", &[]) {
                if r.status == 200 {
                    return agent;
                }
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready; log:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str) -> Response {
        self.get_with(path, &[])
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        try_get(self.addr, path, headers)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nagent log:\n{}", self.log_text()))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- kata-pulse log ---\n{}", self.log_text());
        }
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Minimal HTTP/1.1 GET with `Connection: close`; enough for a server that
/// answers with Content-Length bodies.
pub fn try_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&b[..pos]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        b = &b[pos + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// Temporary Go and runtime-rs roots, named so the agent infers the runtime.
pub struct Roots {
    pub dir: tempfile::TempDir,
    pub go: PathBuf,
    pub rs: PathBuf,
}

impl Roots {
    pub fn new() -> Roots {
        let dir = tempfile::tempdir().expect("tempdir");
        let go = dir.path().join("vc/sbs");
        let rs = dir.path().join("kata");
        std::fs::create_dir_all(&go).unwrap();
        std::fs::create_dir_all(&rs).unwrap();
        Roots { dir, go, rs }
    }

    pub fn arg(&self) -> String {
        format!("{},{}", self.go.display(), self.rs.display())
    }

    pub fn socket(root: &Path, id: &str) -> PathBuf {
        root.join(id).join("shim-monitor.sock")
    }
}

/// Runs async kata-sim shims on a background runtime.
pub struct Sims {
    pub rt: tokio::runtime::Runtime,
}

impl Sims {
    pub fn new() -> Sims {
        Sims {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    pub fn start(
        &self,
        root: &Path,
        id: &str,
        flavour: kata_sim::Flavour,
        fault: kata_sim::Fault,
    ) -> kata_sim::ShimHandle {
        let opts = kata_sim::ShimOptions::new(flavour)
            .sandbox_id(id)
            .fault(fault)
            .pprof(true);
        self.start_with(root, id, opts)
    }

    /// A shim with the given options in sandbox `id` under `root`.
    pub fn start_with(
        &self,
        root: &Path,
        id: &str,
        opts: kata_sim::ShimOptions,
    ) -> kata_sim::ShimHandle {
        self.rt
            .block_on(kata_sim::ShimServer::start(Roots::socket(root, id), opts))
            .expect("start simulated shim")
    }
}

/// Family name -> (type, number of samples) of a text exposition; panics on
/// a second TYPE line for a family (what promtool rejects).
pub fn families(text: &str) -> std::collections::BTreeMap<String, (String, usize)> {
    let mut out = std::collections::BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap().to_string();
            let kind = it.next().unwrap().to_string();
            assert!(
                out.insert(name.clone(), (kind, 0)).is_none(),
                "second TYPE for {name}"
            );
            current = name;
        } else if !line.starts_with('#') && !line.is_empty() {
            let entry = out.get_mut(&current).expect("sample before any TYPE");
            entry.1 += 1;
        }
    }
    out
}

/// A stand-in shim answering every request with `body` (HTTP 200), for
/// output kata-sim does not produce: type conflicts with other shims,
/// malformed lines, reserved family names. Serves until the process ends;
/// the socket lives in the sandbox folder under `root`.
pub fn serve_static_shim(root: &Path, id: &str, body: &str) {
    use std::os::unix::net::UnixListener;
    std::fs::create_dir_all(root.join(id)).unwrap();
    let listener = UnixListener::bind(Roots::socket(root, id)).unwrap();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(response.as_bytes());
        }
    });
}
