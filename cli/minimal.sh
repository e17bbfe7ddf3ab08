#!/usr/bin/env bash
# Builds the minimal `switchyard`: the `tunnel` subcommand only (`--no-default-features`),
# optimised for size (profile `minimal`), with glibc linked in statically, so that one file
# runs anywhere with a Linux kernel and a tunnel end holds about 2.3 MB resident.
# Prints the executable's path as its last line.
#
# Static glibc needs `libc.a`, which Debian's libc6-dev (there wherever gcc is) ships.
# `--target` is explicit so that RUSTFLAGS reach only the target, never the build scripts
# and proc-macros, which cannot be linked statically. Name resolution (`--remote
# name:port`) works without NSS modules for files and DNS, which glibc 2.34 and later have
# built in.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --profile minimal -p switchyard-cli --no-default-features --target "$host" >&2
target_dir=${CARGO_TARGET_DIR:-target}
echo "$target_dir/$host/minimal/switchyard"
