#!/usr/bin/env bash
# Builds the .deb (cargo-deb) and the .rpm (cargo-generate-rpm) from a release build:
#   packaging/build.sh            -> target/debian/outpost_*.deb, target/generate-rpm/outpost-*.rpm
# Installs the two cargo tools from crates.io when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm

cargo build --release --bin outpost
strip -s target/release/outpost 2>/dev/null || true
# dpkg-shlibdeps computes Depends from the binary's shared libraries.
cargo deb --no-build --no-strip
cargo generate-rpm
ls -1 target/debian/*.deb target/generate-rpm/*.rpm
