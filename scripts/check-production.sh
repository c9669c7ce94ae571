#!/usr/bin/env bash
# Fails when a production binary (every [[bin]] of the workspace's default members, i.e. what
# `cargo build --bins`, `make run`, the Dockerfile and `make bench` build) was compiled with a
# test-only feature. A build with one says so in its `--version` ("test build: <feature>");
# the fault-injecting sequencer of tests/e2e is the one binary allowed to.
#   scripts/check-production.sh [PROFILE_DIR]   (default target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/debug}"

bins="$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
meta = json.load(sys.stdin)
default = set(meta.get("workspace_default_members") or meta["workspace_members"])
for package in meta["packages"]:
    if package["id"] in default:
        for target in package["targets"]:
            if "bin" in target["kind"]:
                print(target["name"])
')"

failed=0
count=0
for bin in $bins; do
  path="$dir/$bin"
  if [ ! -x "$path" ]; then
    echo "check-production: $path is missing (build it with cargo build --bins)" >&2
    failed=1
    continue
  fi
  version="$("$path" --version 2>&1 || true)"
  count=$((count + 1))
  if grep -q "test build" <<<"$version"; then
    echo "check-production: $path is a test build: $version" >&2
    failed=1
  fi
done
if [ "$count" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "check-production: no production binary found in the workspace's default members" >&2
  failed=1
fi
if [ "$failed" -ne 0 ]; then
  echo "check-production: production binaries must not contain test-only code; build them with" >&2
  echo "  cargo build --bins   (the workspace's default members exclude tests/e2e)" >&2
  exit 1
fi
echo "check-production: $count production binaries in $dir, none built with a test-only feature"
