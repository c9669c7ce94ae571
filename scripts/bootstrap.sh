#!/usr/bin/env bash
# Installs what building, testing and running Verity needs, when it is missing:
#   - libclang (bindgen, for libmdbx's mdbx-sys build)
#   - nats-server with JetStream (tests and the devnet start their own)
#   - web3.py and viem (the e2e tests sign and send with real Ethereum client libraries; viem at
#     the version pinned in tests/e2e/clients/package-lock.json)
# Idempotent and quiet when everything is already there.
set -euo pipefail

need_apt=()
if ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null && ! compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null; then
  need_apt+=(libclang-dev)
fi
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  need_apt+=(nats-server)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import web3' >/dev/null 2>&1; then
  echo "bootstrap: installing web3.py"
  python3 -m pip install --quiet 'web3>=7,<9'
fi

clients="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e/clients"
if ! command -v node >/dev/null 2>&1; then
  echo "bootstrap: node is missing; install Node.js (20 or newer) for the viem e2e clients" >&2
  exit 1
fi
if [ ! -f "$clients/node_modules/viem/package.json" ] \
  || ! cmp -s "$clients/package-lock.json" "$clients/node_modules/.package-lock.json.installed"; then
  echo "bootstrap: installing viem (npm ci)"
  (cd "$clients" && npm ci --no-audit --no-fund --silent && cp package-lock.json node_modules/.package-lock.json.installed)
fi
