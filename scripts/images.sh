#!/usr/bin/env bash
# Builds one image per service from the Dockerfile (`make images`), tagged
#   $REGISTRY/verity-<service>:$TAG   (defaults: ghcr.io/verity-rollup, the workspace version)
# with whichever container engine is here (docker or podman; ENGINE=... to choose). Pass
# PUSH=1 to push them. Fails, saying so, when no engine answers.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY="${REGISTRY:-ghcr.io/verity-rollup}"
TAG="${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}"
SERVICES=(sequencer ingress replica gateway prover autoscaler cli)

engine="${ENGINE:-}"
if [ -z "$engine" ]; then
  for candidate in docker podman; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
      engine="$candidate"
      break
    fi
  done
fi
if [ -z "$engine" ]; then
  echo "images: no container engine answers here (tried docker and podman: is the daemon running?)" >&2
  exit 1
fi

for service in "${SERVICES[@]}"; do
  name="verity-${service}"
  [ "$service" = cli ] && name="verity"
  image="${REGISTRY}/${name}:${TAG}"
  echo "images: building ${image} (target ${service})"
  DOCKER_BUILDKIT=1 "$engine" build --target "$service" -t "$image" .
  if [ "${PUSH:-0}" = 1 ]; then
    "$engine" push "$image"
  fi
done
"$engine" images --filter "reference=${REGISTRY}/verity*:${TAG}"
