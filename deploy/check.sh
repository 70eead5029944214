#!/usr/bin/env bash
# Checks the operator's kit, each piece with its own ecosystem's tool:
#
#   alerts      promtool check rules; promtool test rules alerts_test.yml
#   kubernetes  kubernetes-validate --strict (offline schemas); sdbridge
#               check on the config the ConfigMap holds, laid out as the
#               Deployment mounts it
#   debian      cargo deb; dpkg -i; sdbridge --version; systemd-analyze
#               verify on the installed unit; the unit enabled; man -l;
#               reinstall (the upgrade path); dpkg -r, dpkg --purge
#   container   buildah builds the image (FROM scratch, offline) into a
#               private vfs store; its entrypoint and command run under
#               chroot from the image's own root filesystem, as its user,
#               listening on loopback: /-/ready answers 200
#
# .ci/run calls it after `cargo test`; it runs alone as well, as root
# (dpkg, chroot), all of it or some parts:
#   bash deploy/check.sh [alerts] [kubernetes] [debian] [container]
# Needs promtool (apt: prometheus), kubernetes-validate (pip), buildah,
# cargo-deb (cargo install cargo-deb --locked), systemd-analyze (apt:
# systemd), man (apt: man-db), curl, python3 with PyYAML. One release build
# (about 6 minutes from scratch on 2 cores); everything else takes about
# a minute. The package's service never starts: dpkg -i runs under a
# policy-rc.d that forbids it (.ci/run's, or one of its own). It ends
# only processes it started, by their id.
set -euo pipefail
cd "$(dirname "$0")/.."
parts=("$@")
for part in "${parts[@]}"; do
  case $part in alerts | kubernetes | debian | container) ;; *) echo "deploy/check.sh: no part $part" >&2; exit 2 ;; esac
done
want() { [ ${#parts[@]} -eq 0 ] || [[ " ${parts[*]} " == *" $1 "* ]]; }

for tool in promtool buildah cargo-deb systemd-analyze man curl python3 dpkg chroot; do
  command -v "$tool" >/dev/null || { echo "deploy/check.sh: $tool not found" >&2; exit 1; }
done
python3 -c 'import kubernetes_validate, yaml' ||
  { echo "deploy/check.sh: pip install kubernetes-validate" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
  echo "deploy/check.sh: run as root (dpkg -i, chroot)" >&2
  exit 1
fi

scratch=$(mktemp -d)
cleanups=()
cleanup() {
  local i
  for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do eval "${cleanups[i]}" || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT

started=$SECONDS
step_started=$SECONDS
step_name=
step() {
  if [ -n "$step_name" ]; then
    echo "deploy/check.sh: $step_name took $((SECONDS - step_started)) s"
  fi
  step_name=$1
  step_started=$SECONDS
  printf '\n== %s\n' "$1"
}
fail() { echo "deploy/check.sh: $*" >&2; exit 1; }
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

# A free loopback port.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Waits up to 30 s for http://127.0.0.1:PORT/-/ready to answer 200 while
# process PID lives.
wait_ready() { # port pid
  local code
  for _ in $(seq 150); do
    kill -0 "$2" 2>/dev/null || return 1
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/-/ready" || true)
    [ "$code" = 200 ] && return 0
    sleep 0.2
  done
  return 1
}

if want alerts; then
step "alerts: promtool"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
fi

bin=target/release/sdbridge
if want kubernetes || want debian || want container; then
  step "release build"
  # The one release build the checks, the package and the image share.
  cargo build --release --locked
fi

if want kubernetes; then
step "kubernetes: kubernetes-validate --strict, sdbridge check"
python3 -m kubernetes_validate --strict deploy/kubernetes/*.yaml
read -r k8s_config k8s_files < <(python3 deploy/kubernetes/lay_out.py "$scratch/k8s" deploy/kubernetes/*.yaml)
out=$("$bin" check "$k8s_config")
echo "$out"
grep -q ": OK (.* jobs, $k8s_files file_sd files)$" <<<"$out" ||
  fail "sdbridge check did not read the $k8s_files file_sd files of the targets ConfigMap"
"$bin" check deploy/container/sdbridge.yml
"$bin" check deploy/debian/sdbridge.yml
fi

if want debian; then
step "debian: cargo deb, dpkg -i, systemd-analyze verify, dpkg -r"
if dpkg-query -W -f '${Status}' sdbridge 2>/dev/null | grep -q 'ok installed'; then
  fail "an sdbridge package is installed already; this check would replace and purge it"
fi
# Run alone on a machine with systemd, the package's service must not
# start either (Debian's policy-rc.d convention, as .ci/run sets it).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  cleanups+=("rm -f /usr/sbin/policy-rc.d")
fi
deb=$(deploy/debian/build.sh)
[ -f "$deb" ] || fail "no .deb built (got: $deb)"
echo "$deb"
contents=$(dpkg-deb --contents "$deb")
for path in ./usr/bin/sdbridge ./usr/lib/systemd/system/sdbridge.service ./etc/sdbridge/sdbridge.yml \
  ./usr/share/man/man1/sdbridge.1.gz ./usr/share/man/man1/sdbridge-serve.1.gz \
  ./usr/share/bash-completion/completions/sdbridge; do
  grep -q " $path\$" <<<"$contents" || fail "$deb has no $path"
done
dpkg-deb --info "$deb" conffiles | grep -qx /etc/sdbridge/sdbridge.yml ||
  fail "/etc/sdbridge/sdbridge.yml is not a conffile"
cleanups+=("dpkg --purge sdbridge >/dev/null")
dpkg -i "$deb"
installed=$(/usr/bin/sdbridge --version | head -n 1)
echo "$installed"
[ "$installed" = "sdbridge, version $version (revision: $revision)" ] ||
  fail "installed sdbridge --version says: $installed"
unit=/usr/lib/systemd/system/sdbridge.service
grep -q '^ExecStart=/usr/bin/sdbridge ' "$unit" || fail "$unit does not run /usr/bin/sdbridge"
grep -q '^DynamicUser=yes' "$unit" || fail "$unit has no DynamicUser=yes (and the package creates no user)"
systemd-analyze verify "$unit"
# Enabled on install (deb-systemd-helper needs no running systemd for it).
[ -L /etc/systemd/system/multi-user.target.wants/sdbridge.service ] || fail "sdbridge.service not enabled"
/usr/bin/sdbridge check /etc/sdbridge/sdbridge.yml
MANPAGER=cat man -l /usr/share/man/man1/sdbridge.1.gz | grep -q 'sdbridge-serve(1)' ||
  fail "the installed man page does not render"
bash -c 'source /usr/share/bash-completion/completions/sdbridge && complete -p sdbridge' >/dev/null
# The upgrade path (postinst configure with the old version): the edited
# conffile stays.
echo "# edited" >>/etc/sdbridge/sdbridge.yml
dpkg -i --force-confold "$deb"
tail -n 1 /etc/sdbridge/sdbridge.yml | grep -qx '# edited' || fail "the conffile was replaced on upgrade"
dpkg -r sdbridge
[ ! -e /usr/bin/sdbridge ] || fail "/usr/bin/sdbridge left after dpkg -r"
dpkg --purge sdbridge
[ ! -e /etc/sdbridge/sdbridge.yml ] || fail "/etc/sdbridge/sdbridge.yml left after dpkg --purge"
fi

if want container; then
step "container: buildah build, run under chroot"
# A private store: nothing of the machine's own container storage is
# touched, and it all goes when the check ends.
cat >"$scratch/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$scratch/containers/storage"
runroot = "$scratch/containers/run"
EOF
export CONTAINERS_STORAGE_CONF=$scratch/storage.conf STORAGE_DRIVER=vfs
tag=check-$$
image=localhost/sdbridge:$tag
cleanups+=("buildah rmi -f '$image' >/dev/null")
built=$(SDBRIDGE_BINARY=$bin deploy/container/build.sh "$tag" | tail -n 1)
[ "$built" = "$image" ] || fail "build.sh printed $built, not $image"
buildah inspect --type image "$image" >"$scratch/image.json"
# A field of the image's OCI config, JSON-encoded.
config() { python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["OCIv1"]["config"].get(sys.argv[2])))' "$scratch/image.json" "$1"; }
entrypoint=$(config Entrypoint)
cmd=$(config Cmd)
user=$(config User)
echo "entrypoint $entrypoint, cmd $cmd, user $user"
[ "$entrypoint" = '["/sdbridge"]' ] || fail "entrypoint is $entrypoint"
[ "$user" = '"65532:65532"' ] || fail "the image runs as $user, not 65532:65532"
user=65532:65532
config Labels | grep -qF "\"org.opencontainers.image.revision\": \"$revision\"" ||
  fail "the image's revision label is not $revision"
ctr=$(buildah from --pull=never "$image")
cleanups+=("buildah rm '$ctr' >/dev/null")
root=$(buildah mount "$ctr")
cleanups+=("buildah umount '$ctr' >/dev/null")
[ ! -e "$root/bin/sh" ] || fail "the image has a shell"
mapfile -t argv < <(python3 -c 'import json, sys; [print(a) for a in json.loads(sys.argv[1]) + json.loads(sys.argv[2])]' "$entrypoint" "$cmd")
port=$(free_port)
# The image's own entrypoint and command, with only the listen address
# overridden to loopback; its root is the image's, its user the image's.
chroot --userspec="$user" "$root" "${argv[@]}" --listen "127.0.0.1:$port" >"$scratch/container.log" 2>&1 &
pid=$!
cleanups+=("kill $pid 2>/dev/null; wait $pid 2>/dev/null")
if ! wait_ready "$port" "$pid"; then
  cat "$scratch/container.log"
  fail "the image's sdbridge did not answer /-/ready with 200"
fi
echo "/-/ready: 200 from the image's sdbridge on 127.0.0.1:$port"
grep -q "^Uid:[[:space:]]*65532[[:space:]]" "/proc/$pid/status" || fail "the image's sdbridge does not run as 65532"
[ "$(curl -s "http://127.0.0.1:$port/http_sd")" = "[]" ] || fail "/http_sd of the empty default config is not []"
"$root/sdbridge" --version | grep -qF "(revision: $revision)" || fail "the image's binary is not this commit's"
kill "$pid"
wait "$pid" || true
fi

echo "deploy/check.sh: $step_name took $((SECONDS - step_started)) s"
echo "deploy/check.sh: all checks passed in $((SECONDS - started)) s"
