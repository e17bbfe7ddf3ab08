#!/usr/bin/env bash
# Runs every check Switchyard has. This is the one test command: `bash tests/all.sh`.
# CI runs it too, through .ci/run.
#
# Stages, in order (each runs even if an earlier one failed, so one run shows every failure):
#   1. fmt      cargo fmt --check, for the workspace and for the fuzz crate (not a member)
#   2. clippy   cargo clippy --workspace --all-targets -- -D warnings
#   3. purity   switchyard-core reads no clock, draws no entropy, opens no socket, is not
#               async, and depends on no runtime or entropy crate
#   4. test     cargo test --workspace: unit, integration, doc and example tests
#   5. minimal  the minimal tunnel build (cli/minimal.sh): linted, built, and its two ends
#               run in front of the full binary's services (cli/tests/minimal.rs)
#   6. docker   the Dockerfile's build stage (docker/build.sh) as `docker build` runs it,
#               then its binary checks the compose file's config (no container engine here)
#   7. fuzz     every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each
# It ends with the cargo test summary lines and one line `checks: N passed, N failed`.
# Exit status: 0 only if every stage passed.
#
# Environment:
#   FUZZ_SECONDS=N           seconds of fuzzing per target (default 20)
#   SWITCHYARD_SKIP_FUZZ=1   skip stage 7 on a local run; ignored when CI is set (CI=true)
#   CARGO_TARGET_DIR         honoured for the workspace; the fuzz crate always builds in
#                            fuzz/target, as its instrumented build shares nothing with it
#
# Fuzzing on the stable toolchain: `cargo fuzz run -s none TARGET -- -max_total_time=N`
# works as is, no nightly and no extra environment. With `-s none` cargo-fuzz passes rustc
# only stable flags (-Cpasses=sancov-module, -Cllvm-args=-sanitizer-coverage-*, --cfg fuzzing);
# checked with cargo-fuzz 0.13.2 and rustc 1.95. Only a sanitizer needs unstable flags:
# AddressSanitizer (cargo-fuzz's default, `-s address`) wants -Zsanitizer, so on stable run
# `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET` (about 10x fewer execs per second). If you tried
# it once without RUSTC_BOOTSTRAP, first `rm fuzz/target/.rustc_info.json`: cargo caches the
# failed compiler probe under a key that ignores RUSTC_BOOTSTRAP. Reproduce a crash CI reports with
# `cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...` (the input is also printed
# as Base64 in the log).

set -euo pipefail

# cargo-fuzz release installed when missing (by .ci/run on CI, by the fuzz stage locally).
CARGO_FUZZ_VERSION=0.13.2

# Installs cargo-fuzz unless some version of it is already there. .ci/run sources this file
# to call it, so the install lives in one place.
ensure_cargo_fuzz() {
    if cargo fuzz --version >/dev/null 2>&1; then
        echo "cargo-fuzz present: $(cargo fuzz --version)"
    else
        echo "installing cargo-fuzz $CARGO_FUZZ_VERSION (takes a few minutes on a new machine)"
        cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
    fi
}

section() {
    printf '\n==== %s ====\n' "$*"
}

is_ci() {
    [[ -n "${CI:-}" && "${CI}" != "false" && "${CI}" != "0" ]]
}

# --- the stages ----------------------------------------------------------------------------
# Each runs in a subshell with `set -e`, so any failing command fails the stage.

stage_fmt() {
    cargo fmt --all -- --check
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
}

stage_clippy() {
    # The fuzz harness (fuzz/src/lib.rs) is linted here too: core/tests/codec_props.rs
    # includes it. The fuzz targets themselves are one-line calls into it.
    cargo clippy --workspace --all-targets -- -D warnings
}

stage_purity() {
    # Time, randomness and the network reach core only as inputs (DESIGN.md, "The machine
    # contract"). Lines that are comments (`//`, `///`, `//!`) are ignored.
    local pattern='Instant::now|SystemTime::now|OffsetDateTime::now|thread_rng|rand::random|getrandom|OsRng'
    pattern+='|Uuid::new_v4|std::net::(TcpStream|TcpListener|UdpSocket)|\b(TcpStream|TcpListener|UdpSocket)\b'
    pattern+='|tokio::|smol::|async_std::|async fn |\.await\b'
    local hits
    hits=$(grep -rnE --include='*.rs' "$pattern" core/src | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true)
    if [[ -n "$hits" ]]; then
        echo "core/src reads a clock, draws entropy, touches a socket or is async:"
        printf '%s\n' "$hits"
        return 1
    fi
    echo "core/src: no clock, entropy, socket or async in code"

    # Nor may a dependency bring them in: runtimes, entropy sources, socket crates.
    local tree bad
    tree=$(cargo tree -p switchyard-core -e normal --prefix none)
    # "name@version" of each forbidden crate in core's tree.
    bad=$(printf '%s\n' "$tree" | awk '$1 ~ /^(smol|async-std|tokio|getrandom|rand|async-io|mio|socket2)$/ {
        sub(/^v/, "", $2); print $1 "@" $2 }' | sort -u)
    # One exception: ring (the TLS ciphers) depends on getrandom for its own system
    # generator, which core never calls: rustls's randomness and key exchange come from the
    # machine's seeded generator (core/src/tls/crypto.rs), and the only ring signer used,
    # Ed25519, draws nothing, nor do the AEADs that seal TLS records (core/src/tls/records.rs).
    # tls::tests checks that the same seed replays the same handshake bytes, which entropy
    # from the OS would break. getrandom is allowed only while ring is all that pulls it in.
    local allowed=() crate
    for crate in $bad; do
        if [[ $crate == getrandom@* ]]; then
            local dependents
            dependents=$(cargo tree -p switchyard-core -e normal -i "$crate" --depth 1 --prefix none | tail -n +2 | awk '{print $1}' | sort -u)
            if [[ $dependents == ring ]]; then
                allowed+=("$crate")
                echo "allowed: $crate, pulled in by ring only (never called: see core/src/tls/crypto.rs)"
            fi
        fi
    done
    for crate in ${allowed[@]+"${allowed[@]}"}; do
        bad=$(printf '%s\n' "$bad" | grep -vxF "$crate" || true)
    done
    if [[ -n "$bad" ]]; then
        echo "switchyard-core depends (normal edges) on crates it must not: $(paste -sd' ' - <<<"$bad")"
        for crate in $bad; do
            echo "how $crate gets in:"
            cargo tree -p switchyard-core -e normal --invert "$crate" || true
        done
        return 1
    fi
    echo "switchyard-core dependencies: $(printf '%s\n' "$tree" | awk '{print $1}' | sort -u | paste -sd' ' -)"
}

stage_test() {
    # --no-fail-fast: one failing test binary must not hide the others' results.
    cargo test --workspace --no-fail-fast 2>&1 | tee "$TEST_LOG"
}

stage_minimal() {
    cargo clippy -p switchyard-cli --no-default-features --all-targets -- -D warnings
    local minimal
    minimal=$(bash cli/minimal.sh | tail -n 1)
    echo "minimal build: $minimal ($(stat -c %s "$minimal") bytes)"
    SWITCHYARD_MINIMAL_BIN=$(realpath "$minimal") SWITCHYARD_REQUIRE_MINIMAL=1 \
        cargo test -p switchyard-cli --test minimal
}

stage_docker() {
    local binary
    binary=$(bash docker/build.sh "$WORK_DIR/image" | tail -n 1)
    "$binary" --version
    "$binary" config check docker/switchyard.toml
}

stage_fuzz() {
    ensure_cargo_fuzz
    # The fuzz crate is its own workspace; keep its instrumented build in fuzz/target.
    unset CARGO_TARGET_DIR
    local list
    list=$(cargo fuzz list)
    local -a targets
    mapfile -t targets <<<"$list"
    if [[ -z "$list" ]]; then
        echo "no fuzz targets found in fuzz/"
        return 1
    fi
    # Build every target first: a compile error shows once, and FUZZ_SECONDS is all fuzzing.
    cargo fuzz build -s none
    local target log failed=0
    for target in "${targets[@]}"; do
        log="$WORK_DIR/fuzz-$target.log"
        echo "fuzzing $target for ${FUZZ_SECONDS}s"
        if cargo fuzz run -s none "$target" -- -max_total_time="$FUZZ_SECONDS" >"$log" 2>&1; then
            grep -E '^Done [0-9]+ runs' "$log" | sed "s/^/  $target: /" || true
        else
            failed=1
            echo "  $target: FAILED. The end of its log:"
            tail -n 60 "$log"
        fi
    done
    return "$failed"
}

# --- the driver ----------------------------------------------------------------------------

main() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."

    FUZZ_SECONDS=${FUZZ_SECONDS:-20}
    if ! [[ "$FUZZ_SECONDS" =~ ^[1-9][0-9]*$ ]]; then
        echo "FUZZ_SECONDS must be a positive whole number of seconds, not '$FUZZ_SECONDS'" >&2
        exit 2
    fi
    WORK_DIR=$(mktemp -d)
    TEST_LOG="$WORK_DIR/cargo-test.log"
    : >"$TEST_LOG"
    trap 'rm -rf "$WORK_DIR"' EXIT

    local stages=(fmt clippy purity test minimal docker fuzz)
    local passed=0 failed=0 skipped=0 summary=() name start rc i=0
    for name in "${stages[@]}"; do
        i=$((i + 1))
        section "[$i/${#stages[@]}] $name"
        if [[ "$name" == fuzz && "${SWITCHYARD_SKIP_FUZZ:-0}" != 0 ]] && ! is_ci; then
            echo "skipped: SWITCHYARD_SKIP_FUZZ is set (never skipped under CI)"
            skipped=$((skipped + 1))
            summary+=("$(printf '%-8s skipped' "$name")")
            continue
        fi
        start=$SECONDS
        set +e
        (
            set -e
            "stage_$name"
        )
        rc=$?
        set -e
        if [[ $rc -eq 0 ]]; then
            passed=$((passed + 1))
            summary+=("$(printf '%-8s ok      %4ss' "$name" $((SECONDS - start)))")
        else
            failed=$((failed + 1))
            summary+=("$(printf '%-8s FAILED  %4ss  (exit %s)' "$name" $((SECONDS - start)) "$rc")")
        fi
        echo "---- $name: $([[ $rc -eq 0 ]] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - start))s"
    done

    section "summary"
    printf '%s\n' "${summary[@]}"
    echo
    echo "cargo test results:"
    if grep -E '^test result:' "$TEST_LOG"; then
        # Totals over every test binary and the doc tests.
        grep -E '^test result:' "$TEST_LOG" | awk '
            { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
            END { printf "cargo test, all binaries: %d passed; %d failed; %d ignored\n", p, f, g }'
    else
        echo "(none: cargo test did not run to the end)"
    fi
    echo
    if [[ $skipped -gt 0 ]]; then
        echo "checks: $passed passed, $failed failed, $skipped skipped"
    else
        echo "checks: $passed passed, $failed failed"
    fi
    [[ $failed -eq 0 ]]
}

# Run unless sourced (.ci/run sources this file for ensure_cargo_fuzz).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
