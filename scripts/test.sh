#!/usr/bin/env bash
# Runs every test on a fresh Debian machine with Rust, as root (the lab tests build network
# namespaces). Installs what the tests need when it is missing:
#   - Debian: iproute2, iptables (the lab), curl (a real client), python3-pip (below),
#     chromium + nodejs + npm (the dashboard's browser test);
#   - PyPI: the pinned onnxruntime wheel into .deps/ (the onnx strategy's C library);
#   - npm: the pinned playwright-core into tests/browser/node_modules (no browser download).
# Then builds the binary and every plugin the lab tests load, and runs the whole workspace's
# tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "the netmix test suite builds network namespaces: run it as root (sudo $0)" >&2
  exit 1
fi

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v curl >/dev/null || missing+=(curl)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]} (Debian)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

NETMIX_ORT_LIB="$(./scripts/setup-onnx.sh)"
export NETMIX_ORT_LIB
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null

cargo build --workspace --bins --lib
cargo test --workspace --no-fail-fast
