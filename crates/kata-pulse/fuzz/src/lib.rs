//! The checks of the fuzz targets, kept out of the target files so the
//! seed writer (examples/seeds.rs) and both targets share one definition of
//! the input format.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::Duration;

use cri_api::runtime::v1::{
    ContainerState, ListContainerStatsResponse, ListContainersResponse, ListPodSandboxResponse,
    PodSandboxState,
};
use http_body_util::BodyExt;
use kata_pulse::cri::{self, PodMeta};
use kata_pulse::shim_client::{require_success, ShimClient};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest time one input may take; a finding if it does (the shim closes
/// after its bytes, so every exchange must end).
const HANG: Duration = Duration::from_secs(5);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// An in-memory shim: reads the request head (unless `rude`), sends
/// `answer` in pieces of `piece` bytes, then closes.
fn shim(answer: Vec<u8>, piece: usize, rude: bool) -> tokio::io::DuplexStream {
    let (ours, mut theirs) = tokio::io::duplex(8192);
    tokio::spawn(async move {
        if !rude {
            let mut head = Vec::new();
            let mut buf = [0u8; 256];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match theirs.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
        }
        for chunk in answer.chunks(piece.max(1)) {
            if theirs.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    ours
}

/// Input: byte 0 picks the mode (bit 0: streaming as the debug proxy does,
/// bit 1: the shim does not read the request first) and, with byte 1, the
/// body cap (0 to 4095 bytes); byte 2 the write size; the rest is what the
/// shim sends.
pub fn shim_response(data: &[u8]) {
    let [mode, cap, piece, answer @ ..] = data else {
        return;
    };
    let max = usize::from(mode >> 4) << 8 | usize::from(*cap);
    let streaming = mode & 1 == 1;
    let rude = mode & 2 == 2;
    let client = ShimClient::new(HANG, max);
    let answer = answer.to_vec();
    let piece = usize::from(*piece) + 1;
    runtime().block_on(async move {
        let work = async {
            if streaming {
                check_streaming(&client, shim(answer, piece, rude)).await
            } else {
                check_exchange(&client, shim(answer, piece, rude)).await
            }
        };
        tokio::time::timeout(HANG * 2, work)
            .await
            .expect("the exchange did not end although the shim closed");
    });
}

async fn check_exchange(client: &ShimClient, stream: tokio::io::DuplexStream) {
    let Ok(resp) = client.exchange(stream, "/metrics").await else {
        return;
    };
    assert!(resp.body.len() <= client.max_body, "body over the cap");
    let chunked = resp.headers.contains_key(http::header::TRANSFER_ENCODING);
    let declared = resp
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let bodiless = resp.status.is_informational()
        || resp.status == http::StatusCode::NO_CONTENT
        || resp.status == http::StatusCode::NOT_MODIFIED;
    if let (Some(n), false, false) = (declared, chunked, bodiless) {
        assert_eq!(resp.body.len(), n, "a body unlike its Content-Length");
    }
    let status = resp.status;
    match require_success(resp) {
        Ok(r) => assert!(r.status.is_success()),
        Err(e) => {
            assert!(!status.is_success());
            assert_eq!(e.reason(), "status");
        }
    }
}

async fn check_streaming(client: &ShimClient, stream: tokio::io::DuplexStream) {
    let Ok((resp, task)) = client.open_streaming(stream, "/debug/pprof/heap").await else {
        return;
    };
    let limited = http_body_util::Limited::new(resp.into_body(), client.max_body);
    if let Ok(body) = limited.collect().await {
        assert!(
            body.to_bytes().len() <= client.max_body,
            "body over the cap"
        );
    }
    if let Some(task) = task {
        task.await.expect("the connection task panicked");
    }
}

/// Input: any bytes, decoded as each of the three answers in turn.
pub fn cri_mapping(data: &[u8]) {
    if let Ok(resp) = ListPodSandboxResponse::decode(data) {
        check_pods(resp);
    }
    if let Ok(resp) = ListContainersResponse::decode(data) {
        let kept: Vec<_> = resp
            .containers
            .iter()
            .filter(|c| !c.id.is_empty() && !c.pod_sandbox_id.is_empty())
            .cloned()
            .collect();
        let infos = cri::containers_to_info(resp.containers);
        assert_eq!(infos.len(), kept.len());
        for (info, c) in infos.iter().zip(&kept) {
            assert_eq!(info.id, c.id);
            assert_eq!(info.sandbox_id, c.pod_sandbox_id);
            assert_eq!(info.created_at_ns, c.created_at);
            assert_eq!(
                info.running,
                c.state == ContainerState::ContainerRunning as i32
            );
        }
    }
    if let Ok(resp) = ListContainerStatsResponse::decode(data) {
        let mut last = HashMap::new();
        for s in &resp.stats {
            if let Some(a) = s.attributes.as_ref().filter(|a| !a.id.is_empty()) {
                last.insert(a.id.clone(), s.clone());
            }
        }
        let usage = cri::stats_to_usage(resp.stats);
        assert_eq!(usage.len(), last.len());
        for (id, u) in &usage {
            let s = &last[id];
            let cpu = s
                .cpu
                .as_ref()
                .and_then(|c| c.usage_core_nano_seconds.as_ref());
            assert_eq!(u.cpu_ns, cpu.map(|v| v.value));
            let ws = s.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref());
            assert_eq!(u.working_set, ws.map(|v| v.value));
        }
    }
}

fn check_pods(resp: ListPodSandboxResponse) {
    let eligible: Vec<_> = resp
        .items
        .iter()
        .filter(|p| !p.id.is_empty() && p.metadata.is_some())
        .cloned()
        .collect();
    let ids: HashSet<&str> = eligible.iter().map(|p| p.id.as_str()).collect();
    let meta = cri::pods_to_meta(resp.items);
    assert_eq!(meta.len(), ids.len());
    for (id, m) in &meta {
        let candidates: Vec<PodMeta> = eligible
            .iter()
            .filter(|p| &p.id == id)
            .map(|p| {
                let md = p.metadata.clone().unwrap_or_default();
                PodMeta {
                    uid: md.uid,
                    name: md.name,
                    namespace: md.namespace,
                    runtime_handler: p.runtime_handler.clone(),
                    ready: p.state == PodSandboxState::SandboxReady as i32,
                }
            })
            .collect();
        assert!(candidates.contains(m), "metadata no entry of {id} had");
        assert_eq!(
            m.ready,
            candidates.iter().any(|c| c.ready),
            "a ready entry lost"
        );
    }
    // Into a registry that knows some of those sandboxes: exactly those get
    // metadata, each the mapping's.
    let registry = kata_pulse::registry::Registry::new();
    for id in meta.keys().step_by(2) {
        registry.insert(kata_pulse::registry::Sandbox {
            id: id.clone(),
            root: "/r".into(),
            socket: "/r/x/shim-monitor.sock".into(),
            runtime: kata_pulse::registry::RuntimeKind::Go,
            discovered_at: std::time::SystemTime::UNIX_EPOCH,
        });
    }
    registry.apply_cri(meta.clone());
    for (id, m) in &meta {
        match registry.get(id) {
            Some(_) => assert_eq!(registry.meta(id).as_deref(), Some(m)),
            None => assert!(registry.meta(id).is_none()),
        }
    }
}
