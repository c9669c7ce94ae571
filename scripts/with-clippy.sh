#!/usr/bin/env bash
# Runs a cargo command with clippy as the compiler of the workspace's own crates
# (RUSTC_WORKSPACE_WRAPPER, what `cargo clippy` sets itself), denying warnings: the build then
# lints every workspace crate it compiles, and shares every dependency's artifacts with the
# build and test steps after it. `cargo clippy` checks instead of building, and a check of a
# dependency is an artifact of its own, so `make test` used to compile all ~400 dependencies
# twice (ADR 0011).
#   scripts/with-clippy.sh cargo build --all-targets
set -euo pipefail
driver="$(dirname "$(rustup which cargo 2>/dev/null || command -v cargo)")/clippy-driver"
if [ ! -x "$driver" ]; then
  driver="$(command -v clippy-driver || true)"
fi
if [ -z "$driver" ] || [ ! -x "$driver" ]; then
  echo "with-clippy: clippy-driver not found (rustup component add clippy)" >&2
  exit 1
fi
export RUSTC_WORKSPACE_WRAPPER="$driver"
# cargo-clippy's own way of passing `-- -D warnings` to the driver.
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
exec "$@"
