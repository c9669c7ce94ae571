#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS each (default 60) on the
# nightly toolchain, starting from the seed corpus (fuzz/corpus/<target>, read only) and
# keeping what it finds in fuzz/work/<target> (ignored by git). Installs cargo-fuzz from
# crates.io when it is missing. A crash stops the run: its input is in
# fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/ with a name that says what it
# found, fix the cause, and `make test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
# Without AddressSanitizer by default: the targets' own code is safe Rust, where a finding is a
# panic (debug assertions, so integer overflow too, stay on), and ASan roughly halves the
# executions per second on two cores. FUZZ_SANITIZER=address runs with it (memory errors in
# the dependencies' unsafe code).
sanitizer="${FUZZ_SANITIZER:-none}"
targets="${FUZZ_TARGETS:-$(cd fuzz/fuzz_targets && ls -- *.rs | sed 's/\.rs$//' | tr '\n' ' ')}"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: cargo fuzz needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd fuzz
cargo +nightly fuzz build --sanitizer "$sanitizer"
for target in $targets; do
    mkdir -p "work/$target"
    echo "fuzz: $target for ${seconds} s"
    cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1
done
echo "fuzz: no crash in ${seconds} s per target ($targets)"
