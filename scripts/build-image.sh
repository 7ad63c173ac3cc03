#!/usr/bin/env bash
# Builds the kata-pulse (or karo) container image without Docker and exports
# it as an OCI archive:
#   1. a statically linked binary (glibc, crt-static; no musl target is
#      needed), checked with `file` and `ldd`;
#   2. its Dockerfile (FROM scratch; Dockerfile for kata-pulse,
#      crates/karo/Dockerfile for karo) with buildah, in a build context that
#      holds only that binary;
#   3. `buildah push` to oci-archive:<file>, which `ctr images import`,
#      `skopeo copy` or `podman load` take.
#
# Usage: scripts/build-image.sh [-p PACKAGE] [-t NAME] [-o FILE]
#   -p PACKAGE  kata-pulse (default) or karo
#   -t NAME     image name (default localhost/<package>:<crate version>)
#   -o FILE     archive to write (default <target dir>/image/<package>.oci.tar)
# Prints the archive's path as the last line of its output.
# Needs cargo, buildah (Debian: apt-get install buildah), file and ldd; runs
# buildah with the vfs storage driver, which works without overlayfs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

name=""
output=""
package=kata-pulse
while [ $# -gt 0 ]; do
    case "$1" in
    -p) package="${2:?-p needs a package}"; shift 2 ;;
    -t) name="${2:?-t needs a name}"; shift 2 ;;
    -o) output="${2:?-o needs a file}"; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

for tool in cargo buildah file ldd; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build-image.sh: $tool is missing (Debian: apt-get install -y buildah file libc-bin)" >&2
        exit 1
    fi
done

case "$package" in
kata-pulse) dockerfile=Dockerfile ;;
karo) dockerfile=crates/karo/Dockerfile ;;
*) echo "build-image.sh: unknown package $package (kata-pulse or karo)" >&2; exit 2 ;;
esac

target_triple=x86_64-unknown-linux-gnu
if [ "$(uname -m)" != x86_64 ]; then
    echo "build-image.sh: only x86_64 hosts are supported (this is $(uname -m))" >&2
    exit 1
fi

meta=$(cargo metadata --format-version 1 --no-deps)
target_dir=$(printf '%s' "$meta" | grep -o '"target_directory":"[^"]*"' | head -n1 | cut -d'"' -f4)
version=$(printf '%s' "$meta" | grep -o "\"name\":\"$package\",\"version\":\"[^\"]*\"" | head -n1 | cut -d'"' -f8)
if [ -z "$target_dir" ] || [ -z "$version" ]; then
    echo "build-image.sh: cannot read the target dir or the $package version from cargo metadata" >&2
    exit 1
fi
name=${name:-localhost/$package:$version}
output=${output:-$target_dir/image/$package.oci.tar}

echo "==> building a static $package $version ($target_triple, crt-static)"
# --target keeps build scripts and proc macros dynamic; only the agent is static.
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target_triple" -p "$package"
bin="$target_dir/$target_triple/release/$package"

echo "==> checking that $bin is static"
kind=$(file -b "$bin")
echo "file: $kind"
case "$kind" in
*"statically linked"* | *"static-pie linked"*) ;;
*) echo "build-image.sh: $bin is not statically linked" >&2; exit 1 ;;
esac
# ldd prints "not a dynamic executable" (exit 1) or "statically linked".
ldd_out=$(ldd "$bin" 2>&1 || true)
echo "ldd: $ldd_out"
case "$ldd_out" in
*"not a dynamic executable"* | *"statically linked"*) ;;
*) echo "build-image.sh: ldd lists shared libraries for $bin" >&2; exit 1 ;;
esac
"$bin" --version
if [ "$package" = kata-pulse ]; then
    # The static binary runs jemalloc with the agent's own options (a
    # symbol read before main; a link that lost it would run the defaults).
    opts=$(_RJEM_MALLOC_CONF=stats_print:true,stats_print_opts:mdablxe "$bin" --version 2>&1 || true)
    for want in "opt.narenas: 1" "opt.tcache: false"; do
        case "$opts" in
        *"$want"*) ;;
        *) echo "build-image.sh: $bin does not run jemalloc with $want" >&2; exit 1 ;;
        esac
    done
    echo "allocator: jemalloc, narenas 1, tcache off"
fi

context=$(mktemp -d "${TMPDIR:-/tmp}/$package-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
cp "$bin" "$context/$package"
cp "$dockerfile" "$context/Dockerfile"
# The repository's .dockerignore admits the kata-pulse binary alone; the
# context holds nothing else anyway.
if [ "$package" = kata-pulse ]; then cp .dockerignore "$context/"; fi

buildah() { command buildah --storage-driver vfs "$@"; }

echo "==> buildah bud -t $name"
buildah bud --isolation chroot --build-arg "VERSION=$version" -f "$context/Dockerfile" -t "$name" "$context"

mkdir -p "$(dirname "$output")"
rm -f "$output"
echo "==> buildah push $name oci-archive:$output"
# The reference after the path names the image inside the archive.
buildah push "$name" "oci-archive:$output:$name"
# The archive is the product; keep buildah's storage from growing per build.
buildah rmi "$name" >/dev/null 2>&1 || true

size=$(du -h "$output" | cut -f1)
echo "==> image $name written ($size)"
echo "$output"
