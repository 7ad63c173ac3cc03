#!/usr/bin/env bash
# The one test command of kata-pulse, locally and in CI.
#
# Installs what the end-to-end tests drive for real when it is missing
# (containerd, runc, Prometheus with promtool, a static C toolchain for the
# locally built pause image), then runs: fmt check, clippy, a build of all
# binaries (end-to-end tests run them), and every test of the workspace.
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
{ have gcc && static_cc_works; } || packages+=(gcc libc6-dev)
{ have unshare && have mount; } || packages+=(util-linux mount)

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
echo "gcc:        $(gcc --version | head -n1)"
echo "rust:       $(rustc --version), $(cargo --version)"

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace --bins"
cargo build --workspace --bins

step "cargo test --workspace"
cargo test --workspace

step "all checks passed in $((SECONDS - start))s"
