#!/usr/bin/env bash
# A real Kubernetes control plane (etcd + kube-apiserver +
# kube-controller-manager) for karo's end-to-end tests, built from Debian's
# packages alone: no registry ships a kube-apiserver binary for this machine.
#
#   scripts/kube-control-plane.sh build          # build once, print the bin dir
#   scripts/kube-control-plane.sh start DIR      # start on 127.0.0.1, state in DIR
#   scripts/kube-control-plane.sh stop DIR       # stop what start DIR started
#
# `build` fetches bookworm's `kubernetes` source package (1.20.2, with its
# vendor tree) and bullseye's Go 1.15 (newer Go builds an apiserver that
# crashes on the first custom-resource create), generates the OpenAPI file
# the tarball lacks and builds both binaries in GOPATH mode. The result is
# cached outside the repository under $KARO_K8S_CACHE (default
# /var/cache/kata-pulse/k8s), keyed by the source's checksum, so only the
# first run on a machine pays the ~6-10 minutes. The machine's own apt
# configuration is not touched: a private one adds the two source lines,
# pointing at the mirror the machine already uses.
#
# `start` writes DIR/kubeconfig (token auth as system:masters) and DIR/env
# (KARO_E2E_KUBECONFIG=..., to be sourced) and returns once /readyz is ok.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KARO_K8S_CACHE:-/var/cache/kata-pulse/k8s}"
k8s_version="1.20.5+really1.20.2-1.1+deb12u1"
git_version="v1.20.2"

log() { printf '[kube-control-plane] %s\n' "$*" >&2; }

# The Debian mirror this machine's apt already uses (never hard-coded here).
debian_mirror() {
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || { log "no Debian mirror found in the apt configuration"; exit 1; }
    printf '%s' "$uri"
}

ensure_packages() {
    local missing=()
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v dpkg-source >/dev/null 2>&1 || missing+=(dpkg-dev)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        local policy=/usr/sbin/policy-rc.d created=false
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            created=true
        fi
        local rc=0
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
        if $created; then rm -f "$policy"; fi
        [ "$rc" -eq 0 ] || exit "$rc"
    fi
}

# apt-get with a private sources list holding just $1 (one line).
private_apt() {
    local line="$1" dir="$2"
    shift 2
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    printf '%s\n' "$line" >"$dir/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o "APT::Sandbox::User=root")
    apt-get "${opts[@]}" update -qq
    apt-get "${opts[@]}" "$@"
}

build() {
    ensure_packages
    local key="kubernetes-${k8s_version}"
    local out="$cache/$key"
    if [ -x "$out/bin/kube-apiserver" ] && [ -x "$out/bin/kube-controller-manager" ] && [ -x "$out/bin/.ok" ]; then
        printf '%s\n' "$out/bin"
        return
    fi
    local mirror work
    mirror=$(debian_mirror)
    work="$cache/work"
    rm -rf "$work"
    mkdir -p "$work/src" "$work/go"
    log "fetching the kubernetes source package ($k8s_version)"
    (cd "$work/src" && private_apt "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm main" "$work/apt-src" \
        source --download-only -qq "kubernetes=$k8s_version" >/dev/null)
    local orig
    orig=$(ls "$work"/src/kubernetes_*.orig.tar.* | head -n1)
    local sum
    sum=$(sha256sum "$orig" | cut -c1-16)
    log "source checksum $sum"
    log "fetching Go 1.15 (bullseye)"
    (cd "$work/go" && private_apt "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bullseye main" "$work/apt-go" \
        download -qq golang-1.15-go golang-1.15-src >/dev/null)
    for deb in "$work"/go/*.deb; do dpkg -x "$deb" "$work/go/root"; done
    export GOROOT="$work/go/root/usr/lib/go-1.15"
    export PATH="$GOROOT/bin:$PATH"
    go version >&2

    log "unpacking"
    mkdir -p "$work/gopath/src/k8s.io" "$work/tree"
    tar -xf "$orig" -C "$work/tree"
    local tree
    tree=$(find "$work/tree" -mindepth 1 -maxdepth 1 -type d | head -n1)
    ln -sfn "$tree" "$work/gopath/src/k8s.io/kubernetes"
    export GOPATH="$work/gopath" GO111MODULE=off CGO_ENABLED=0 GOCACHE="$work/gocache" GOFLAGS=
    cd "$work/gopath/src/k8s.io/kubernetes"

    log "generating the OpenAPI definitions"
    go build -o "$work/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
    local pkgs
    pkgs=$(sed -e '/^\s*$/d' -e 's|^|k8s.io/kubernetes/|' "$here/k8s/openapi-packages.txt" | paste -sd, -)
    "$work/openapi-gen" -i "$pkgs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
        -h hack/boilerplate/boilerplate.generatego.txt -r "$work/openapi-report.txt" >/dev/null

    local ldflags="-s -w"
    for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$git_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=20"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    mkdir -p "$out/bin.tmp"
    for cmd in kube-apiserver kube-controller-manager; do
        log "building $cmd (kube-apiserver takes about 6 minutes on 2 cores)"
        go build -tags selinux,notest -ldflags "$ldflags" -o "$out/bin.tmp/$cmd" "./cmd/$cmd"
    done
    printf '%s\n' "$sum" >"$out/bin.tmp/source.sha256"
    touch "$out/bin.tmp/.ok"
    chmod 755 "$out/bin.tmp/.ok"
    rm -rf "$out/bin"
    mv "$out/bin.tmp" "$out/bin"
    cd /
    rm -rf "$work"
    printf '%s\n' "$out/bin"
}

free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

wait_ready() {
    local url="$1" token="$2" what="$3" deadline=$((SECONDS + 90))
    until curl -ksf -H "Authorization: Bearer $token" "$url" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$what did not become ready; its log:"
            tail -n 30 "$4" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
}

start() {
    local dir="$1"
    local bin
    bin=$(build)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local token
    token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    printf '%s,admin,admin,system:masters\n' "$token" >"$dir/tokens.csv"
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
    local etcd_port etcd_peer api_port cm_port
    etcd_port=$(free_port)
    etcd_peer=$(free_port)
    api_port=$(free_port)
    cm_port=$(free_port)

    etcd --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-cluster "default=http://127.0.0.1:$etcd_peer" \
        --unsafe-no-fsync >"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/etcd.pid"

    "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" --insecure-port=0 \
        --cert-dir="$dir/certs" --token-auth-file="$dir/tokens.csv" --authorization-mode=RBAC \
        --service-cluster-ip-range=10.96.0.0/24 --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \
        --feature-gates=TTLAfterFinished=true --disable-admission-plugins=ServiceAccount \
        --endpoint-reconciler-type=none >"$dir/apiserver.log" 2>&1 &
    echo $! >"$dir/apiserver.pid"

    cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$api_port
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $token
contexts:
- name: test
  context:
    cluster: test
    user: admin
current-context: test
EOF
    chmod 600 "$dir/kubeconfig"
    wait_ready "https://127.0.0.1:$api_port/readyz" "$token" kube-apiserver "$dir/apiserver.log"

    "$bin/kube-controller-manager" --kubeconfig="$dir/kubeconfig" --port=0 --secure-port="$cm_port" \
        --bind-address=127.0.0.1 --leader-elect=false \
        --controllers=job,ttl-after-finished,garbagecollector,namespace,serviceaccount,serviceaccount-token,cronjob,resourcequota \
        --service-account-private-key-file="$dir/sa.key" --use-service-account-credentials=false \
        --authentication-skip-lookup=true --authorization-always-allow-paths=/healthz \
        --feature-gates=TTLAfterFinished=true >"$dir/controller-manager.log" 2>&1 &
    echo $! >"$dir/controller-manager.pid"
    printf 'KARO_E2E_KUBECONFIG=%s\n' "$dir/kubeconfig" >"$dir/env"
    log "control plane up at https://127.0.0.1:$api_port (kubeconfig $dir/kubeconfig)"
}

stop() {
    local dir="$1"
    for p in controller-manager apiserver etcd; do
        if [ -f "$dir/$p.pid" ]; then
            kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
        fi
    done
    for p in controller-manager apiserver etcd; do
        if [ -f "$dir/$p.pid" ]; then
            local pid
            pid=$(cat "$dir/$p.pid")
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$dir/$p.pid"
        fi
    done
}

case "${1:-}" in
build) build ;;
start) [ -n "${2:-}" ] || { echo "usage: $0 start DIR" >&2; exit 2; }; start "$2" ;;
stop) [ -n "${2:-}" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }; stop "$2" ;;
*) echo "usage: $0 build | start DIR | stop DIR" >&2; exit 2 ;;
esac
