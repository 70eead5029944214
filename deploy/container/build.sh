#!/usr/bin/env bash
# Builds sdbridge's OCI image with buildah, offline (FROM scratch, no
# registry): the release binary, the shared libraries it links (from
# ldd), CA certificates, a non-root user, a default config.
#
#   deploy/container/build.sh [TAG]      # default TAG: the crate's version
#
# The image is localhost/sdbridge:TAG in buildah's (and podman's) local
# storage; `podman run` uses it as it is, `buildah push` sends it to a
# registry or to docker-daemon:sdbridge:TAG. Environment:
#   SDBRIDGE_BINARY  the binary to ship (default: target/release/sdbridge,
#                    built with `cargo build --release --locked` first)
#   STORAGE_DRIVER, CONTAINERS_STORAGE_CONF  buildah's own
# Runs as root or rootless (no `buildah mount` needed).
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
tag=${1:-$version}
image=localhost/sdbridge:$tag
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

if [ -z "${SDBRIDGE_BINARY:-}" ]; then
  cargo build --release --locked
  binary=target/release/sdbridge
else
  binary=$SDBRIDGE_BINARY
fi
certs=/etc/ssl/certs/ca-certificates.crt
[ -f "$certs" ] || { echo "build.sh: $certs missing (apt-get install ca-certificates)" >&2; exit 1; }

stage=$(mktemp -d)
ctr=
cleanup() {
  rm -rf "$stage" "$stage.root.tar"
  if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# The binary, without its debug sections (the release profile keeps line
# tables for backtraces on the host; the image ships the code only).
install -D -m 0755 "$binary" "$stage/sdbridge"
strip --strip-debug "$stage/sdbridge"

# Its dynamic loader and libraries, each at the path ldd resolves it to.
# ldd lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
# "/lib64/ld-linux-x86-64.so.2 (0x...)"; a vDSO has no file.
libs=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
[ -n "$libs" ] || { echo "build.sh: ldd found no libraries in $binary" >&2; exit 1; }
for lib in $libs; do
  install -D -m 0755 "$(readlink -f "$lib")" "$stage$lib"
done

install -D -m 0644 "$certs" "$stage$certs"
install -D -m 0644 deploy/container/sdbridge.yml "$stage/etc/sdbridge/sdbridge.yml"
install -d -m 0755 "$stage/etc/sdbridge/file_sd"
# The user the image runs as (65532, as distroless's "nonroot"): named,
# so tools and logs show a name; it owns only the state directory.
printf 'root:x:0:0:root:/:/sbin/nologin\nsdbridge:x:65532:65532:sdbridge:/var/lib/sdbridge:/sbin/nologin\n' >"$stage/etc/passwd"
printf 'root:x:0:\nsdbridge:x:65532:\n' >"$stage/etc/group"
# Name resolution (Consul, upstream HTTP SD, database hosts): glibc's
# files and dns, both built into libc.so.6.
printf 'hosts: files dns\n' >"$stage/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$stage/etc/hosts"
install -d -m 0700 "$stage/var/lib/sdbridge"
install -d -m 1777 "$stage/tmp"

# The layer as a tar, so ownership is the image's whatever runs the build
# (a rootless build cannot chown files in a stage): everything root's but
# the state directory, the image user's. buildah add unpacks it.
tar -C "$stage" --numeric-owner --owner=0 --group=0 --sort=name \
  --exclude=./var/lib/sdbridge -cf "$stage.root.tar" .
tar -C "$stage" --numeric-owner --owner=65532 --group=65532 --no-recursion \
  -rf "$stage.root.tar" ./var/lib/sdbridge

ctr=$(buildah from --pull=never scratch)
buildah add "$ctr" "$stage.root.tar" / >/dev/null
buildah config \
  --entrypoint '["/sdbridge"]' \
  --cmd '["serve", "--config", "/etc/sdbridge/sdbridge.yml"]' \
  --user 65532:65532 \
  --port 9412/tcp \
  --volume /var/lib/sdbridge \
  --workingdir / \
  --stop-signal SIGTERM \
  --label org.opencontainers.image.title=sdbridge \
  --label org.opencontainers.image.description="Prometheus HTTP SD from static lists, file_sd, Consul, DNS, SQL and HTTP SD sources" \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.revision="$revision" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "$ctr"
buildah commit --quiet "$ctr" "$image" >/dev/null
echo "$image"
