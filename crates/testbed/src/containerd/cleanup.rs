//! Leaving nothing behind: pods, shims and their processes, cgroups,
//! mounts and the instance folder.

use super::*;

impl Containerd {
    /// Full cleanup: pods via CRI, containerd, leftover shims and their
    /// processes, cgroups of killed containers, mounts, the folder.
    pub(super) fn cleanup(&mut self) -> Result<()> {
        if self.cleaned {
            return Ok(());
        }
        self.cleaned = true;
        let mut errors = Vec::new();
        if self.is_running() {
            if let Err(e) = self.remove_all_pods() {
                errors.push(format!("{e:#}"));
            }
        }
        if let Err(e) = self.stop() {
            errors.push(format!("stopping containerd: {e:#}"));
        }
        let cgroups = self.leftover_cgroups();
        let killed = self.kill_leftover_processes();
        if killed > 0 {
            errors.push(format!("killed {killed} leftover shim/container processes"));
        }
        remove_cgroups(&cgroups);
        reap_orphans();
        let remaining = unmount_under(&self.dir);
        if keep_dirs() {
            eprintln!("keeping containerd dir {}", self.dir.display());
        } else if remaining.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                errors.push(format!("removing {}: {e}", self.dir.display()));
            }
        } else {
            // Never recurse into a mount: it could be a bind of host data.
            errors.push(format!(
                "left {} in place, still mounted: {remaining:?}",
                self.dir.display()
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("containerd cleanup: {}", errors.join("; "))
        }
    }

    /// Shims started by this containerd (their `-address` is our socket).
    pub(super) fn our_shims(&self) -> Vec<u32> {
        let sock = self.socket_path();
        let sock = sock.as_os_str().as_encoded_bytes();
        let mut prefix = self.dir.as_os_str().as_encoded_bytes().to_vec();
        prefix.push(b'/');
        list_pids()
            .into_iter()
            .filter(|pid| {
                let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                    return false;
                };
                let mut args = cmdline.split(|b| *b == 0);
                let argv0 = args.next().unwrap_or_default();
                let name = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
                name.starts_with(b"containerd-shim")
                    && args.any(|a| a == sock || a.starts_with(&prefix))
            })
            .collect()
    }

    /// SIGKILLs our shims and everything below them (the pods' processes);
    /// returns how many processes were signalled.
    pub(super) fn kill_leftover_processes(&self) -> usize {
        let shims = self.our_shims();
        if shims.is_empty() {
            return 0;
        }
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for pid in list_pids() {
            if let Some(ppid) = parent_pid(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
        let mut all: Vec<u32> = Vec::new();
        let mut seen = HashSet::new();
        let mut queue = shims.clone();
        while let Some(pid) = queue.pop() {
            if seen.insert(pid) {
                all.push(pid);
                queue.extend(children.get(&pid).into_iter().flatten().copied());
            }
        }
        // Children first, so no shim restarts anything in between.
        for pid in all.iter().rev() {
            signal(*pid, libc::SIGKILL);
        }
        let _ = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            Ok(all.iter().all(|p| !is_alive(*p)).then_some(()))
        });
        all.len()
    }

    /// Cgroup folders of containers whose runc state is still there (runc
    /// removes both when a container is deleted normally).
    pub(super) fn leftover_cgroups(&self) -> Vec<PathBuf> {
        let runc_root = self.dir.join("run-containerd/runc");
        let mut out = Vec::new();
        let Ok(namespaces) = std::fs::read_dir(&runc_root) else {
            return out;
        };
        for ns in namespaces.flatten() {
            let Ok(containers) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for c in containers.flatten() {
                let Ok(state) = std::fs::read(c.path().join("state.json")) else {
                    continue;
                };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&state) else {
                    continue;
                };
                if let Some(paths) = v["cgroup_paths"].as_object() {
                    out.extend(
                        paths
                            .values()
                            .filter_map(|p| p.as_str())
                            .map(PathBuf::from)
                            .filter(|p| p.starts_with("/sys/fs/cgroup")),
                    );
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn list_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// `(ppid, state)` from `/proc/<pid>/stat`; the command name may contain
/// spaces and parentheses, so parse after its last `)`.
fn stat_fields(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((ppid, state))
}

fn parent_pid(pid: u32) -> Option<u32> {
    stat_fields(pid).map(|(ppid, _)| ppid)
}

/// Alive and not a zombie (zombies of reparented processes may never be
/// reaped when PID 1 of this machine does not reap).
fn is_alive(pid: u32) -> bool {
    matches!(stat_fields(pid), Some((_, s)) if s != 'Z' && s != 'X')
}

/// Reaps zombie shims and pod processes that were reparented to this
/// process (see the subreaper note in `start`). Only those names: the
/// statuses of children a test spawned itself must stay for its `wait`.
fn reap_orphans() {
    let me = std::process::id();
    for pid in list_pids() {
        if !matches!(stat_fields(pid), Some((ppid, 'Z')) if ppid == me) {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim_end();
        if comm.starts_with("containerd-shim") || comm == "pause" || comm == "runc" {
            let mut status = 0;
            // SAFETY: waitpid on a specific zombie child; status is a valid pointer.
            unsafe {
                libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
            }
        }
    }
}

fn remove_cgroups(paths: &[PathBuf]) {
    for p in paths {
        // A killed process leaves its cgroup asynchronously; retry briefly.
        let _ = wait_until(Duration::from_secs(2), Duration::from_millis(50), || {
            Ok((std::fs::remove_dir(p).is_ok() || !p.exists()).then_some(()))
        });
    }
}

/// Decodes the octal escapes (`\040` etc.) of `/proc/self/mountinfo`.
fn unescape_mount_path(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Lazily unmounts everything mounted under `dir` in our mount namespace,
/// deepest first; returns what is still mounted afterwards.
fn unmount_under(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    for _ in 0..3 {
        let mut mounts = mounts_under(dir);
        if mounts.is_empty() {
            break;
        }
        mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for m in mounts {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_bytes()) {
                // SAFETY: c is a valid NUL-terminated path.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
    mounts_under(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(
            unescape_mount_path("/tmp/a\\040b/c"),
            PathBuf::from("/tmp/a b/c")
        );
        assert_eq!(unescape_mount_path("/x\\"), PathBuf::from("/x\\"));
    }
}
