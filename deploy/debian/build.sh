#!/usr/bin/env bash
# Builds target/debian/sdbridge_<version>-1_<arch>.deb with cargo-deb:
# /usr/bin/sdbridge, the systemd unit (examples/sdbridge.service, enabled
# on install, restarted on upgrade), /etc/sdbridge/sdbridge.yml (a
# conffile), man pages and shell completions. Prints the .deb's path.
#
#   deploy/debian/build.sh     (cargo install cargo-deb --locked, once)
#
# The man pages and completions come from the binary itself (sdbridge
# manpage, sdbridge completions), so they match the command line built.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --locked
bin=target/release/sdbridge
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/systemd" "$assets/completions"
"$bin" manpage --dir "$assets/man"
"$bin" completions bash >"$assets/completions/sdbridge.bash"
"$bin" completions zsh >"$assets/completions/_sdbridge"
"$bin" completions fish >"$assets/completions/sdbridge.fish"
# The one unit, pointed at where the package puts the binary.
grep -q '^ExecStart=/usr/local/bin/sdbridge ' examples/sdbridge.service
sed 's|/usr/local/bin/sdbridge|/usr/bin/sdbridge|g' examples/sdbridge.service \
  >"$assets/systemd/sdbridge.service"
# --no-build: the binary above is the one packaged; --strip: without the
# line tables the release profile keeps for backtraces on the build host.
cargo deb --no-build --strip --locked --quiet | tail -n 1
