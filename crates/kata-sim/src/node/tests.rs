use std::sync::Arc;
use std::time::Duration;

use cri_api::runtime::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use cri_api::runtime::v1::{
    CreateContainerRequest, CreateContainerResponse, RemovePodSandboxRequest,
    RemovePodSandboxResponse, RunPodSandboxRequest, RunPodSandboxResponse, StartContainerRequest,
    StartContainerResponse, StopPodSandboxRequest, StopPodSandboxResponse,
};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use super::*;
use testbed::shim_get;

fn opts(dir: &tempfile::TempDir, go: usize, rs: usize) -> NodeOptions {
    NodeOptions {
        go_root: dir.path().join("vc/sbs"),
        rs_root: dir.path().join("kata"),
        go,
        rs,
        seed: Some(1),
        ..Default::default()
    }
}

fn drain(rx: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test]
async fn start_add_remove() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(opts(&dir, 2, 3)).await.unwrap();
    let mut rx = node.subscribe();
    let list = node.list().await;
    assert_eq!(list.len(), 5);
    for (i, s) in list.iter().enumerate() {
        assert_eq!(s.index, i);
        assert!(ids::is_hex_id(&s.id));
        let want = if i < 2 {
            Flavour::Go
        } else {
            Flavour::RuntimeRs
        };
        assert_eq!(s.layout, want);
        assert_eq!(s.dir, node.inner.root(want).join(&s.id));
        assert_eq!(s.socket, s.dir.join("shim-monitor.sock"));
        assert_eq!(shim_get(&s.socket, "/metrics").await.unwrap().status, 200);
    }
    let events = drain(&mut rx);
    assert_eq!(events.len(), 6);
    assert!(matches!(events[5], Event::Ready { sandboxes: 5 }));
    let json = events[0].to_json();
    assert_eq!(json["event"], "added");
    assert_eq!(json["layout"], "go");
    assert_eq!(json["sandbox_id"], list[0].id.as_str());
    assert!(json["pod_uid"].is_null());

    let gone = node.remove_sandbox(&list[3].id).await.unwrap();
    assert!(!gone.dir.exists(), "directory removed at once");
    assert!(matches!(drain(&mut rx).as_slice(), [Event::Removed(s)] if s.id == gone.id));
    let added = node.add_sandbox(Flavour::Go, Fault::None).await.unwrap();
    assert_eq!(added.index, 5);
    assert!(added.socket.exists());
    assert_eq!(node.list().await.len(), 5);
    assert!(node.remove_sandbox("nope").await.is_err());

    let dirs: Vec<PathBuf> = node.list().await.into_iter().map(|s| s.dir).collect();
    node.shutdown().await.unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
}

#[tokio::test]
async fn same_seed_same_ids() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Node::start(opts(&d1, 1, 1)).await.unwrap();
    let b = Node::start(opts(&d2, 1, 1)).await.unwrap();
    let ids = |l: Vec<SandboxInfo>| l.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(a.list().await), ids(b.list().await));
}

#[tokio::test]
async fn faults_by_index_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&dir, 2, 1);
    o.faults = vec![
        "0=missing-socket".parse().unwrap(),
        "2=http500".parse().unwrap(),
    ];
    let node = Node::start(o).await.unwrap();
    let l = node.list().await;
    assert!(l[0].dir.is_dir() && !l[0].socket.exists());
    assert_eq!(l[0].fault, Fault::MissingSocket);
    assert_eq!(
        shim_get(&l[2].socket, "/metrics").await.unwrap().status,
        500
    );
    // Runtime flips.
    node.set_fault(&l[1].id, Fault::Hang).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        shim_get(&l[1].socket, "/metrics"),
    )
    .await;
    assert!(r.is_err());
    node.set_fault(&l[0].id, Fault::None).await.unwrap();
    assert_eq!(
        shim_get(&l[0].socket, "/metrics").await.unwrap().status,
        200
    );
    assert_eq!(node.shim_counters(&l[0].id).await, Some((1, 1)));
    shim_get(&l[0].socket, "/metrics").await.unwrap();
    shim_get(&l[0].socket, "/nope").await.unwrap();
    let counts = node.shim_counts().await;
    let ids: Vec<&str> = l.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(counts.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ids);
    // The 404 is a request but no scrape; the hanging shim read its request.
    let numbers: Vec<(u64, u64)> = counts.iter().map(|c| (c.1, c.2)).collect();
    assert_eq!(numbers, vec![(3, 2), (1, 0), (1, 0)]);
    assert_eq!(
        node.resolve(&SandboxSelector::Index(2)).await.as_deref(),
        Some(l[2].id.as_str())
    );

    // Selecting by ID works with a known seed.
    let dir2 = tempfile::tempdir().unwrap();
    let mut o = opts(&dir2, 2, 1);
    o.faults = vec![format!("{}=garbage", l[1].id).parse().unwrap()];
    let node2 = Node::start(o).await.unwrap();
    assert_eq!(node2.list().await[1].fault, Fault::Garbage);

    let mut bad = opts(&dir2, 1, 0);
    bad.faults = vec!["5=hang".parse().unwrap()];
    assert!(Node::start(bad).await.is_err());
    let mut bad = opts(&dir2, 1, 0);
    bad.faults = vec!["feed=hang".parse().unwrap()];
    assert!(Node::start(bad).await.is_err());
}

/// On paused time: churn is paced by tokio timers, so the 800 ms pass at once.
#[tokio::test(start_paused = true)]
async fn churn_keeps_count_and_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&dir, 2, 2);
    o.churn_per_min = 1200.0;
    o.faults = vec!["1=slow=1s".parse().unwrap()];
    let node = Node::start(o).await.unwrap();
    let mut rx = node.subscribe();
    let before = node.list().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = node.list().await;
    assert_eq!(after.len(), 4);
    let go = after.iter().filter(|s| s.layout == Flavour::Go).count();
    assert_eq!(go, 2);
    assert!(
        after.iter().any(|s| s.id == before[1].id),
        "pinned sandbox survives"
    );
    let replaced = before
        .iter()
        .filter(|b| !after.iter().any(|a| a.id == b.id))
        .count();
    assert!(replaced >= 2, "churn replaced {replaced}");
    let events = drain(&mut rx);
    let removed = events
        .iter()
        .filter(|e| matches!(e, Event::Removed(_)))
        .count();
    let added = events
        .iter()
        .filter(|e| matches!(e, Event::Added(_)))
        .count();
    assert!(
        removed >= 3 && added >= 4 + 3,
        "{removed} removed, {added} added"
    );
    for s in &after {
        assert!(s.socket.exists());
    }
    // Every removed sandbox's directory is gone.
    for e in &events {
        if let Event::Removed(s) = e {
            assert!(!s.dir.exists());
        }
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn drop_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(opts(&dir, 1, 1)).await.unwrap();
    let dirs: Vec<PathBuf> = node.list().await.into_iter().map(|s| s.dir).collect();
    drop(node);
    assert!(dirs.iter().all(|d| !d.exists()));
}

/// Records CRI calls; pod IDs are handed out like containerd's.
#[derive(Default)]
struct FakeCri {
    calls: Arc<StdMutex<Vec<String>>>,
    runs: Arc<StdMutex<Vec<RunPodSandboxRequest>>>,
    counter: AtomicUsize,
}

#[tonic::async_trait]
impl RuntimeService for FakeCri {
    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let id = format!("{n:064x}");
        self.calls.lock().unwrap().push(format!("run {id}"));
        self.runs.lock().unwrap().push(req.into_inner());
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id: id }))
    }
    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        self.calls.lock().unwrap().push(format!("stop {id}"));
        Ok(Response::new(StopPodSandboxResponse {}))
    }
    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        self.calls.lock().unwrap().push(format!("remove {id}"));
        Ok(Response::new(RemovePodSandboxResponse {}))
    }
    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let r = req.into_inner();
        let image = r
            .config
            .and_then(|c| c.image)
            .map(|i| i.image)
            .unwrap_or_default();
        self.calls
            .lock()
            .unwrap()
            .push(format!("create {} {image}", r.pod_sandbox_id));
        Ok(Response::new(CreateContainerResponse {
            container_id: format!("ctr-{}", self.counter.fetch_add(1, Ordering::SeqCst)),
        }))
    }
    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        self.calls.lock().unwrap().push(format!("start {id}"));
        Ok(Response::new(StartContainerResponse {}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_mode_creates_and_removes_pods() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("cri.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let fake = FakeCri::default();
    let (calls, runs) = (fake.calls.clone(), fake.runs.clone());
    tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(
        RuntimeServiceServer::new(fake),
        UnixListenerStream::new(listener),
    ));
    let mut o = opts(&dir, 1, 1);
    let mut cri = CriOptions::new(format!("unix://{}", sock.display()));
    cri.containers_per_pod = 2;
    cri.container_image = Some("registry.k8s.io/pause:3.10".into());
    cri.namespace = "ns1".into();
    cri.call_timeout = Duration::from_secs(5);
    o.cri = Some(cri);
    let node = Node::start(o).await.unwrap();
    let list = node.list().await;
    assert_eq!(list[0].id, format!("{:064x}", 0));
    let pod = list[0].pod.clone().unwrap();
    assert_eq!(
        (pod.name.as_str(), pod.namespace.as_str()),
        ("kata-sim-0", "ns1")
    );
    assert_eq!(pod.uid.len(), 36);
    {
        let runs = runs.lock().unwrap();
        let r = &runs[1];
        assert_eq!(r.runtime_handler, "kata");
        let cfg = r.config.as_ref().unwrap();
        let md = cfg.metadata.as_ref().unwrap();
        assert_eq!((md.name.as_str(), md.attempt), ("kata-sim-1", 0));
        assert_eq!(
            cfg.hostname, "",
            "host-network pods must not set a hostname"
        );
        assert!(Path::new(&cfg.log_directory).is_dir());
        let net = cfg
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map(|n| n.network);
        assert_eq!(net, Some(cri_api::runtime::v1::NamespaceMode::Node as i32));
    }
    let created = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.starts_with("create"))
        .count();
    assert_eq!(created, 4);
    assert!(calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.ends_with("pause:3.10")));
    let json = Event::Added(list[1].clone()).to_json();
    assert_eq!(json["pod_name"], "kata-sim-1");
    assert_eq!(json["pod_namespace"], "ns1");

    node.remove_sandbox(&list[0].id).await.unwrap();
    let c = calls.lock().unwrap().clone();
    let stop = c
        .iter()
        .position(|x| x == &format!("stop {}", list[0].id))
        .unwrap();
    let remove = c
        .iter()
        .position(|x| x == &format!("remove {}", list[0].id))
        .unwrap();
    assert!(stop < remove);
    // Drop cleans up the remaining pod through its own runtime thread.
    drop(node);
    assert!(calls
        .lock()
        .unwrap()
        .contains(&format!("remove {}", list[1].id)));
}
