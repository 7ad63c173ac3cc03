//! Small helpers shared by the test bed and by end-to-end tests.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Environment variable naming a folder that holds the workspace binaries,
/// for runs where tests and binaries are not built into the same target dir.
pub const BIN_DIR_ENV: &str = "KATA_PULSE_BIN_DIR";

/// Environment variable that keeps temporary folders of containerd and
/// Prometheus instead of removing them, to look at after a failed run.
pub const KEEP_ENV: &str = "KATA_PULSE_TESTBED_KEEP";

/// Environment variable that makes the test bed print start-up timings.
pub const VERBOSE_ENV: &str = "KATA_PULSE_TESTBED_VERBOSE";

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

pub(crate) fn keep_dirs() -> bool {
    env_flag(KEEP_ENV)
}

pub(crate) fn verbose() -> bool {
    env_flag(VERBOSE_ENV)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so another process could take it
/// in between; in practice the kernel hands out ports round-robin, which
/// makes a clash between parallel tests very unlikely.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Calls `f` every `poll` until it returns `Ok(Some(_))`.
///
/// `Ok(None)` means "not yet"; an `Err` ends the wait at once (use it for
/// conditions that cannot get better, such as a process that exited). On
/// timeout the error says how long it waited; callers add the context that
/// explains the failure (typically a log tail).
pub fn wait_until<T>(
    timeout: Duration,
    poll: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(poll);
    }
}

/// A server process of the test bed (Prometheus, Alertmanager) on a
/// loopback port, with its config file and temporary folder; stopped on
/// drop, its folder kept with `KATA_PULSE_TESTBED_KEEP=1`.
pub struct Daemon {
    name: &'static str,
    child: ChildGuard,
    addr: std::net::SocketAddr,
    config: std::path::PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts server `name` on a free loopback port in a fresh temporary
    /// folder: `setup` gets the folder and the address, writes the config
    /// and returns its path with the command to run. The port from
    /// [`free_port`] may be taken before the server binds it; then it is
    /// tried again on another port.
    pub(crate) fn start(
        name: &'static str,
        ready_timeout: Duration,
        setup: impl Fn(&Path, std::net::SocketAddr) -> Result<(PathBuf, Command)>,
    ) -> Result<Daemon> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Daemon::start_once(name, ready_timeout, &setup) {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    continue
                }
                r => return r,
            }
        }
    }

    fn start_once(
        name: &'static str,
        ready_timeout: Duration,
        setup: &impl Fn(&Path, std::net::SocketAddr) -> Result<(PathBuf, Command)>,
    ) -> Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kp-{}-", name.to_lowercase()))
            .tempdir()?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let (config, mut cmd) = setup(dir.path(), addr)?;
        cmd.current_dir(dir.path());
        Daemon::spawn(name, &mut cmd, addr, config, dir, ready_timeout)
    }

    /// Runs `cmd` (its output to `<name>.log` in `dir`) and waits until
    /// `<addr>/-/ready` answers 200.
    fn spawn(
        name: &'static str,
        cmd: &mut Command,
        addr: std::net::SocketAddr,
        config: std::path::PathBuf,
        dir: tempfile::TempDir,
        ready_timeout: Duration,
    ) -> Result<Daemon> {
        let started = Instant::now();
        let log = dir.path().join(format!("{}.log", name.to_lowercase()));
        let child = ChildGuard::spawn_logging_to(&name.to_lowercase(), cmd, &log)?;
        let mut daemon = Daemon {
            name,
            child,
            addr,
            config,
            dir: Some(dir),
        };
        let url = format!("{}/-/ready", daemon.url());
        wait_ready(&mut daemon.child, &url, ready_timeout, name)?;
        if verbose() {
            eprintln!("testbed: {name} ready on {addr} in {:?}", started.elapsed());
        }
        Ok(daemon)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn log_path(&self) -> Option<&Path> {
        self.child.log_path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.child.log_tail(lines)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.stop(Duration::from_secs(5));
        if keep_dirs() {
            if let Some(d) = self.dir.take() {
                eprintln!("keeping {} dir {}", self.name, d.keep().display());
            }
        }
    }
}

/// Declares a handle to a running [`Daemon`] that derefs to it, so each
/// server adds only its own API.
macro_rules! daemon_handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            daemon: $crate::util::Daemon,
        }

        impl std::ops::Deref for $name {
            type Target = $crate::util::Daemon;

            fn deref(&self) -> &$crate::util::Daemon {
                &self.daemon
            }
        }
    };
}
pub(crate) use daemon_handle;

/// Waits until `url` answers 200 while `child` runs; the error names
/// `what` and ends with the last lines of its log.
fn wait_ready(child: &mut ChildGuard, url: &str, timeout: Duration, what: &str) -> Result<()> {
    wait_until(timeout, Duration::from_millis(100), || {
        child.ensure_running()?;
        Ok(crate::http::http_get(url, Duration::from_secs(10))
            .ok()
            .filter(|r| r.status == 200)
            .map(|_| ()))
    })
    .with_context(|| {
        format!(
            "waiting for {what} at {url} to be ready; last log lines:\n{}",
            child.log_tail(40)
        )
    })
}

/// The last `lines` lines of a text file (lossy UTF-8), for error messages.
///
/// Reads at most the last 256 KiB so a huge log cannot blow up a message.
pub fn file_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 256 * 1024;
    let Ok(mut f) = File::open(path) else {
        return format!("<no log at {}>", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX {
        let _ = f.seek(SeekFrom::Start(len - MAX));
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The cargo target dir the current executable was built into.
///
/// Test executables live in `<target>/<profile>/deps/`; cargo marks the
/// target dir with `CACHEDIR.TAG`, which is how it is found even when
/// `CARGO_TARGET_DIR` was only set at build time.
pub fn target_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_relative() {
            workspace_root().join(dir)
        } else {
            dir
        };
        if dir.is_dir() {
            return Some(dir);
        }
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

fn workspace_root() -> PathBuf {
    // crates/testbed -> workspace root
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a binary built from this workspace (e.g. `kata-pulse`).
///
/// Looks in `$KATA_PULSE_BIN_DIR`, then in the profile dir the running test
/// was built into (so debug tests find debug binaries, honouring
/// `CARGO_TARGET_DIR`), then `<target>/debug`. Integration tests of another
/// package cannot rely on cargo building the binary for them, hence the
/// explicit error.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(BIN_DIR_ENV) {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            if dir.file_name().is_some_and(|n| n == "deps") {
                dirs.extend(dir.parent().map(Path::to_path_buf));
            } else {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    if let Some(t) = target_dir() {
        dirs.push(t.join("debug"));
    }
    dirs.push(workspace_root().join("target").join("debug"));
    for d in &dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "binary `{name}` not found (searched: {}); run `cargo build --workspace --bins` first \
         or set {BIN_DIR_ENV}",
        searched.join(", ")
    )
}

/// Finds an executable in `PATH`, then in the sbin folders that a non-login
/// root shell may lack in its `PATH` (Debian puts `runc` in `/usr/sbin`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(crate) fn require_program(name: &str, package: &str) -> Result<PathBuf> {
    find_program(name).with_context(|| {
        format!(
            "`{name}` not found; install it with `apt-get install -y {package}` \
             (scripts/test.sh does this when run as root)"
        )
    })
}

/// Sends `sig` to `pid`; errors (process already gone) are ignored.
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A child process that is stopped when dropped, also when a test panics.
///
/// Its stdout and stderr go to a log file; when the guard is dropped during
/// a panic, the log tail is printed so a failed test shows why.
pub struct ChildGuard {
    name: String,
    child: Child,
    log: Option<PathBuf>,
    _log_dir: Option<tempfile::TempDir>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr captured in a temporary log file.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kp-child-")
            .tempdir()
            .context("creating a log dir")?;
        let log = dir.path().join(format!("{name}.log"));
        let mut guard = Self::spawn_logging_to(name, cmd, &log)?;
        guard._log_dir = Some(dir);
        Ok(guard)
    }

    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn_logging_to(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log: Some(log.to_path_buf()),
            _log_dir: None,
        })
    }

    /// Wraps an already spawned child (its output is wherever the caller put it).
    pub fn from_child(name: &str, child: Child) -> Self {
        Self {
            name: name.to_string(),
            child,
            log: None,
            _log_dir: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// The last `lines` lines of the captured output.
    pub fn log_tail(&self, lines: usize) -> String {
        match &self.log {
            Some(p) => file_tail(p, lines),
            None => "<output not captured>".to_string(),
        }
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Errors (with the log tail) if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.exited() {
            bail!(
                "{} exited ({status}); last log lines:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the exit.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        Ok(self.child.wait()?)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() && self.log.is_some() {
            eprintln!(
                "--- last lines of {} output ---\n{}\n---",
                self.name,
                self.log_tail(60)
            );
        }
        let _ = self.stop(Duration::from_secs(3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_value_times_out_and_aborts() {
        let mut n = 0;
        let v = wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            Ok((n == 3).then_some(n))
        })
        .unwrap();
        assert_eq!(v, 3);

        let e = wait_until(Duration::from_millis(20), Duration::from_millis(5), || {
            Ok(None::<()>)
        })
        .unwrap_err();
        assert!(e.to_string().contains("not met within"), "{e}");

        let e = wait_until(
            Duration::from_secs(5),
            Duration::from_millis(1),
            || -> Result<Option<()>> { bail!("fatal") },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "fatal");
    }

    #[test]
    fn missing_workspace_bin_says_how_to_build_it() {
        let e = workspace_bin("no-such-kata-pulse-binary").unwrap_err();
        assert!(
            e.to_string().contains("cargo build --workspace --bins"),
            "{e}"
        );
    }

    #[test]
    fn child_guard_reports_exit_with_log() {
        let mut g = ChildGuard::spawn(
            "sh",
            Command::new("sh").args(["-c", "echo something broke >&2; exit 3"]),
        )
        .unwrap();
        let e = wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            g.ensure_running().map(|()| None::<()>)
        })
        .unwrap_err();
        assert!(format!("{e}").contains("something broke"), "{e}");
    }

    #[test]
    fn child_guard_stops_a_running_child() {
        let mut g = ChildGuard::spawn("sleep", Command::new("sleep").arg("30")).unwrap();
        let pid = g.id();
        let status = g.stop(Duration::from_secs(5)).unwrap();
        assert!(!status.success());
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || g.exited().is_some());
    }

    #[test]
    fn file_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(file_tail(&p, 2), "b\nc");
        assert!(file_tail(&dir.path().join("none"), 2).contains("no log"));
    }
}
