//! The yardstick for compression cost: `gzip -1` (fast level) on the same body, measured
//! in the same run, so the ratio does not depend on how busy the machine was that day.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::stats::Summary;

/// CPU time (user + system) of `gzip -1` compressing `body`, once per repeat, in ms.
pub fn cpu_ms(body: &[u8], repeats: usize) -> Result<Summary> {
    let mut file = tempfile::NamedTempFile::new().context("creating a file for gzip")?;
    std::io::Write::write_all(&mut file, body).context("writing the body for gzip")?;
    let mut runs = Vec::new();
    for _ in 0..repeats.max(1) {
        let before = children_cpu();
        let status = Command::new("gzip")
            .args(["-1", "-c"])
            .arg(file.path())
            .stdout(Stdio::null())
            .status()
            .context("running gzip -1 (is gzip installed?)")?;
        ensure!(status.success(), "gzip -1 failed: {status}");
        runs.push(children_cpu().saturating_sub(before).as_secs_f64() * 1e3);
    }
    Ok(Summary::of(&runs))
}

/// CPU of every child waited for so far (getrusage(RUSAGE_CHILDREN)): microsecond
/// precision, unlike the clock ticks of /proc/<pid>/stat.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
