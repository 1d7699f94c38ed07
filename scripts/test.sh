#!/usr/bin/env bash
# Runs every test on a fresh Debian machine with Rust, as root (the lab tests build network
# namespaces). Installs what the tests need when it is missing:
#   - Debian: iproute2, iptables (the lab), curl (a real client), python3-pip (below),
#     chromium + nodejs + npm (the dashboard's browser test);
#   - PyPI: the pinned onnxruntime wheel into .deps/ (the onnx strategy's C library);
#   - npm: the pinned playwright-core into tests/browser/node_modules (no browser download).
#   - Debian: gcc-mingw-w64-x86-64 and wine (the Windows build and its tests), systemd (for
#     systemd-analyze); rustup: the Windows and macOS targets.
# Then builds the binary and every plugin the lab tests load, cross-builds netmix.exe and the
# plugin DLLs and runs the Windows tests under Wine, compile-checks macOS, and runs the whole
# workspace's tests.
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
command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=(gcc-mingw-w64-x86-64)
command -v wine >/dev/null || missing+=(wine wine64)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]} (Debian)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in x86_64-w64-mingw32-gcc:gcc-mingw-w64-x86-64 wine:wine systemd-analyze:systemd; do
  command -v "${tool%%:*}" >/dev/null || {
    echo "test.sh: ${tool%%:*} is still missing after apt-get install ${tool#*:}; the Windows/systemd tests cannot run" >&2
    exit 1
  }
done
for target in x86_64-pc-windows-gnu x86_64-apple-darwin aarch64-apple-darwin; do
  if ! rustup target list --installed | grep -qx "$target"; then
    echo "test.sh: adding the Rust target $target (rustup)" >&2
    rustup target add "$target" >/dev/null 2>&1 || {
      echo "test.sh: cannot add the Rust target $target (rustup target add $target failed)" >&2
      exit 1
    }
  fi
done

NETMIX_ORT_LIB="$(./scripts/setup-onnx.sh)"
export NETMIX_ORT_LIB
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null

cargo build --workspace --bins --lib

# macOS: compile-checked (the IP_BOUND_IF path), no warnings.
for target in x86_64-apple-darwin aarch64-apple-darwin; do
  RUSTFLAGS="-D warnings" cargo check -q --target "$target" --workspace --exclude netmix-integration --lib --bins
  echo "test.sh: macOS $target: engine and plugins compile" >&2
done

# Windows: netmix.exe and every plugin DLL (mingw), then the engine's and plugin-api's tests
# under Wine (.cargo/config.toml's runner), counted. The same RUSTFLAGS for both, so nothing is
# built twice.
win=x86_64-pc-windows-gnu
RUSTFLAGS="-D warnings" cargo build -q --target "$win" --workspace --exclude netmix-integration
# The tests crate too (the Linux namespace lab compiles to nothing there; lab-delay says so).
RUSTFLAGS="-D warnings" cargo build -q --target "$win" -p netmix-integration --lib --bins --tests
winlog="$(mktemp)"
set +e
RUSTFLAGS="-D warnings" cargo test --target "$win" -p netmix-engine -p netmix-plugin-api --no-fail-fast >"$winlog" 2>&1
winrc=$?
set -e
grep -E "^test .*(FAILED|ignored)|^test result" "$winlog" >&2 || true
awk '/^test result:/ { p += $4; f += $6; i += $8 } END {
  printf "test.sh: Windows tests run under Wine: %d passed, %d failed, %d ignored. Wine cannot show real per-interface routing (IP_UNICAST_IF is emulated; interfaces are the Linux ones): that is tested on Linux.\n", p, f, i
}' "$winlog" >&2
if [ "$winrc" -ne 0 ]; then
  cat "$winlog" >&2
  echo "test.sh: the Windows tests failed under Wine" >&2
  exit 1
fi

cargo test --workspace --no-fail-fast
