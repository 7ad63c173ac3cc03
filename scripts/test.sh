#!/usr/bin/env bash
# The one test command of kata-pulse, locally and in CI.
#
# Installs what the end-to-end tests drive for real when it is missing
# (containerd, runc, Prometheus with promtool, a static C toolchain for the
# locally built pause image, buildah for the container image, headless
# Chromium for the status page), then runs:
# fmt check, clippy, a build of all binaries (end-to-end tests run them), the
# Helm chart tests (pytest in a venv under the target dir), the check of
# every shell command in the docs (same venv), the container
# image build (scripts/build-image.sh, whose archive the image test runs),
# and every test of the workspace.
# Then karo's end-to-end tests against a Kubernetes control plane it builds
# from Debian's packages (scripts/kube-control-plane.sh; the first build on
# a machine takes about 6-10 minutes, later runs reuse the cached binaries).
# Fails fast: the first failing step ends the run with its exit code.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
# Debian puts runc in /usr/sbin, which a non-login shell may lack.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export PATH

start=$SECONDS
step() { printf '\n==> %s (at %ss)\n' "$*" "$((SECONDS - start))"; }

have() { command -v "$1" >/dev/null 2>&1; }

# The pause image is a static C program: gcc alone is not enough, libc.a too.
static_cc_works() {
    local out rc=0
    out=$(mktemp)
    printf 'int main(void){return 0;}\n' | gcc -static -x c -o "$out" - >/dev/null 2>&1 || rc=1
    rm -f "$out"
    return "$rc"
}

step "checking the real components the end-to-end tests use"
packages=()
for tool in containerd ctr; do
    have "$tool" || { packages+=(containerd); break; }
done
have runc || packages+=(runc)
{ have prometheus && have promtool; } || packages+=(prometheus)
have prometheus-alertmanager || packages+=(prometheus-alertmanager)
{ have gcc && static_cc_works; } || packages+=(gcc libc6-dev)
# The agent's allocator, jemalloc, is built from its C sources (make).
have make || packages+=(make)
{ have unshare && have mount; } || packages+=(util-linux mount)
have buildah || packages+=(buildah)
have file || packages+=(file)
# The status page is checked in a real browser (crates/kata-pulse/tests/browser.rs).
have chromium || packages+=(chromium)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3 python3-venv)

if [ "${#packages[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${packages[*]}; run as root, or install them: apt-get install -y ${packages[*]}" >&2
        exit 1
    fi
    step "installing ${packages[*]}"
    # Keep package scripts from starting system services (a system
    # containerd or Prometheus is not wanted; tests run their own).
    policy=/usr/sbin/policy-rc.d
    created_policy=false
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=true
    fi
    export DEBIAN_FRONTEND=noninteractive
    rc=0
    {
        apt-get update -qq &&
            apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    } || rc=$?
    if $created_policy; then rm -f "$policy"; fi
    if [ "$rc" -ne 0 ]; then
        echo "installing ${packages[*]} failed (exit $rc)" >&2
        exit "$rc"
    fi
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "warning: not root; the end-to-end tests (containerd, mounts) need root and will fail" >&2
fi

step "components used"
echo "containerd: $(containerd --version)"
echo "runc:       $(runc --version | head -n1)"
echo "prometheus: $(prometheus --version 2>&1 | head -n1)"
echo "promtool:   $(promtool --version 2>&1 | head -n1)"
echo "alertmanager: $(prometheus-alertmanager --version 2>&1 | head -n1)"
echo "gcc:        $(gcc --version | head -n1)"
echo "buildah:    $(buildah --version)"
echo "python:     $(python3 --version 2>&1)"
echo "chromium:   $(chromium --version 2>/dev/null | head -n1)"
echo "rust:       $(rustc --version), $(cargo --version)"

# A clean clone builds everything once: incremental state (4 GB of a CI
# target dir) would only cost disk. Developers keep it for their rebuilds.
if [ "${CI:-}" = "true" ]; then
    export CARGO_INCREMENTAL=0
fi
# The whole run needs about 5 GB under the target dir; a full disk shows up
# much later as a linker's bus error, so say up front how much there is.
step "disk space"
target_dir=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | head -n1 | cut -d'"' -f4)
disk_at=$target_dir
while [ ! -d "$disk_at" ]; do disk_at=$(dirname "$disk_at"); done
df -hP "$disk_at" | tail -n 1
free_kb=$(df -Pk "$disk_at" | awk 'NR == 2 { print $4 }')
if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
    echo "warning: under 8 GB free for $target_dir; the build and tests may run out of disk" >&2
fi

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace --bins"
cargo build --workspace --bins

# The chart tests run real Helm (helm-python-sdk), kubernetes-validate and
# the agent binary built above; their packages live in a venv under the
# target dir, reinstalled only when tests/chart/requirements.txt changes.
step "chart tests: python venv"
venv="$target_dir/chart-venv"
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/chart/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/chart/requirements.txt
    echo "$want" >"$stamp"
fi

step "chart tests: pytest tests/chart"
KATA_PULSE_BIN="$target_dir/debug/kata-pulse" PYTHONDONTWRITEBYTECODE=1 \
    "$venv/bin/python" -m pytest -p no:cacheprovider tests/chart

# Every shell command of README.md, charts/*/README.md and docs/*.md, through
# Helm's parser and lint, schema validation, or run (tests/docs), in the
# same venv.
step "docs commands: pytest tests/docs"
KATA_PULSE_BIN_DIR="$target_dir/debug" PYTHONDONTWRITEBYTECODE=1 \
    "$venv/bin/python" -m pytest -p no:cacheprovider tests/docs

step "container image: scripts/build-image.sh"
image_tar="$target_dir/image/kata-pulse.oci.tar"
bash scripts/build-image.sh -o "$image_tar"
# crates/kata-pulse/tests/image.rs runs it in the test containerd.
export KATA_PULSE_IMAGE_TAR="$image_tar"

step "karo container image: scripts/build-image.sh -p karo"
karo_image_tar="$target_dir/image/karo.oci.tar"
bash scripts/build-image.sh -p karo -o "$karo_image_tar"
# crates/karo/tests/image.rs runs it in the test containerd against the control plane.
export KARO_IMAGE_TAR="$karo_image_tar"

# The systemd unit, checked offline against the static binary: it must load
# without errors and keep its hardening (systemd's exposure score).
step "systemd unit: systemd-analyze verify / security"
if have systemd-analyze && [ -d /lib/systemd/system ]; then
    unit_root=$(mktemp -d "${TMPDIR:-/tmp}/kata-pulse-unit.XXXXXX")
    mkdir -p "$unit_root/usr/local/bin" "$unit_root/etc/systemd/system" "$unit_root/lib/systemd"
    cp "$target_dir/x86_64-unknown-linux-gnu/release/kata-pulse" "$unit_root/usr/local/bin/"
    cp deploy/systemd/kata-pulse.service "$unit_root/etc/systemd/system/"
    cp -r /lib/systemd/system "$unit_root/lib/systemd/"
    rc=0
    systemd-analyze verify --root="$unit_root" kata-pulse.service || rc=$?
    if [ "$rc" -eq 0 ]; then
        systemd-analyze security --offline=true --threshold=20 --root="$unit_root" kata-pulse.service |
            tail -n 1 || rc=$?
    fi
    rm -rf "$unit_root"
    [ "$rc" -eq 0 ] || { echo "the systemd unit failed its checks" >&2; exit "$rc"; }
else
    echo "systemd-analyze not available: skipped"
fi

step "alert rules: promtool check rules / test rules"
promtool check rules charts/kata-pulse/files/alerts.yaml
promtool test rules tests/rules/*.yaml

step "cargo test --workspace"
cargo test --workspace

step "container image run as the chart runs it: cargo test -p kata-pulse --test image -- --ignored"
cargo test -p kata-pulse --test image -- --ignored

# karo's end-to-end tests run against a real kube-apiserver, etcd and
# kube-controller-manager (built once from Debian's packages and cached
# outside the repository: scripts/kube-control-plane.sh) and a real
# Alertmanager.
step "Kubernetes control plane: build (cached) and start"
cp_dir=$(mktemp -d "${TMPDIR:-/tmp}/karo-control-plane.XXXXXX")
trap 'bash scripts/kube-control-plane.sh stop "$cp_dir" >/dev/null 2>&1 || true; rm -rf "$cp_dir"' EXIT
bash scripts/kube-control-plane.sh start "$cp_dir"
# shellcheck disable=SC1091
. "$cp_dir/env"
export KARO_E2E_KUBECONFIG
# One test runs karo with exactly the chart's RBAC, rendered by real Helm.
"$venv/bin/python" tests/karo/render_rbac.py "$cp_dir/karo-rbac.json"
export KARO_E2E_CHART_RBAC="$cp_dir/karo-rbac.json"

step "karo end to end: cargo test -p karo -- --ignored (e2e, and the image in containerd)"
cargo test -p karo -- --ignored

echo "target dir: $(du -sh "$target_dir" 2>/dev/null | cut -f1)"
step "all checks passed in $((SECONDS - start))s"
