//! The container image, run the way the Helm chart runs it.
//!
//! The OCI archive from `scripts/build-image.sh` is imported into a private
//! containerd and started through CRI as the DaemonSet's container: the
//! arguments, mounts and security context come from the chart's default pod
//! spec (`tests/chart/golden/default-pod-spec.json`, which the chart tests
//! keep equal to what Helm renders). Only what a test machine forces is
//! changed: the host folders behind the mounts are simulated sandbox roots
//! and the test containerd's socket, and the pod uses the host network (no
//! CNI here, as with `hostNetwork: true`) with the agent on a free loopback
//! port. The test then checks that the agent, as uid 0 without any
//! capability, on a read-only root, reaches root-only shim sockets through
//! read-only mounts and labels them from CRI; and that a runtime restart,
//! which replaces the CRI socket, leaves the agent without CRI until its
//! container is recreated (what the chart README says).
//!
//! Needs `KATA_PULSE_IMAGE_TAR` (set by scripts/test.sh after
//! scripts/build-image.sh). Unset, the test fails under `CI=true` and is
//! skipped loudly otherwise. `KATA_PULSE_IMAGE_NAME` names the image in the
//! archive (default `localhost/kata-pulse:<crate version>`, the script's).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{free_port, try_get, wait_until, Roots, Sims};
use cri_api::runtime::v1::{
    security_profile::ProfileType, Capability, ContainerConfig, ContainerMetadata,
    ContainerStatusRequest, CreateContainerRequest, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext, Mount, NamespaceMode, NamespaceOption,
    PodSandboxConfig, RemoveContainerRequest, SecurityProfile, StartContainerRequest,
    StopContainerRequest,
};
use kata_sim::{Fault, Flavour};
use serde_json::Value;
use testbed::{host_network_pod, Containerd};

const IMAGE_TAR_ENV: &str = "KATA_PULSE_IMAGE_TAR";
const IMAGE_NAME_ENV: &str = "KATA_PULSE_IMAGE_NAME";

fn golden_pod_spec() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/chart/golden/default-pod-spec.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the chart's pod spec {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the golden pod spec is JSON")
}

/// The archive to test; the test is ignored unless asked for, and fails
/// without it.
fn image_tar() -> PathBuf {
    let p = std::env::var_os(IMAGE_TAR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{IMAGE_TAR_ENV} is not set: build the image with scripts/build-image.sh and \
             export {IMAGE_TAR_ENV}=<the .tar it prints> (scripts/test.sh does both)"
            )
        });
    assert!(
        p.is_file(),
        "{IMAGE_TAR_ENV}={} does not exist; run scripts/build-image.sh",
        p.display()
    );
    p
}

/// Host folders standing in for the node's: chart host path -> test path.
struct HostPaths {
    map: BTreeMap<String, PathBuf>,
}

impl HostPaths {
    fn resolve(&self, chart_path: &str) -> &Path {
        self.map.get(chart_path).unwrap_or_else(|| {
            panic!(
                "the chart mounts host path {chart_path}, which this test does not simulate; \
                 update crates/kata-pulse/tests/image.rs"
            )
        })
    }
}

fn as_i64(v: &Value, what: &str) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {v}"))
}

/// The chart's security context in CRI terms, as the kubelet translates it:
/// container fields win over the pod's.
fn security_context(pod: &Value, c: &Value) -> LinuxContainerSecurityContext {
    let known = [
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "privileged",
        "allowPrivilegeEscalation",
        "readOnlyRootFilesystem",
        "capabilities",
        "seccompProfile",
    ];
    for ctx in [&pod["securityContext"], &c["securityContext"]] {
        for key in ctx.as_object().into_iter().flatten().map(|(k, _)| k) {
            assert!(
                known.contains(&key.as_str()) || key == "fsGroup",
                "securityContext.{key} is not applied by this test; update image.rs"
            );
        }
    }
    let field = |name: &str| -> Option<&Value> {
        c["securityContext"]
            .get(name)
            .or_else(|| pod["securityContext"].get(name))
    };
    let run_as_user = field("runAsUser").map(|v| as_i64(v, "runAsUser"));
    if field("runAsNonRoot").and_then(Value::as_bool) == Some(true) {
        assert_ne!(run_as_user, Some(0), "runAsNonRoot with runAsUser 0");
    }
    let seccomp = field("seccompProfile").map(|p| {
        let ty = p["type"].as_str().unwrap_or_default();
        SecurityProfile {
            profile_type: match ty {
                "RuntimeDefault" => ProfileType::RuntimeDefault,
                "Unconfined" => ProfileType::Unconfined,
                other => panic!("seccompProfile.type {other} is not handled by this test"),
            } as i32,
            localhost_ref: String::new(),
        }
    });
    let caps = &c["securityContext"]["capabilities"];
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: list(&caps["add"]),
            drop_capabilities: list(&caps["drop"]),
        }),
        privileged: field("privileged")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        // The pod's namespaces (kubelet: hostNetwork pods share the node's network).
        namespace_options: Some(NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        run_as_user: run_as_user.map(|value| Int64Value { value }),
        run_as_group: field("runAsGroup").map(|v| Int64Value {
            value: as_i64(v, "runAsGroup"),
        }),
        readonly_rootfs: field("readOnlyRootFilesystem")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        // kubelet: allowPrivilegeEscalation false -> no_new_privs.
        no_new_privs: field("allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false),
        seccomp,
        ..Default::default()
    }
}

/// The DaemonSet's container as a CRI container config, listening on `addr`.
fn container_config(
    pod: &Value,
    image: &str,
    host: &HostPaths,
    addr: SocketAddr,
    attempt: u32,
) -> ContainerConfig {
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "the chart runs one container");
    let c = &containers[0];

    let mut listen_seen = false;
    let args: Vec<String> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let a = a.as_str().expect("string arg");
            if a.starts_with("--listen-address=") {
                listen_seen = true;
                format!("--listen-address={addr}")
            } else if a.starts_with("--probe-listen-address=") {
                // Any free port: parallel runs must not collide on the
                // chart's fixed one.
                "--probe-listen-address=127.0.0.1:0".to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    assert!(listen_seen, "the chart sets no --listen-address");

    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mounts = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap();
            let host_path = volumes[name]["hostPath"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("volume {name} is not a hostPath"));
            Mount {
                container_path: m["mountPath"].as_str().unwrap().to_string(),
                host_path: host.resolve(host_path).display().to_string(),
                readonly: m["readOnly"].as_bool().unwrap_or(false),
                ..Default::default()
            }
        })
        .collect();
    let envs = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| KeyValue {
            key: e["name"].as_str().unwrap().to_string(),
            value: e["value"].as_str().unwrap_or_default().to_string(),
        })
        .collect();

    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: c["name"].as_str().unwrap().to_string(),
            attempt,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        args,
        envs,
        mounts,
        log_path: format!("kata-pulse-{attempt}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(security_context(pod, c)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A started agent container.
struct AgentContainer {
    id: String,
    addr: SocketAddr,
    log: PathBuf,
}

fn start_agent(
    ctd: &Containerd,
    pod_id: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
    addr: SocketAddr,
) -> AgentContainer {
    let log = PathBuf::from(&pod_config.log_directory).join(&config.log_path);
    let req = CreateContainerRequest {
        pod_sandbox_id: pod_id.to_string(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    };
    let id = ctd
        .cri(Duration::from_secs(60), move |mut c| async move {
            let id = c.create_container(req).await?.into_inner().container_id;
            c.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await?;
            Ok(id)
        })
        .unwrap_or_else(|e| {
            panic!(
                "create/start the kata-pulse container: {e:#}\ncontainerd log:\n{}",
                ctd.log_tail(30)
            )
        });
    let agent = AgentContainer { id, addr, log };
    let ready = wait_until(Duration::from_secs(30), || {
        try_get(addr, "/readyz", &[]).is_ok_and(|r| r.status == 200)
    });
    assert!(
        ready,
        "the agent container never answered /readyz on {addr}\n{}",
        agent.describe(ctd)
    );
    agent
}

impl AgentContainer {
    /// State, exit code and log of the container, for failure messages.
    fn describe(&self, ctd: &Containerd) -> String {
        let id = self.id.clone();
        let status = ctd.cri(Duration::from_secs(10), move |mut c| async move {
            Ok(c.container_status(ContainerStatusRequest {
                container_id: id,
                verbose: false,
            })
            .await?
            .into_inner()
            .status)
        });
        let status = match status {
            Ok(Some(s)) => format!(
                "state {} exit code {} reason {:?} message {:?}",
                s.state, s.exit_code, s.reason, s.message
            ),
            Ok(None) => "no status".into(),
            Err(e) => format!("status unavailable: {e:#}"),
        };
        format!(
            "container {}: {status}\n--- container log ---\n{}\n--- containerd log ---\n{}",
            self.id,
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            ctd.log_tail(20)
        )
    }

    fn metrics(&self, ctd: &Containerd) -> String {
        match try_get(self.addr, "/metrics", &[]) {
            Ok(r) if r.status == 200 => r.text(),
            Ok(r) => panic!("/metrics answered {}\n{}", r.status, self.describe(ctd)),
            Err(e) => panic!("/metrics: {e}\n{}", self.describe(ctd)),
        }
    }

    fn remove(self, ctd: &Containerd) {
        let id = self.id;
        ctd.cri(Duration::from_secs(60), move |mut c| async move {
            c.stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 10,
            })
            .await?;
            c.remove_container(RemoveContainerRequest { container_id: id })
                .await?;
            Ok(())
        })
        .expect("stop and remove the agent container");
    }
}

/// The agent process of the container listening on `addr` (seen from the host).
fn agent_pid(addr: SocketAddr) -> u32 {
    let needle = format!("--listen-address={addr}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args
            .first()
            .is_some_and(|a| a == "/usr/local/bin/kata-pulse")
            && args.contains(&needle)
        {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "agent processes with {needle}: {found:?}");
    found[0]
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/<pid>/status"))
        .trim()
        .to_string()
}

/// Mount options of `mount_point` in the process' mount namespace.
fn mount_options(pid: u32, mount_point: &str) -> String {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    // The last mount on a path is the visible one.
    info.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(mount_point))
        .and_then(|l| l.split(' ').nth(5))
        .unwrap_or_else(|| panic!("{mount_point} is not a mount point of the agent"))
        .to_string()
}

fn sandbox_labels(id: &str, uid: &str, name: &str, namespace: &str) -> String {
    format!(
        "sandbox_id=\"{id}\",cri_uid=\"{uid}\",cri_name=\"{name}\",cri_namespace=\"{namespace}\""
    )
}

fn uid_of(ctd: &Containerd, id: &str) -> String {
    let pods = ctd.list_pods().expect("list pods");
    let pod = pods.iter().find(|p| p.id == id).expect("pod listed");
    pod.metadata.as_ref().expect("metadata").uid.clone()
}

#[test]
#[ignore = "needs the image archive of scripts/build-image.sh in KATA_PULSE_IMAGE_TAR; \
            scripts/test.sh builds it and runs this test with --ignored"]
fn image_runs_as_the_chart_runs_it() {
    let tar = image_tar();
    let image = std::env::var(IMAGE_NAME_ENV)
        .unwrap_or_else(|_| format!("localhost/kata-pulse:{}", env!("CARGO_PKG_VERSION")));
    let pod_spec = golden_pod_spec();

    let mut ctd = Containerd::start().expect("containerd");
    ctd.import_image(&tar, &image).expect("import the image");

    // The node: a Kata pod with a Go-runtime shim, and a runtime-rs shim CRI
    // does not know. Real shims' sockets are root's, 0600, in 0700 folders.
    let roots = Roots::new();
    for dir in [roots.go.parent().unwrap(), &roots.go, &roots.rs] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let sims = Sims::new();
    let kata_id = ctd
        .run_pod(host_network_pod("kata-pod", "image-test", "kata"))
        .expect("kata pod");
    let kata_uid = uid_of(&ctd, &kata_id);
    let rs_id = format!("b1{}", "0".repeat(62));
    let _go_shim = sims.start(&roots.go, &kata_id, Flavour::Go, Fault::None);
    let _rs_shim = sims.start(&roots.rs, &rs_id, Flavour::RuntimeRs, Fault::None);
    for (root, id) in [(&roots.go, &kata_id), (&roots.rs, &rs_id)] {
        let sock = Roots::socket(root, id);
        let meta = std::fs::metadata(&sock).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600), "{sock:?}");
        let dir = std::fs::metadata(sock.parent().unwrap()).unwrap();
        assert_eq!((dir.uid(), dir.mode() & 0o777), (0, 0o700));
    }

    let host = HostPaths {
        map: BTreeMap::from([
            ("/run/vc/sbs".to_string(), roots.go.clone()),
            ("/run/kata".to_string(), roots.rs.clone()),
            (
                "/run/containerd/containerd.sock".to_string(),
                ctd.socket_path(),
            ),
        ]),
    };

    // The agent's pod, with a log folder so a failure shows the agent's log.
    let logs = tempfile::tempdir().unwrap();
    let mut pod_req = host_network_pod("kata-pulse-agent", "kube-system", "runc");
    let pod_config = pod_req.config.as_mut().unwrap();
    pod_config.log_directory = logs.path().display().to_string();
    let pod_config = pod_config.clone();
    let agent_pod = ctd.run_pod(pod_req).expect("agent pod");

    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = container_config(&pod_spec, &image, &host, addr, 0);
    let agent = start_agent(&ctd, &agent_pod, &pod_config, config, addr);

    // Least privilege, as the kernel sees the agent process.
    let pid = agent_pid(addr);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(status_field(&status, "Uid"), "0\t0\t0\t0");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(&status, caps),
            "0000000000000000",
            "{caps} of the agent"
        );
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "2", "seccomp filter mode");
    for mount_point in [
        "/",
        "/run/vc/sbs",
        "/run/kata",
        "/run/containerd/containerd.sock",
    ] {
        let opts = mount_options(pid, mount_point);
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "{mount_point} is mounted {opts}, not read-only"
        );
    }

    // Both sandboxes served, the Kata pod labelled from CRI.
    let kata_labels = sandbox_labels(&kata_id, &kata_uid, "kata-pod", "image-test");
    let mut text = String::new();
    assert!(
        wait_until(Duration::from_secs(15), || {
            text = agent.metrics(&ctd);
            text.contains(&kata_labels)
        }),
        "the Kata pod never got its CRI labels\n{}",
        agent.describe(&ctd)
    );
    for id in [&kata_id, &rs_id] {
        assert!(
            text.contains(&format!("kata_pulse_shim_up{{sandbox_id=\"{id}\"")),
            "no shim health for {id}"
        );
        let series = text
            .lines()
            .filter(|l| l.contains(&format!("sandbox_id=\"{id}\"")) && l.starts_with("kata_guest_"))
            .count();
        assert!(series > 20, "only {series} guest series for {id}");
    }
    assert!(
        text.lines().any(|l| l == "kata_pulse_cri_up 1"),
        "CRI not up"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("kata_pulse_shim_up{") && l.ends_with(" 0")),
        "a shim is down:\n{}",
        text.lines()
            .filter(|l| l.starts_with("kata_pulse_shim_up"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // A runtime restart replaces its socket; the agent's mount of the socket
    // file keeps the old one, so pods created from now on stay unlabelled...
    let inode_before = std::fs::metadata(ctd.socket_path()).unwrap().ino();
    ctd.restart().expect("restart containerd");
    let inode_after = std::fs::metadata(ctd.socket_path()).unwrap().ino();
    assert_ne!(
        inode_before, inode_after,
        "the restart kept the socket inode"
    );
    let kata2_id = ctd
        .run_pod(host_network_pod("kata-pod-2", "image-test", "kata"))
        .expect("second kata pod");
    let _go_shim2 = sims.start(&roots.go, &kata2_id, Flavour::Go, Fault::None);
    let unlabelled = sandbox_labels(&kata2_id, "", "", "");
    assert!(
        wait_until(Duration::from_secs(20), || {
            text = agent.metrics(&ctd);
            text.contains(&unlabelled) && text.lines().any(|l| l == "kata_pulse_cri_up 0")
        }),
        "after the runtime restart the agent should see the new sandbox without CRI\n{}",
        agent.describe(&ctd)
    );

    // ... until the container is recreated, which mounts the new socket.
    agent.remove(&ctd);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = container_config(&pod_spec, &image, &host, addr, 1);
    let agent = start_agent(&ctd, &agent_pod, &pod_config, config, addr);
    let labelled = sandbox_labels(
        &kata2_id,
        &uid_of(&ctd, &kata2_id),
        "kata-pod-2",
        "image-test",
    );
    assert!(
        wait_until(Duration::from_secs(15), || {
            text = agent.metrics(&ctd);
            text.contains(&labelled) && text.lines().any(|l| l == "kata_pulse_cri_up 1")
        }),
        "the recreated agent container never labelled the new pod\n{}",
        agent.describe(&ctd)
    );
    agent.remove(&ctd);
    ctd.shutdown().expect("containerd cleanup");
}
