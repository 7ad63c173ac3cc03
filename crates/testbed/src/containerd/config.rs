//! containerd's configuration and launch script for a private instance.

use std::path::Path;

/// Shell script run by `unshare --mount` to prepare the private mount
/// namespace and exec containerd; `$1` is the instance folder.
pub(super) const LAUNCH_SCRIPT: &str = r#"#!/bin/sh
# Prepares a private mount namespace for one test containerd, then execs it.
set -eu
tb="$1"
# libmount would otherwise record options in the host's /run/mount/utab.
export LIBMOUNT_UTAB="$tb/utab"
mount --make-rprivate /
mount --rbind /run "$tb/host-run"
mount -t tmpfs -o mode=0755 testbed-run /run
for entry in "$tb"/host-run/* "$tb"/host-run/.[!.]*; do
    [ -e "$entry" ] || [ -L "$entry" ] || continue
    name=${entry##*/}
    case "$name" in containerd|vc|kata|kata-containers) continue ;; esac
    ln -s "$entry" "/run/$name"
done
mkdir /run/containerd
mount --bind "$tb/run-containerd" /run/containerd
exec "$CONTAINERD_BIN" --config "$tb/config.toml"
"#;

fn toml_str(p: &Path) -> String {
    let s = p.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub(super) fn config_toml(dir: &Path, pause_image: &str, runc: &Path) -> String {
    let p = |rel: &str| toml_str(&dir.join(rel));
    let runc = toml_str(runc);
    format!(
        r#"# Test bed containerd: everything under this folder, nothing on the host.
version = 2
root = {root}
state = {state}
# Snapshotters that probe host filesystems or devices are of no use here.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

# Raise to "debug" to see content, image and GC events when investigating.
[debug]
  level = "info"

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # runc cannot lower oom_score_adj below containerd's own otherwise.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = {runc}

    # Pods run with this handler are what the agent treats as Kata pods.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata.options]
        BinaryName = {runc}

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
"#,
        root = p("root"),
        state = p("state"),
        sock = p("containerd.sock"),
        ttrpc = p("containerd.sock.ttrpc"),
        opt = p("opt"),
        cni_bin = p("cni/bin"),
        cni_conf = p("cni/conf"),
    )
}
