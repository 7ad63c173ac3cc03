//! karo's container image (`scripts/build-image.sh -p karo`), run by a real
//! containerd through CRI the way the chart runs it: uid 65532, a read-only
//! root file system, every capability dropped, no privilege escalation,
//! RuntimeDefault seccomp, its credentials and kubeconfig on read-only
//! mounts. It must get ready against the real API server and turn a webhook
//! into a Job. The pod uses the host network (no CNI here) so the container
//! reaches the API server on 127.0.0.1.
//!
//! Needs `KARO_E2E_KUBECONFIG` and `KARO_IMAGE_TAR` (scripts/test.sh sets
//! both); ignored otherwise.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cri_api::runtime::v1::{
    security_profile::ProfileType, Capability, ContainerConfig, ContainerMetadata,
    CreateContainerRequest, ImageSpec, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerSecurityContext, Mount, SecurityProfile, StartContainerRequest,
};
use serde_json::json;
use support::*;
use testbed::{free_port, host_network_pod, http_get, http_post_with, Containerd};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs KARO_E2E_KUBECONFIG and KARO_IMAGE_TAR (scripts/test.sh sets both)"]
async fn the_image_runs_as_the_chart_runs_it() {
    let tar = std::env::var("KARO_IMAGE_TAR")
        .expect("KARO_IMAGE_TAR: the archive scripts/build-image.sh -p karo writes");
    let image = std::env::var("KARO_IMAGE_NAME")
        .unwrap_or_else(|_| format!("localhost/karo:{}", env!("CARGO_PKG_VERSION")));
    let c = Cluster::new("image").await.unwrap();
    c.apply(json!({"apiVersion": "karo.io/v1alpha1", "kind": "AlertReaction", "metadata": {"name": "from-image"},
        "spec": {"alertName": "ImageCheck", "actions": [{"name": "a", "image": "busybox"}]}}))
        .await
        .unwrap();

    // What the chart mounts: the credentials Secret and (here, instead of the
    // service account) a kubeconfig; readable by uid 65532, read-only.
    let files = tempfile::tempdir().unwrap();
    let auth = files.path().join("auth");
    let kube = files.path().join("kube");
    for d in [&auth, &kube] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(auth.join("tokens"), format!("{TOKEN}\n")).unwrap();
    std::fs::copy(&c.kubeconfig, kube.join("kubeconfig")).unwrap();
    for f in [auth.join("tokens"), kube.join("kubeconfig")] {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let containerd = Containerd::start().unwrap();
    containerd.import_image(Path::new(&tar), &image).unwrap();
    let pod_req = host_network_pod("karo", "karo-system", "runc");
    let mut pod_config = pod_req.config.clone().unwrap();
    let logs = tempfile::tempdir().unwrap();
    pod_config.log_directory = logs.path().display().to_string();
    let pod = containerd
        .run_pod(cri_api::runtime::v1::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            ..pod_req
        })
        .unwrap();
    let (webhook_port, health_port) = (free_port().unwrap(), free_port().unwrap());
    let mount = |host: &Path, path: &str| Mount {
        container_path: path.into(),
        host_path: host.display().to_string(),
        readonly: true,
        ..Default::default()
    };
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "karo".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        args: vec![
            format!("--webhook-address=127.0.0.1:{webhook_port}"),
            format!("--health-address=127.0.0.1:{health_port}"),
            "--webhook-token-file=/etc/karo/auth/tokens".into(),
            format!("--leader-election-namespace={}", c.ns),
            format!("--watch-namespace={}", c.ns),
        ],
        envs: vec![
            KeyValue {
                key: "KUBECONFIG".into(),
                value: "/etc/karo/kube/kubeconfig".into(),
            },
            KeyValue {
                key: "POD_NAME".into(),
                value: "karo-image".into(),
            },
        ],
        mounts: vec![
            mount(&auth, "/etc/karo/auth"),
            mount(&kube, "/etc/karo/kube"),
        ],
        log_path: "karo.log".into(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 65532 }),
                run_as_group: Some(Int64Value { value: 65532 }),
                readonly_rootfs: true,
                no_new_privs: true,
                capabilities: Some(Capability {
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let req = CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(config),
        sandbox_config: Some(pod_config),
    };
    containerd
        .cri(Duration::from_secs(60), move |mut cri| async move {
            let id = cri.create_container(req).await?.into_inner().container_id;
            cri.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await?;
            Ok(id)
        })
        .unwrap();
    let log = || std::fs::read_to_string(logs.path().join("karo.log")).unwrap_or_default();
    let start = Instant::now();
    while !http_get(
        &format!("http://127.0.0.1:{health_port}/readyz"),
        Duration::from_secs(2),
    )
    .is_ok_and(|r| r.status == 200)
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the karo container did not get ready:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let body = notification(
        "firing",
        vec![alert("ImageCheck", "i1", "2026-12-01T10:00:00Z", &[])],
    );
    let r = http_post_with(
        &format!("http://127.0.0.1:{webhook_port}/webhook"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "application/json",
        body.to_string().as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    c.wait_jobs(
        "the Job made by the containerised karo",
        Duration::from_secs(30),
        |j| j.len() == 1,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    containerd.remove_pod(&pod).unwrap();
    c.cleanup().await;
}
