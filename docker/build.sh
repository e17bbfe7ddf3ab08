#!/usr/bin/env bash
# The build stage of the Dockerfile: builds the full `switchyard` (release profile, the
# committed Cargo.lock) and installs it as OUT_DIR/switchyard. tests/all.sh's `docker`
# stage runs this same script, so CI builds the image's binary exactly as `docker build`
# does, on a machine with no container engine.
set -euo pipefail
out=${1:?usage: docker/build.sh OUT_DIR}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked -p switchyard-cli
install -D -m 0755 "${CARGO_TARGET_DIR:-target}/release/switchyard" "$out/switchyard"
echo "$out/switchyard"
