//! The node's current sandboxes and what CRI says about them.
//!
//! Discovery writes sandboxes, the CRI labeller writes pod metadata, the
//! collector and the HTTP handlers read both. Two small maps behind std
//! locks held only for copies of `Arc`s: no reader ever waits on I/O, and no
//! reader ever sees "no labels" because a writer happened to be busy.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::cri::PodMeta;

/// Which runtime lays sandboxes out under a root (reported, not needed to scrape).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuntimeKind {
    /// The Go runtime (`containerd-shim-kata-v2`), `/run/vc/sbs/<id>`.
    Go,
    /// runtime-rs, `/run/kata/<id>`.
    RuntimeRs,
    Unknown,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Go => "go",
            RuntimeKind::RuntimeRs => "runtime-rs",
            RuntimeKind::Unknown => "unknown",
        }
    }
}

/// A folder to watch for sandboxes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxRoot {
    pub path: PathBuf,
    pub runtime: RuntimeKind,
}

/// Name of the shim's monitor socket inside a sandbox folder.
pub const SHIM_SOCKET: &str = "shim-monitor.sock";

/// A discovered sandbox: a valid id with a shim socket in one of the roots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub runtime: RuntimeKind,
    pub discovered_at: SystemTime,
}

#[derive(Default)]
pub struct Registry {
    sandboxes: RwLock<BTreeMap<String, Arc<Sandbox>>>,
    meta: RwLock<HashMap<String, Arc<PodMeta>>>,
    /// Wakes the CRI labeller when a sandbox without metadata appears.
    unlabelled: Notify,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Adds a sandbox; false if one with this id is already known.
    pub fn insert(&self, sandbox: Sandbox) -> bool {
        let id = sandbox.id.clone();
        let added = {
            let mut map = write(&self.sandboxes);
            if map.contains_key(&id) {
                false
            } else {
                map.insert(id.clone(), Arc::new(sandbox));
                true
            }
        };
        if added && !read(&self.meta).contains_key(&id) {
            self.unlabelled.notify_one();
        }
        added
    }

    /// Removes a sandbox if it was discovered under `root`.
    pub fn remove_from_root(&self, id: &str, root: &Path) -> Option<Arc<Sandbox>> {
        let removed = {
            let mut map = write(&self.sandboxes);
            match map.get(id) {
                Some(s) if s.root == root => map.remove(id),
                _ => None,
            }
        };
        if removed.is_some() {
            write(&self.meta).remove(id);
        }
        removed
    }

    /// Ids of the sandboxes discovered under `root`.
    pub fn ids_in_root(&self, root: &Path) -> Vec<String> {
        read(&self.sandboxes)
            .values()
            .filter(|s| s.root == root)
            .map(|s| s.id.clone())
            .collect()
    }

    /// All sandboxes, sorted by id (the order of every output).
    pub fn list(&self) -> Vec<Arc<Sandbox>> {
        read(&self.sandboxes).values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Sandbox>> {
        read(&self.sandboxes).get(id).cloned()
    }

    pub fn meta(&self, id: &str) -> Option<Arc<PodMeta>> {
        read(&self.meta).get(id).cloned()
    }

    /// Replaces the metadata with CRI's current answer, keeping only pods
    /// that are discovered sandboxes. Returns the ids whose metadata changed.
    pub fn apply_cri(&self, pods: HashMap<String, PodMeta>) -> Vec<String> {
        // One lock at a time, never nested: nested read/write locks taken in
        // different orders by different tasks can deadlock.
        let discovered: std::collections::HashSet<String> =
            read(&self.sandboxes).keys().cloned().collect();
        let mut meta = write(&self.meta);
        let mut changed = Vec::new();
        let mut next: HashMap<String, Arc<PodMeta>> = HashMap::with_capacity(discovered.len());
        for (id, pod) in pods {
            if !discovered.contains(&id) {
                continue;
            }
            match meta.get(&id) {
                Some(old) if **old == pod => {
                    next.insert(id, old.clone());
                }
                _ => {
                    changed.push(id.clone());
                    next.insert(id, Arc::new(pod));
                }
            }
        }
        changed.extend(meta.keys().filter(|id| !next.contains_key(*id)).cloned());
        *meta = next;
        changed
    }

    /// Discovered sandboxes CRI has not described yet.
    pub fn unlabelled_ids(&self) -> Vec<String> {
        let ids: Vec<String> = read(&self.sandboxes).keys().cloned().collect();
        let meta = read(&self.meta);
        ids.into_iter()
            .filter(|id| !meta.contains_key(id))
            .collect()
    }

    /// Resolves when a sandbox without metadata was added.
    pub async fn wait_unlabelled(&self) {
        self.unlabelled.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(id: &str, root: &str) -> Sandbox {
        Sandbox {
            id: id.into(),
            root: root.into(),
            socket: PathBuf::from(root).join(id).join(SHIM_SOCKET),
            runtime: RuntimeKind::Go,
            discovered_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn pod(name: &str) -> PodMeta {
        PodMeta {
            uid: format!("uid-{name}"),
            name: name.into(),
            namespace: "ns".into(),
            runtime_handler: "kata".into(),
            ready: true,
        }
    }

    /// kata-monitor's TestSandboxCache, re-expressed: put/delete report
    /// whether they changed anything, metadata is set and read back.
    #[test]
    fn socket_name_is_the_simulators() {
        assert_eq!(SHIM_SOCKET, kata_sim::SOCKET_NAME);
    }

    #[test]
    fn sandbox_cache_semantics() {
        let r = Registry::new();
        assert!(r.insert(sb("111", "/r")));
        assert!(!r.insert(sb("111", "/r")));
        assert!(r.insert(sb("000", "/r")));
        let ids: Vec<String> = r.list().iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids, vec!["000", "111"]);
        assert_eq!(r.unlabelled_ids(), vec!["000", "111"]);

        let changed = r.apply_cri(HashMap::from([
            ("111".to_string(), pod("a")),
            ("999".to_string(), pod("not-kata")),
        ]));
        assert_eq!(changed, vec!["111"]);
        assert_eq!(r.meta("111").unwrap().name, "a");
        assert!(r.meta("999").is_none());
        assert_eq!(r.unlabelled_ids(), vec!["000"]);

        // Same answer again: nothing changed.
        assert!(r
            .apply_cri(HashMap::from([("111".to_string(), pod("a"))]))
            .is_empty());

        assert!(r.remove_from_root("111", Path::new("/other")).is_none());
        assert!(r.remove_from_root("111", Path::new("/r")).is_some());
        assert!(r.remove_from_root("111", Path::new("/r")).is_none());
        assert!(r.meta("111").is_none());
        assert_eq!(r.list().len(), 1);
    }

    #[test]
    fn pod_gone_from_cri_loses_labels() {
        let r = Registry::new();
        r.insert(sb("a", "/r"));
        r.apply_cri(HashMap::from([("a".to_string(), pod("x"))]));
        let changed = r.apply_cri(HashMap::new());
        assert_eq!(changed, vec!["a"]);
        assert!(r.meta("a").is_none());
    }
}
