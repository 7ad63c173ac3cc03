//! A private containerd with a working CRI plugin.
//!
//! Each instance lives in its own temporary folder (root, state, socket,
//! CNI dirs) and runs in a private mount namespace whose `/run` is a tmpfs:
//! containerd 1.6 puts shim sockets under `/run/containerd/s` and runc state
//! under `/run/containerd/runc` whatever the config says, so without this it
//! would write into the machine's own `/run/containerd`. That folder is a
//! bind of `<tmp>/run-containerd`, so it survives [`Containerd::restart`]
//! and a new containerd finds the shims of the pods it left running.
//! The other entries of the machine's `/run` are symlinked back in (a
//! `/etc/resolv.conf` may point there), except `containerd`, `vc`, `kata`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cri_api::runtime::v1::{
    ImageSpec, ImageStatusRequest, ListPodSandboxRequest, PodSandbox, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
    VersionRequest,
};

use crate::cri::{with_cri, with_cri_channel, CriClient, CriImageClient};
use crate::image::{pause_image_tar, PAUSE_IMAGE};
use crate::util::{file_tail, keep_dirs, require_program, signal, verbose, wait_until, ChildGuard};

/// The containerd namespace the CRI plugin uses.
pub const CRI_NAMESPACE: &str = "k8s.io";

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);

mod cleanup;
mod config;

use config::{config_toml, LAUNCH_SCRIPT};

/// A `RunPodSandbox` request for a pod on the host network (the test bed
/// has no CNI plugins), with uid `<namespace>-<name>-uid`. Use
/// `runtime_handler` `"kata"` for a pod the agent treats as a Kata pod.
pub fn host_network_pod(
    name: &str,
    namespace: &str,
    runtime_handler: &str,
) -> RunPodSandboxRequest {
    RunPodSandboxRequest {
        config: Some(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("{namespace}-{name}-uid"),
                namespace: namespace.into(),
                attempt: 0,
            }),
            linux: Some(cri_api::host_network_linux()),
            ..Default::default()
        }),
        runtime_handler: runtime_handler.into(),
    }
}

/// The repository part of an image reference (without `:tag`/`@digest`).
fn image_repo(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

/// Base folder for instances: the temp dir, unless it lies under `/run`,
/// which the private namespace hides.
fn base_dir() -> PathBuf {
    let t = std::env::temp_dir();
    if t.starts_with("/run") || t.starts_with("/var/run") {
        PathBuf::from("/tmp")
    } else {
        t
    }
}

/// A running containerd with CRI, cleaned up on drop (see the module docs).
pub struct Containerd {
    dir: PathBuf,
    child: Option<ChildGuard>,
    containerd_bin: PathBuf,
    unshare_bin: PathBuf,
    ctr_bin: PathBuf,
    /// True once cleanup ran, so an explicit [`Containerd::shutdown`] and
    /// `Drop` do not both do it.
    cleaned: bool,
}

impl Containerd {
    /// Starts containerd, waits until CRI answers and imports the pause
    /// image (built once per process, cached under the target dir).
    pub fn start() -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the containerd test bed needs root (mount namespaces, runc)");
        }
        let containerd_bin = require_program("containerd", "containerd")?;
        let ctr_bin = require_program("ctr", "containerd")?;
        let runc = require_program("runc", "runc")?;
        let unshare_bin = require_program("unshare", "util-linux")?;
        let pause_tar = pause_image_tar()?;
        // Shims daemonise; without a subreaper they end up as children of
        // PID 1, which on container-like machines may never reap them, so
        // every finished pod would leave a zombie. As subreaper, this process
        // inherits them and `cleanup` reaps them.
        // SAFETY: prctl with these arguments only sets a process flag.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }

        let dir = tempfile::Builder::new()
            .prefix("kp-ctrd-")
            .tempdir_in(base_dir())
            .context("creating the containerd dir")?
            .keep();
        let mut c = Containerd {
            dir,
            child: None,
            containerd_bin,
            unshare_bin,
            ctr_bin,
            cleaned: false,
        };
        // From here on, Drop cleans up whatever a failing step left behind.
        let max = 107; // sun_path holds 108 bytes including the NUL
        let ttrpc = c.dir.join("containerd.sock.ttrpc");
        if ttrpc.as_os_str().len() > max {
            bail!(
                "socket path {} is longer than {max} bytes; set TMPDIR to a shorter folder",
                ttrpc.display()
            );
        }
        for sub in [
            "root",
            "state",
            "opt",
            "host-run",
            "run-containerd",
            "cni/bin",
            "cni/conf",
        ] {
            std::fs::create_dir_all(c.dir.join(sub))?;
        }
        std::fs::write(
            c.dir.join("config.toml"),
            config_toml(&c.dir, PAUSE_IMAGE, &runc),
        )?;
        std::fs::write(c.dir.join("launch.sh"), LAUNCH_SCRIPT)?;

        let t = Instant::now();
        c.spawn()?;
        c.wait_ready()?;
        let ready = t.elapsed();
        let t = Instant::now();
        c.import_image(&pause_tar, PAUSE_IMAGE)?;
        if verbose() {
            eprintln!(
                "testbed: containerd ready in {ready:?}, pause image imported in {:?} ({})",
                t.elapsed(),
                c.dir.display()
            );
        }
        Ok(c)
    }

    /// Path of the CRI/containerd gRPC socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// `unix://<socket>`, the form the agent and CRI clients take.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }

    /// Name of the imported pause image, usable as a container image too.
    pub fn pause_image(&self) -> &str {
        PAUSE_IMAGE
    }

    /// containerd's own log (stdout and stderr, across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log_path(), lines)
    }

    /// The instance folder (holds containerd's root, state, config, log).
    pub fn root_dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the containerd process is running (false after [`stop`](Self::stop)).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.exited().is_none())
    }

    /// Runs `f` with a CRI client of this instance, bounded by `timeout`.
    /// Works from sync tests and from inside a Tokio runtime alike.
    pub fn cri<T, F, Fut>(&self, timeout: Duration, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(CriClient) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>>,
    {
        with_cri(&self.endpoint(), timeout, f)
    }

    /// Stops containerd (SIGTERM, then SIGKILL); pods and their shims keep
    /// running, as on a node whose containerd went down.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.stop(STOP_GRACE)?;
        }
        Ok(())
    }

    /// Stops containerd if it runs and starts it again on the same folders;
    /// it reconnects to the shims of the pods it had.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()?;
        self.wait_ready()
    }

    /// Cleans up now (as `Drop` would) and reports what went wrong, such
    /// as pods that could not be removed through CRI and had to be killed.
    pub fn shutdown(mut self) -> Result<()> {
        self.cleanup()
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.unshare_bin);
        cmd.args(["--mount", "--propagation", "private", "sh"])
            .arg(self.dir.join("launch.sh"))
            .arg(&self.dir)
            .env("CONTAINERD_BIN", &self.containerd_bin)
            .current_dir(&self.dir);
        // Whoever runs the tests may lack the sbin dirs in PATH; containerd
        // looks up its shim there.
        let mut path: Vec<PathBuf> = [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        if let Some(d) = self.containerd_bin.parent() {
            path.insert(0, d.to_path_buf());
        }
        if let Some(p) = std::env::var_os("PATH") {
            path.extend(std::env::split_paths(&p));
        }
        cmd.env("PATH", std::env::join_paths(path)?);
        self.child = Some(ChildGuard::spawn_logging_to(
            "containerd",
            &mut cmd,
            &self.log_path(),
        )?);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let sock = self.socket_path();
        let endpoint = self.endpoint();
        let mut last_err = String::from("socket not created yet");
        let child = self.child.as_mut().context("containerd is not running")?;
        let res = wait_until(START_TIMEOUT, Duration::from_millis(100), || {
            child.ensure_running()?;
            if !sock.exists() {
                return Ok(None);
            }
            // Version proves the CRI plugin is loaded; ListPodSandbox that
            // it serves requests.
            let r = with_cri(&endpoint, Duration::from_secs(5), |mut c| async move {
                let v = c
                    .version(VersionRequest {
                        version: "v1".into(),
                    })
                    .await?
                    .into_inner();
                c.list_pod_sandbox(ListPodSandboxRequest::default()).await?;
                Ok(v)
            });
            match r {
                Ok(v) => Ok(Some(v)),
                Err(e) => {
                    last_err = format!("{e:#}");
                    Ok(None)
                }
            }
        });
        match res {
            Ok(_) => Ok(()),
            Err(e) => bail!(
                "containerd did not serve CRI on {}: {e:#} (last error: {last_err}); \
                 last log lines:\n{}",
                sock.display(),
                self.log_tail(40)
            ),
        }
    }

    /// Runs `ctr --address <sock> <args>` with a timeout.
    pub fn ctr(&self, args: &[&str], timeout: Duration) -> Result<String> {
        // Output goes to a file: a pipe read only after exit could fill up.
        let tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        let out = tmp.reopen()?;
        let mut child = Command::new(&self.ctr_bin)
            .arg("--address")
            .arg(self.socket_path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning ctr")?;
        let status = wait_until(timeout, Duration::from_millis(50), || Ok(child.try_wait()?));
        let text = std::fs::read_to_string(tmp.path()).unwrap_or_default();
        let status = match status {
            Ok(s) => s,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("ctr {args:?} timed out after {timeout:?}:\n{text}");
            }
        };
        if !status.success() {
            bail!(
                "ctr {args:?} failed ({status}):\n{text}\nlast containerd log lines:\n{}",
                self.log_tail(20)
            );
        }
        Ok(text)
    }

    /// Imports an image archive (OCI layout or `docker save` tar) into the
    /// CRI namespace, unpacked for the `native` snapshotter the CRI plugin
    /// uses, and waits until CRI lists `name`.
    ///
    /// `name` is a full reference (`repo:tag`); the archive must name the
    /// image either so (`org.opencontainers.image.ref.name` as in
    /// [`oci_image_tar`](crate::oci_image_tar)) or by its bare tag.
    ///
    /// Not `ctr import --index-name`: with containerd 1.6.20 the CRI plugin
    /// may re-point a fresh image from the index ctr wrote to the platform
    /// manifest while ctr still unpacks, and the garbage collector then
    /// deletes the index under it ("content digest ...: not found", about
    /// one import in fifteen). `--base-name` makes the image point at the
    /// manifest from the start.
    pub fn import_image(&self, tar: &Path, name: &str) -> Result<()> {
        let tar = tar.to_str().context("image path is not UTF-8")?;
        self.ctr(
            &[
                "-n",
                CRI_NAMESPACE,
                "images",
                "import",
                "--snapshotter",
                "native",
                "--base-name",
                image_repo(name),
                tar,
            ],
            Duration::from_secs(120),
        )?;
        self.wait_image(name)
    }

    /// Waits until the CRI plugin lists `image` (it syncs from containerd's
    /// image store asynchronously).
    fn wait_image(&self, image: &str) -> Result<()> {
        let endpoint = self.endpoint();
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let image = image.to_string();
            let found =
                with_cri_channel(&endpoint, Duration::from_secs(5), move |ch| async move {
                    let r = CriImageClient::new(ch)
                        .image_status(ImageStatusRequest {
                            image: Some(ImageSpec {
                                image,
                                ..Default::default()
                            }),
                            verbose: false,
                        })
                        .await?
                        .into_inner();
                    Ok(r.image.is_some())
                })?;
            Ok(found.then_some(()))
        })
        .with_context(|| format!("CRI does not see image {image} after import"))
    }

    /// Runs a pod sandbox and returns its id.
    pub fn run_pod(&self, req: RunPodSandboxRequest) -> Result<String> {
        let name = req
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        self.cri(Duration::from_secs(60), |mut c| async move {
            Ok(c.run_pod_sandbox(req).await?.into_inner().pod_sandbox_id)
        })
        .with_context(|| {
            format!(
                "RunPodSandbox {name:?}; last containerd log lines:\n{}",
                self.log_tail(20)
            )
        })
    }

    /// Creates and starts a container of the pause image in pod `pod_id`
    /// (created from `pod_config`), running `/pause <args>` (`["spin"]`
    /// burns one CPU); returns the container id.
    pub fn run_container(
        &self,
        pod_id: &str,
        pod_config: Option<cri_api::runtime::v1::PodSandboxConfig>,
        name: &str,
        args: &[&str],
    ) -> Result<String> {
        self.run_container_with(pod_id, pod_config, name, args, None)
    }

    /// [`Containerd::run_container`] with a Linux config (resources,
    /// security context) for the container.
    pub fn run_container_with(
        &self,
        pod_id: &str,
        pod_config: Option<cri_api::runtime::v1::PodSandboxConfig>,
        name: &str,
        args: &[&str],
        linux: Option<cri_api::runtime::v1::LinuxContainerConfig>,
    ) -> Result<String> {
        use cri_api::runtime::v1::{
            ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec,
            StartContainerRequest,
        };
        let req = CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.to_string(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: self.pause_image().to_string(),
                    ..Default::default()
                }),
                args: args.iter().map(|a| a.to_string()).collect(),
                linux,
                ..Default::default()
            }),
            sandbox_config: pod_config,
        };
        self.cri(Duration::from_secs(30), move |mut c| async move {
            let id = c.create_container(req).await?.into_inner().container_id;
            c.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await?;
            Ok(id)
        })
    }

    /// Stops and removes one pod sandbox (and its containers).
    pub fn remove_pod(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.cri(Duration::from_secs(60), |mut c| async move {
            c.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
            c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await?;
            Ok(())
        })
    }

    /// All pod sandboxes, as `ListPodSandbox` reports them.
    pub fn list_pods(&self) -> Result<Vec<PodSandbox>> {
        self.cri(Duration::from_secs(30), |mut c| async move {
            Ok(c.list_pod_sandbox(ListPodSandboxRequest::default())
                .await?
                .into_inner()
                .items)
        })
    }

    /// Stops and removes every pod sandbox through CRI (containerd must run).
    pub fn remove_all_pods(&self) -> Result<usize> {
        self.cri(Duration::from_secs(60), |mut c| async move {
            let pods = c
                .list_pod_sandbox(ListPodSandboxRequest::default())
                .await?
                .into_inner()
                .items;
            let mut first_err = None;
            for p in &pods {
                let step = async {
                    c.stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: p.id.clone(),
                    })
                    .await?;
                    c.remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: p.id.clone(),
                    })
                    .await?;
                    Ok::<_, anyhow::Error>(())
                };
                let r = tokio::time::timeout(Duration::from_secs(15), step).await;
                let r = r.map_err(|_| anyhow::anyhow!("timed out")).and_then(|r| r);
                if let Err(e) = r {
                    first_err.get_or_insert(format!("pod {}: {e:#}", p.id));
                }
            }
            match first_err {
                Some(e) => bail!("removing pods: {e}"),
                None => Ok(pods.len()),
            }
        })
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("testbed: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repo_strips_tag_and_digest() {
        assert_eq!(image_repo("localhost/a/b:1"), "localhost/a/b");
        assert_eq!(image_repo("localhost:5000/a/b"), "localhost:5000/a/b");
        assert_eq!(image_repo("localhost:5000/a/b:2"), "localhost:5000/a/b");
        assert_eq!(image_repo("a/b@sha256:00"), "a/b");
    }

    #[test]
    fn config_points_everything_into_the_dir() {
        let dir = Path::new("/tmp/kp-ctrd-test");
        let c = config_toml(dir, PAUSE_IMAGE, Path::new("/usr/sbin/runc"));
        assert!(c.contains("root = \"/tmp/kp-ctrd-test/root\""));
        assert!(c.contains("address = \"/tmp/kp-ctrd-test/containerd.sock\""));
        assert!(c.contains("runtimes.kata]"));
        assert!(c.contains("restrict_oom_score_adj = true"));
        assert!(!c.contains("/var/lib/containerd"));
        // Top-level keys must precede the first table, or TOML files them
        // under it and containerd silently uses its default dirs.
        let first_table = c.find("\n[").unwrap();
        for key in ["\nroot = ", "\nstate = ", "\ndisabled_plugins = "] {
            assert!(
                c.find(key).unwrap() < first_table,
                "{key} is inside a table"
            );
        }
    }
}
