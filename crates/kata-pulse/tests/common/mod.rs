//! Helpers for tests that run the real `kata-pulse` binary.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running agent; killed (and its log printed) on drop.
pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
    /// The `--probe-listen-address`, when started with one.
    pub probe: Option<SocketAddr>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent on a free port with the given extra arguments and
    /// waits until `/readyz` answers 200.
    pub fn start(args: &[&str]) -> Agent {
        Agent::spawn(args, false)
    }

    /// Like [`Agent::start`] with a `--probe-listen-address` too, whose
    /// `/readyz` is waited for (the main port may be TLS and need auth).
    pub fn start_probed(args: &[&str]) -> Agent {
        Agent::spawn(args, true)
    }

    fn spawn(args: &[&str], probed: bool) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("agent.log");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let probe: Option<SocketAddr> =
            probed.then(|| format!("127.0.0.1:{}", free_port()).parse().unwrap());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kata-pulse"));
        if let Some(p) = probe {
            cmd.arg("--probe-listen-address").arg(p.to_string());
        }
        let child = cmd
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
            probe,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = try_get(probe.unwrap_or(addr), "/readyz", &[]) {
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

/// A response of the agent (the test bed's one HTTP client).
pub type Response = testbed::HttpResponse;

/// GET `path` from `addr`, with extra request headers.
pub fn try_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
    testbed::http_get_with(
        &format!("http://{addr}{path}"),
        headers,
        Duration::from_secs(20),
    )
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
        root.join(id).join(kata_sim::SOCKET_NAME)
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

/// Family name -> (type, number of samples) of a text exposition, parsed by
/// prom-text; panics on any line it rejects (a second TYPE line, ...), as
/// promtool would.
pub fn families(text: &str) -> std::collections::BTreeMap<String, (String, usize)> {
    let exp = prom_text::parse(text.as_bytes());
    assert_eq!(exp.errors.count, 0, "{:?}", exp.errors);
    exp.families
        .iter()
        .map(|f| {
            let kind = f.kind.as_str().to_string();
            (f.name.to_string(), (kind, exp.samples_of(f).len()))
        })
        .collect()
}

/// A stand-in shim answering every request with `body` (HTTP 200), for
/// output kata-sim does not produce: type conflicts with other shims,
/// malformed lines, reserved family names. Serves until the process ends;
/// the socket lives in the sandbox folder under `root`.
pub fn serve_static_shim(root: &Path, id: &str, body: &str) {
    testbed::FakeBody::new(body).serve_unix(&Roots::socket(root, id));
}
