#!/usr/bin/env bash
# Runs a Windows .exe under Wine, headless: cargo's runner for x86_64-pc-windows-gnu
# (.cargo/config.toml), so `cargo test --target x86_64-pc-windows-gnu` runs the tests in Wine.
#
# - A private Wine prefix under the target folder ($NETMIX_WINEPREFIX to override), made on
#   first use; nothing in the user's ~/.wine is touched.
# - Wine 8 lacks bcryptprimitives.dll, whose ProcessPrng every Rust >= 1.78 program imports (the
#   .exe would exit with code 53 at once): a stand-in built from processprng.c with mingw is put
#   into the prefix and preferred over Wine's own.
# Fails with one line when wine or the mingw compiler is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
command -v wine >/dev/null || { echo "wine-runner: wine is not installed (Debian: apt-get install wine wine64)" >&2; exit 127; }
prefix="${NETMIX_WINEPREFIX:-${CARGO_TARGET_DIR:-$root/target}/wine-prefix}"
export WINEPREFIX="$prefix" WINEDEBUG="${WINEDEBUG:--all}" WINEDLLOVERRIDES="bcryptprimitives=n;${WINEDLLOVERRIDES:-}"
dll="$prefix/drive_c/windows/system32/bcryptprimitives.dll"
if [ ! -f "$dll" ]; then
  command -v x86_64-w64-mingw32-gcc >/dev/null || { echo "wine-runner: x86_64-w64-mingw32-gcc is missing (Debian: apt-get install gcc-mingw-w64-x86-64)" >&2; exit 127; }
  mkdir -p "$prefix"
  # A new prefix: wineboot sets it up (no window: there is no display).
  DISPLAY= wineboot --init >/dev/null 2>&1 || true
  mkdir -p "$(dirname "$dll")"
  x86_64-w64-mingw32-gcc -O2 -shared -o "$dll.tmp" "$here/processprng.c" -lbcrypt
  mv "$dll.tmp" "$dll"
fi
exec env DISPLAY= wine "$@"
