#!/usr/bin/env bash
# Runs one step of `make test` and prints its wall time, so a CI log says where the minutes go.
#   scripts/step.sh NAME COMMAND [ARGS...]
set -uo pipefail
name="$1"
shift
start=$(date +%s)
echo "==> step $name: $*"
"$@"
status=$?
echo "==> step $name: $(( $(date +%s) - start )) s (exit $status)"
exit "$status"
