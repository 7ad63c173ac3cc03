//! Finds sandboxes: one folder per sandbox under each root, holding the
//! shim's `shim-monitor.sock`.
//!
//! inotify (via `notify`) reports changes at once; a periodic rescan is the
//! safety net for what inotify can lose (queue overflow, roots created or
//! re-created later). Every event is handled by re-checking the one folder it
//! touched, so the outcome never depends on which event kinds arrived.
//! A folder counts only with a valid id and a socket inside: runtime-rs's
//! `/run/kata/firecracker` jail folder or a dead shim's leftover folder are
//! not sandboxes. A symlinked folder, and a `shim-monitor.sock` that is a
//! symlink, a hard link or no socket, is refused (logged once, counted):
//! the agent runs as root and talks to no socket but a shim's
//! ([`crate::shim_socket`] checks again at each connect).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::registry::SandboxRoot;
use crate::registry::{Registry, Sandbox, SHIM_SOCKET};
use crate::sandbox_id;
use crate::shim_socket;

/// How often roots are checked: created, deleted or replaced (inotify does
/// not always report a deleted root at once).
const ROOT_POLL: Duration = Duration::from_secs(1);
/// How often everything is rescanned regardless of events.
const FULL_RESCAN: Duration = Duration::from_secs(30);
/// Events buffered between the inotify thread and the discovery task; when
/// full, a rescan replaces the lost events.
const EVENT_QUEUE: usize = 4096;

/// The reasons of a refusal, in the order of [`DiscoveryStats::refused_now`].
pub const REFUSAL_REASONS: [&str; 3] = ["hard_link", "not_socket", "symlink"];

/// Counters for the agent's own metrics.
#[derive(Debug, Default)]
pub struct DiscoveryStats {
    pub added: AtomicU64,
    pub removed: AtomicU64,
    pub rescans: AtomicU64,
    pub watch_errors: AtomicU64,
    /// Listings of a root folder (full rescans and root events).
    pub root_scans: AtomicU64,
    /// Sandbox folders or sockets refused, by [`REFUSAL_REASONS`] (see
    /// [`shim_socket::refusal`]): each counted once while it stays so.
    pub refused_total: [AtomicU64; 3],
    /// Paths refused now, by [`REFUSAL_REASONS`]: what an alert can watch
    /// (the counters above only grow).
    pub refused_now: [AtomicU64; 3],
    /// True once every root was scanned once (or found missing).
    pub initial_scan_done: AtomicBool,
    /// Roots that do not exist (yet): no sandbox of that runtime has run.
    missing_roots: std::sync::Mutex<BTreeSet<PathBuf>>,
}

impl DiscoveryStats {
    /// Sandbox roots that are not present now, sorted.
    pub fn missing_roots(&self) -> Vec<PathBuf> {
        self.missing_roots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Records whether `root` exists; true when that changed.
    fn set_missing(&self, root: &Path, missing: bool) -> bool {
        let mut set = self.missing_roots.lock().unwrap_or_else(|e| e.into_inner());
        if missing {
            set.insert(root.to_path_buf())
        } else {
            set.remove(root)
        }
    }
}

/// Runs discovery until the task is dropped.
pub async fn run(roots: Vec<SandboxRoot>, registry: Arc<Registry>, stats: Arc<DiscoveryStats>) {
    run_with_rescan(roots, registry, stats, FULL_RESCAN).await
}

/// [`run`] with another full-rescan period (tests).
pub async fn run_with_rescan(
    roots: Vec<SandboxRoot>,
    registry: Arc<Registry>,
    stats: Arc<DiscoveryStats>,
    full_rescan: Duration,
) {
    let (tx, mut rx) = mpsc::channel::<PathBuf>(EVENT_QUEUE);
    let lost = Arc::new(AtomicBool::new(false));
    let lost_in_cb = lost.clone();
    let watcher = notify::recommended_watcher(move |res| on_event(res, &tx, &lost_in_cb));
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            // Without inotify the rescan alone still works, only slower.
            tracing::error!(error = %e, "cannot create inotify watcher; relying on periodic rescans");
            None
        }
    };
    let mut d = Discovery::new(roots, registry, stats, watcher);
    d.scan_all();
    d.stats.initial_scan_done.store(true, Ordering::Release);

    let mut root_poll = tokio::time::interval(ROOT_POLL.min(full_rescan));
    root_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_full = tokio::time::Instant::now();
    loop {
        tokio::select! {
            Some(path) = rx.recv() => d.handle_path(&path),
            _ = root_poll.tick() => {
                let overflowed = lost.swap(false, Ordering::Relaxed);
                if d.on_tick(overflowed, last_full.elapsed() >= full_rescan) {
                    last_full = tokio::time::Instant::now();
                }
            }
        }
    }
}

/// What the watcher's callback does with one notification: its paths go
/// to the queue; an overflow (inotify's rescan flag, an error, a full
/// queue) marks events lost, so the next tick rescans every folder.
fn on_event(res: notify::Result<notify::Event>, tx: &mpsc::Sender<PathBuf>, lost: &AtomicBool) {
    let event = match res {
        Ok(event) => event,
        Err(_) => return lost.store(true, Ordering::Relaxed),
    };
    // Opening or reading a folder is no change; and our own rescans open
    // the roots, so reacting to it loops forever.
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return;
    }
    if event.need_rescan() {
        lost.store(true, Ordering::Relaxed);
    }
    for path in event.paths {
        if tx.try_send(path).is_err() {
            lost.store(true, Ordering::Relaxed);
        }
    }
}

struct Discovery {
    roots: Vec<SandboxRoot>,
    registry: Arc<Registry>,
    stats: Arc<DiscoveryStats>,
    watcher: Option<notify::RecommendedWatcher>,
    /// Watched roots and the (device, inode) of the folder watched.
    watched_roots: HashMap<PathBuf, (u64, u64)>,
    watched_dirs: HashSet<PathBuf>,
    refused: Refusals,
}

/// Paths refused and why, so each is logged and counted once while it
/// stays as it is; every change is published in the stats' `refused_now`.
struct Refusals {
    paths: HashMap<PathBuf, &'static str>,
    stats: Arc<DiscoveryStats>,
}

impl Refusals {
    /// Publishes zeros: a restarted discovery must not leave the gauge at
    /// the last run's count.
    fn new(stats: Arc<DiscoveryStats>) -> Self {
        let r = Refusals {
            paths: HashMap::new(),
            stats,
        };
        r.publish();
        r
    }

    /// Records `path` as refused for `why`; false if it already was.
    fn insert(&mut self, path: &Path, why: &'static str) -> bool {
        let new = self.paths.insert(path.to_path_buf(), why) != Some(why);
        if new {
            self.publish();
        }
        new
    }

    fn remove(&mut self, path: &Path) {
        if self.paths.remove(path).is_some() {
            self.publish();
        }
    }

    fn forget_under(&mut self, root: &Path) {
        let before = self.paths.len();
        self.paths.retain(|p, _| !p.starts_with(root));
        if self.paths.len() != before {
            self.publish();
        }
    }

    /// Only on a change: whoever can write the roots decides how many
    /// refusals there are, and a rescan re-evaluates each.
    fn publish(&self) {
        let mut counts = [0u64; 3];
        for why in self.paths.values() {
            if let Some(i) = REFUSAL_REASONS.iter().position(|r| r == why) {
                counts[i] += 1;
            }
        }
        for (now, n) in self.stats.refused_now.iter().zip(counts) {
            now.store(n, Ordering::Relaxed);
        }
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Discovery {
    fn new(
        roots: Vec<SandboxRoot>,
        registry: Arc<Registry>,
        stats: Arc<DiscoveryStats>,
        watcher: Option<notify::RecommendedWatcher>,
    ) -> Self {
        Discovery {
            roots,
            registry,
            refused: Refusals::new(stats.clone()),
            stats,
            watcher,
            watched_roots: HashMap::new(),
            watched_dirs: HashSet::new(),
        }
    }

    /// One tick of the root poll: a full rescan after lost events, when
    /// one is due or without inotify (true then), else a look at the roots.
    fn on_tick(&mut self, overflowed: bool, full_due: bool) -> bool {
        if overflowed || full_due || self.watcher.is_none() {
            if overflowed {
                tracing::warn!("inotify events were lost; rescanning sandbox folders");
            }
            self.scan_all();
            true
        } else {
            self.check_roots();
            false
        }
    }

    fn scan_all(&mut self) {
        self.stats.rescans.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.roots.len() {
            self.scan_root(i);
        }
    }

    /// Picks up roots that appeared, vanished or were replaced by another
    /// folder at the same path since the last look.
    fn check_roots(&mut self) {
        for i in 0..self.roots.len() {
            let path = self.roots[i].path.clone();
            let now = identity(&path);
            match (self.watched_roots.get(&path).copied(), now) {
                (Some(old), Some(new)) if old == new => {}
                (Some(_), _) => {
                    self.unwatch_root(&path);
                    self.scan_root(i);
                }
                (None, _) => self.scan_root(i),
            }
        }
    }

    fn unwatch_root(&mut self, root: &Path) {
        if self.watched_roots.remove(root).is_some() {
            if let Some(w) = self.watcher.as_mut() {
                let _ = w.unwatch(root);
            }
        }
    }

    /// Brings the registry in line with one root's folder listing.
    fn scan_root(&mut self, idx: usize) {
        self.stats.root_scans.fetch_add(1, Ordering::Relaxed);
        let root = self.roots[idx].clone();
        let entries = match std::fs::read_dir(&root.path) {
            Ok(entries) => entries,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                // No sandbox of that runtime (yet), or the folder went away.
                let was_watched = self.forget_root(&root.path);
                if self.stats.set_missing(&root.path, true) && !was_watched {
                    tracing::info!(root = %root.path.display(), "sandbox folder not present yet; watching for it");
                }
                return;
            }
            Err(e) => {
                // A passing error (out of file descriptors ...) says nothing
                // about the sandboxes: keep what is known, try again later.
                self.stats.watch_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(root = %root.path.display(), error = %e, "cannot list sandbox folder; keeping what was known");
                return;
            }
        };
        if self.stats.set_missing(&root.path, false) {
            tracing::info!(root = %root.path.display(), "sandbox folder appeared; watching it");
        }
        if !self.watched_roots.contains_key(&root.path) && self.watch(&root.path) {
            if let Some(id) = identity(&root.path) {
                self.watched_roots.insert(root.path.clone(), id);
            }
            tracing::debug!(root = %root.path.display(), "watching sandbox folder");
        }
        let mut seen = HashSet::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            seen.insert(name.clone());
            self.evaluate(&root, &name);
        }
        // What is known under this root but no longer listed: sandboxes,
        // watched folders and refusals (a rescan without inotify must drop
        // those too, or they would outlive their entries).
        let id_of = |p: &Path| {
            let rel = p.strip_prefix(&root.path).ok()?;
            rel.components()
                .next()?
                .as_os_str()
                .to_str()
                .map(String::from)
        };
        let mut gone: BTreeSet<String> =
            self.registry.ids_in_root(&root.path).into_iter().collect();
        gone.extend(self.watched_dirs.iter().filter_map(|d| id_of(d)));
        gone.extend(self.refused.paths.keys().filter_map(|p| id_of(p)));
        for id in gone {
            if !seen.contains(&id) {
                self.evaluate(&root, &id);
            }
        }
    }

    /// A root vanished: its sandboxes are gone too. True when it was watched.
    fn forget_root(&mut self, root: &Path) -> bool {
        let watched = self.watched_roots.contains_key(root);
        if watched {
            tracing::warn!(root = %root.display(), "sandbox folder removed; will pick it up again when it reappears");
            self.unwatch_root(root);
        }
        for id in self.registry.ids_in_root(root) {
            self.remove(root, &id);
        }
        self.watched_dirs.retain(|d| !d.starts_with(root));
        self.refused.forget_under(root);
        watched
    }

    fn handle_path(&mut self, path: &Path) {
        let Some(root) = self
            .roots
            .iter()
            .find(|r| path.starts_with(&r.path))
            .cloned()
        else {
            return;
        };
        let Ok(rel) = path.strip_prefix(&root.path) else {
            return;
        };
        match rel.components().next() {
            None => {
                // The root itself changed (deleted, moved). Its watch
                // belongs to the old folder even if a new one already
                // stands at the same path: watch and list it afresh.
                self.unwatch_root(&root.path);
                if let Some(i) = self.roots.iter().position(|r| r.path == root.path) {
                    self.scan_root(i);
                }
            }
            Some(first) => {
                if let Some(id) = first.as_os_str().to_str() {
                    let id = id.to_string();
                    // An event on the folder itself (made, removed, moved):
                    // what stands there now may be another folder than the
                    // one watched (removed and made again, its inode number
                    // reused), so it is watched afresh.
                    if rel.components().count() == 1 {
                        self.watched_dirs.remove(&root.path.join(&id));
                    }
                    self.evaluate(&root, &id);
                }
            }
        }
    }

    /// Decides whether `<root>/<id>` is a sandbox right now.
    fn evaluate(&mut self, root: &SandboxRoot, id: &str) {
        if sandbox_id::validate(id).is_err() {
            return;
        }
        let dir = root.path.join(id);
        let kind = std::fs::symlink_metadata(&dir).map(|m| m.file_type());
        let is_dir = kind.as_ref().is_ok_and(|k| k.is_dir());
        if !is_dir {
            self.watched_dirs.remove(&dir);
            self.refused.remove(&dir.join(SHIM_SOCKET));
            if kind.is_ok_and(|k| k.is_symlink()) {
                self.refuse(&dir, id, "symlink");
            } else {
                self.refused.remove(&dir);
            }
            self.remove(&root.path, id);
            return;
        }
        self.refused.remove(&dir);
        // Watch the folder so the socket appearing or vanishing is seen.
        if !self.watched_dirs.contains(&dir) && self.watch(&dir) {
            self.watched_dirs.insert(dir.clone());
        }
        let socket = dir.join(SHIM_SOCKET);
        let has_socket = match std::fs::symlink_metadata(&socket) {
            Err(_) => {
                self.refused.remove(&socket);
                false
            }
            Ok(m) => match shim_socket::refusal(&m) {
                None => true,
                Some(why) => {
                    self.refuse(&socket, id, why);
                    false
                }
            },
        };
        if has_socket {
            self.refused.remove(&socket);
            let sandbox = Sandbox {
                id: id.to_string(),
                root: root.path.clone(),
                socket,
                runtime: root.runtime,
                discovered_at: SystemTime::now(),
            };
            if self.registry.insert(sandbox) {
                self.stats.added.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    sandbox_id = id,
                    runtime = root.runtime.as_str(),
                    "sandbox added"
                );
            }
        } else {
            self.remove(&root.path, id);
        }
    }

    /// Logs and counts `path` as refused, once while the reason holds.
    fn refuse(&mut self, path: &Path, id: &str, why: &'static str) {
        if !self.refused.insert(path, why) {
            return;
        }
        if let Some(i) = REFUSAL_REASONS.iter().position(|r| *r == why) {
            self.stats.refused_total[i].fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(sandbox_id = id, path = %path.display(), reason = why,
            "not a sandbox: the agent connects to no symlink, hard link or non-socket");
    }

    fn remove(&mut self, root: &Path, id: &str) {
        if self.registry.remove_from_root(id, root).is_some() {
            self.stats.removed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(sandbox_id = id, "sandbox removed");
        }
    }

    fn watch(&mut self, path: &Path) -> bool {
        let Some(w) = self.watcher.as_mut() else {
            return false;
        };
        match w.watch(path, RecursiveMode::NonRecursive) {
            Ok(()) => true,
            Err(e) => {
                self.stats.watch_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(path = %path.display(), error = %e, "cannot watch folder; rescans cover it");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RuntimeKind;
    use std::os::unix::net::UnixListener;

    async fn wait_for(registry: &Registry, want: &[&str]) {
        for _ in 0..200 {
            let ids: Vec<String> = registry.list().iter().map(|s| s.id.clone()).collect();
            if ids == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ids: Vec<String> = registry.list().iter().map(|s| s.id.clone()).collect();
        panic!("registry has {ids:?}, wanted {want:?}");
    }

    fn make_sandbox(root: &Path, id: &str) -> UnixListener {
        std::fs::create_dir_all(root.join(id)).unwrap();
        UnixListener::bind(root.join(id).join(SHIM_SOCKET)).unwrap()
    }

    /// An overflow seen by the callback (inotify's rescan flag) makes the
    /// next tick a full rescan, which finds what the lost events said.
    #[test]
    fn an_overflow_event_leads_to_a_full_rescan() {
        let (tx, mut rx) = mpsc::channel(1);
        let lost = AtomicBool::new(false);
        let access = notify::Event::new(notify::EventKind::Access(notify::event::AccessKind::Any))
            .add_path("/r/a".into());
        on_event(Ok(access), &tx, &lost);
        assert!(rx.try_recv().is_err() && !lost.load(Ordering::Relaxed));
        let overflow =
            notify::Event::new(notify::EventKind::Other).set_flag(notify::event::Flag::Rescan);
        on_event(Ok(overflow), &tx, &lost);
        assert!(lost.swap(false, Ordering::Relaxed), "overflow not noticed");
        // A full queue loses events too.
        let create = |p: &str| {
            notify::Event::new(notify::EventKind::Create(notify::event::CreateKind::Any))
                .add_path(p.into())
        };
        on_event(Ok(create("/r/b")), &tx, &lost);
        assert!(!lost.load(Ordering::Relaxed));
        on_event(Ok(create("/r/c")), &tx, &lost);
        assert!(lost.load(Ordering::Relaxed), "a full queue not noticed");

        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("vc/sbs");
        std::fs::create_dir_all(&root).unwrap();
        let stats = Arc::new(DiscoveryStats::default());
        // A watcher whose events go nowhere: as if all were lost.
        let mut d = Discovery::new(
            vec![SandboxRoot {
                path: root.clone(),
                runtime: RuntimeKind::Go,
            }],
            Registry::new(),
            stats.clone(),
            notify::recommended_watcher(|_: notify::Result<notify::Event>| {}).ok(),
        );
        d.scan_all();
        let _a = make_sandbox(&root, "aaa");
        assert!(!d.on_tick(false, false), "a quiet tick rescanned");
        assert!(d.registry.list().is_empty());
        assert!(d.on_tick(true, false), "no rescan after an overflow");
        assert_eq!(stats.rescans.load(Ordering::Relaxed), 2);
        assert_eq!(
            d.registry.list().len(),
            1,
            "the rescan did not find the sandbox"
        );
    }

    /// Only real sockets in real folders are sandboxes: a symlinked folder
    /// or socket (here to another socket, as it could be to the CRI's), a
    /// hard link and a FIFO are refused, logged and counted once however
    /// often they are rescanned; a 128-character id under a long root
    /// (its socket path past the 108-byte unix limit) is a sandbox.
    #[test]
    fn links_and_non_sockets_are_refused_long_ids_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r".repeat(60)).join("vc/sbs");
        std::fs::create_dir_all(&root).unwrap();
        let elsewhere = tmp.path().join("cri");
        std::fs::create_dir(&elsewhere).unwrap();
        let _cri = UnixListener::bind(elsewhere.join("cri.sock")).unwrap();

        let _good = make_sandbox(&root, "good");
        std::fs::create_dir(root.join("symsock")).unwrap();
        std::os::unix::fs::symlink(
            elsewhere.join("cri.sock"),
            root.join("symsock").join(SHIM_SOCKET),
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("good"), root.join("symdir")).unwrap();
        std::fs::create_dir(root.join("hard")).unwrap();
        std::fs::hard_link(
            elsewhere.join("cri.sock"),
            root.join("hard").join(SHIM_SOCKET),
        )
        .unwrap();
        std::fs::create_dir(root.join("file")).unwrap();
        std::fs::write(root.join("file").join(SHIM_SOCKET), b"").unwrap();
        let long_id = "l".repeat(sandbox_id::MAX_LEN);
        std::fs::create_dir(root.join(&long_id)).unwrap();
        let folder = std::fs::File::open(root.join(&long_id)).unwrap();
        let _long = UnixListener::bind(format!(
            "/proc/self/fd/{}/{SHIM_SOCKET}",
            std::os::fd::AsRawFd::as_raw_fd(&folder)
        ))
        .unwrap();
        assert!(root.join(&long_id).join(SHIM_SOCKET).as_os_str().len() > 108);

        let stats = Arc::new(DiscoveryStats::default());
        let mut d = Discovery::new(
            vec![SandboxRoot {
                path: root.clone(),
                runtime: RuntimeKind::Go,
            }],
            Registry::new(),
            stats.clone(),
            None,
        );
        for _ in 0..3 {
            d.scan_all();
        }
        let ids: Vec<String> = d.registry.list().iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids, vec!["good".to_string(), long_id]);
        // Both by reason: hard link, non-socket, symlink.
        let counts = |s: &DiscoveryStats| {
            s.refused_total
                .each_ref()
                .map(|n| n.load(Ordering::Relaxed))
        };
        assert_eq!(counts(&stats), [1, 1, 2]);
        let now = |s: &DiscoveryStats| s.refused_now.each_ref().map(|n| n.load(Ordering::Relaxed));
        assert_eq!(now(&stats), [1, 1, 2]);

        // Put right, then wrong again: counted anew.
        std::fs::remove_file(root.join("hard").join(SHIM_SOCKET)).unwrap();
        let _fixed = UnixListener::bind(root.join("hard").join(SHIM_SOCKET)).unwrap();
        d.scan_all();
        assert!(d.registry.get("hard").is_some());
        assert_eq!(now(&stats), [0, 1, 2]);
        std::fs::remove_file(root.join("hard").join(SHIM_SOCKET)).unwrap();
        std::fs::hard_link(
            elsewhere.join("cri.sock"),
            root.join("hard").join(SHIM_SOCKET),
        )
        .unwrap();
        d.scan_all();
        assert!(d.registry.get("hard").is_none());
        assert_eq!(counts(&stats), [2, 1, 2]);

        // Gone: no longer refused, though still counted.
        std::fs::remove_file(root.join("symdir")).unwrap();
        std::fs::remove_dir_all(root.join("file")).unwrap();
        d.scan_all();
        assert_eq!(now(&stats), [1, 0, 1]);
        assert_eq!(counts(&stats), [2, 1, 2]);
        // A refused socket removed, its folder left: no longer refused.
        std::fs::remove_file(root.join("hard").join(SHIM_SOCKET)).unwrap();
        d.scan_all();
        assert_eq!(now(&stats), [0, 0, 1]);
        // A restarted discovery starts from what it finds, not the last count.
        drop(d);
        let _fresh = Refusals::new(stats.clone());
        assert_eq!(now(&stats), [0, 0, 0]);
    }

    /// A sandbox folder removed and made again before its events are read
    /// is the same path but another folder (ext4 even reuses its inode
    /// number): it is watched again, so its socket appearing is seen at
    /// once, not at the next rescan.
    #[test]
    fn a_folder_made_again_is_watched_again() {
        fn recv(rx: &std::sync::mpsc::Receiver<PathBuf>) -> PathBuf {
            rx.recv_timeout(Duration::from_secs(2)).expect("an event")
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("vc/sbs");
        std::fs::create_dir_all(&root).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            for p in res.map(|e| e.paths).unwrap_or_default() {
                let _ = tx.send(p);
            }
        })
        .unwrap();
        let stats = Arc::new(DiscoveryStats::default());
        let mut d = Discovery::new(
            vec![SandboxRoot {
                path: root.clone(),
                runtime: RuntimeKind::Go,
            }],
            Registry::new(),
            stats.clone(),
            Some(watcher),
        );
        d.scan_all();
        std::fs::create_dir(root.join("again")).unwrap();
        d.handle_path(&recv(&rx));
        std::fs::remove_dir(root.join("again")).unwrap();
        std::fs::create_dir(root.join("again")).unwrap();
        // The events of both, read only now.
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(path) = rx.try_recv() {
            d.handle_path(&path);
        }
        let socket = root.join("again").join(SHIM_SOCKET);
        let _shim = UnixListener::bind(&socket).unwrap();
        let seen = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(2)).ok())
            .any(|p| p == socket);
        assert!(seen, "no event for the socket in the folder made again");
    }

    /// Rescans open the watched roots; that must not feed back into more
    /// scans (it once did: a busy loop after the first periodic rescan).
    #[tokio::test]
    async fn rescans_do_not_trigger_themselves() {
        let tmp = tempfile::tempdir().unwrap();
        let go = tmp.path().join("vc/sbs");
        std::fs::create_dir_all(&go).unwrap();
        let _a = make_sandbox(&go, "aaa");
        let registry = Registry::new();
        let stats = Arc::new(DiscoveryStats::default());
        let roots = vec![SandboxRoot {
            path: go.clone(),
            runtime: RuntimeKind::Go,
        }];
        let task = tokio::spawn(run_with_rescan(
            roots,
            registry.clone(),
            stats.clone(),
            Duration::from_millis(100),
        ));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        task.abort();
        let rescans = stats.rescans.load(Ordering::Relaxed);
        let root_scans = stats.root_scans.load(Ordering::Relaxed);
        assert!(rescans >= 5, "periodic rescans did not run ({rescans})");
        // One listing per full rescan (one root), nothing else.
        assert!(
            root_scans <= rescans + 1,
            "{root_scans} root listings for {rescans} rescans"
        );
        assert_eq!(registry.list().len(), 1);
    }

    #[tokio::test]
    async fn add_remove_and_late_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let go = tmp.path().join("vc/sbs");
        let rs = tmp.path().join("kata");
        std::fs::create_dir_all(&go).unwrap();
        let _a = make_sandbox(&go, "aaa");
        // Not sandboxes: a plain file, a folder without socket, a bad id.
        std::fs::write(go.join("file"), b"x").unwrap();
        std::fs::create_dir_all(go.join("nosocket")).unwrap();
        std::fs::create_dir_all(go.join(".hidden")).unwrap();

        let registry = Registry::new();
        let stats = Arc::new(DiscoveryStats::default());
        let roots = vec![
            SandboxRoot {
                path: go.clone(),
                runtime: RuntimeKind::Go,
            },
            SandboxRoot {
                path: rs.clone(),
                runtime: RuntimeKind::RuntimeRs,
            },
        ];
        let task = tokio::spawn(run(roots, registry.clone(), stats.clone()));
        wait_for(&registry, &["aaa"]).await;
        assert!(stats.initial_scan_done.load(Ordering::Acquire));

        // A socket appearing in an existing folder makes it a sandbox.
        let _n = UnixListener::bind(go.join("nosocket").join(SHIM_SOCKET)).unwrap();
        wait_for(&registry, &["aaa", "nosocket"]).await;

        // A root created after start is picked up within seconds, and a
        // jail folder without socket (runtime-rs firecracker) is not a sandbox.
        std::fs::create_dir_all(rs.join("firecracker/xyz")).unwrap();
        let _b = make_sandbox(&rs, "bbb");
        wait_for(&registry, &["aaa", "bbb", "nosocket"]).await;
        assert_eq!(registry.get("bbb").unwrap().runtime, RuntimeKind::RuntimeRs);

        // Removal is immediate, whether the folder or only the socket goes.
        std::fs::remove_dir_all(go.join("aaa")).unwrap();
        std::fs::remove_file(go.join("nosocket").join(SHIM_SOCKET)).unwrap();
        wait_for(&registry, &["bbb"]).await;

        // Deleting a whole root drops its sandboxes; re-creating it is seen.
        std::fs::remove_dir_all(&rs).unwrap();
        wait_for(&registry, &[]).await;
        let _c = make_sandbox(&rs, "ccc");
        wait_for(&registry, &["ccc"]).await;
        task.abort();
    }
}
