#!/usr/bin/env bash
# Builds netmix in release mode and packs what a user installs, into dist/ (gitignored):
#
#   dist/netmix-<version>-x86_64-linux.tar.gz
#   dist/netmix-<version>-x86_64-windows.zip
#
# <version> is the workspace version (Cargo.toml, [workspace.package]). Each archive holds one
# folder, netmix-<version>/, with:
#
#   netmix (netmix.exe)        the binary
#   plugins/                   every shipped strategy plugin (the cdylib crates under plugins/,
#                              not plugins/fixtures/): libnetmix_strategy_*.so on Linux,
#                              netmix_strategy_*.dll on Windows. netmix loads the plugins/ folder
#                              next to its binary.
#   models/onnx/default.onnx   the onnx strategy's shipped model (plugins/onnx/model/). The
#                              plugin has the same model built in and uses that by default; the
#                              file is for `[strategies.onnx] model = "..."` and for comparing a
#                              retrained model with it.
#   configs/                   the example configs
#   README.md, LICENSE-*       the readme and the licence texts (MIT OR Apache-2.0)
#   systemd/netmix.service     (Linux only) the service unit, see README "Install"
#
# The ONNX Runtime library the onnx strategy runs its model with is not packed (see README).
#
#   scripts/package.sh                 build both, pack both
#   scripts/package.sh --linux-only    only the Linux archive (no Windows toolchain needed)
#   scripts/package.sh --no-build      pack what target/ already holds (fails naming a missing file)
#   scripts/package.sh --debug         the debug build instead of release (the test suite packs
#                                      the debug build it already has: same layout, less time)
#
# Needs cargo, python3 (reads `cargo metadata`, writes both archives), and for Windows the Rust
# target x86_64-pc-windows-gnu (rustup target add x86_64-pc-windows-gnu) and the mingw-w64 linker
# x86_64-w64-mingw32-gcc (Debian: gcc-mingw-w64-x86-64). Anything missing stops the script with
# one line naming it; nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

WINDOWS_TARGET=x86_64-pc-windows-gnu
linux=1
windows=1
build=1
profile=release
for arg in "$@"; do
  case "$arg" in
    --linux-only) windows=0 ;;
    --no-build) build=0 ;;
    --debug) profile=debug ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "package.sh: unknown argument $arg (expected --linux-only, --no-build, --debug)" >&2
      exit 64
      ;;
  esac
done

die() {
  echo "package.sh: $*" >&2
  exit 1
}

command -v cargo >/dev/null || die "cargo is missing (install Rust: https://rustup.rs)"
command -v python3 >/dev/null || die "python3 is missing (Debian: apt-get install python3); it reads cargo metadata and writes the archives"

# The Windows toolchain, checked before anything is built.
if [ "$windows" = 1 ]; then
  # Harmless when .cargo/config.toml names the same linker; needed while it does not.
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER="${CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER:-x86_64-w64-mingw32-gcc}"
  command -v "$CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER" >/dev/null ||
    die "the Windows linker $CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER is missing (Debian: apt-get install gcc-mingw-w64-x86-64), or pass --linux-only"
  libdir="$(rustc --print target-libdir --target "$WINDOWS_TARGET" 2>/dev/null || true)"
  if [ -z "$libdir" ] || ! compgen -G "$libdir/libstd-*.rlib" >/dev/null; then
    die "the Rust target $WINDOWS_TARGET is not installed for this toolchain (rustup target add $WINDOWS_TARGET), or pass --linux-only"
  fi
fi

# What to pack, from cargo itself: the version, the target folder, the shipped plugins.
# Lines: "version V", "target DIR", "plugin PACKAGE LIBNAME CRATE_DIR".
facts="$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, os, sys
m = json.load(sys.stdin)
root = m["workspace_root"]
plugins_dir = os.path.join(root, "plugins") + os.sep
fixtures_dir = os.path.join(root, "plugins", "fixtures") + os.sep
engine = [p for p in m["packages"] if p["name"] == "netmix-engine"]
if not engine:
    sys.exit("no netmix-engine package in the workspace")
# netmix-engine takes its version from [workspace.package] (version.workspace = true).
print("version", engine[0]["version"])
print("target", m["target_directory"])
for p in sorted(m["packages"], key=lambda p: p["name"]):
    path = p["manifest_path"]
    if not path.startswith(plugins_dir) or path.startswith(fixtures_dir):
        continue
    for t in p["targets"]:
        if "cdylib" in t["crate_types"]:
            print("plugin", p["name"], t["name"], os.path.dirname(path))
')" || die "cargo metadata failed (see above)"

version="$(awk '$1 == "version" { print $2 }' <<<"$facts")"
target_dir="$(awk '$1 == "target" { print $2 }' <<<"$facts")"
mapfile -t plugin_pkgs < <(awk '$1 == "plugin" { print $2 }' <<<"$facts")
mapfile -t plugin_libs < <(awk '$1 == "plugin" { print $3 }' <<<"$facts")
mapfile -t plugin_dirs < <(awk '$1 == "plugin" { print $4 }' <<<"$facts")
[ -n "$version" ] || die "cannot tell the workspace version from cargo metadata"
[ ${#plugin_pkgs[@]} -gt 0 ] || die "no strategy plugin crates (cdylib) found under plugins/"

packages=(-p netmix-engine)
for p in "${plugin_pkgs[@]}"; do packages+=(-p "$p"); done

if [ "$build" = 1 ]; then
  release_flag=()
  [ "$profile" = release ] && release_flag=(--release)
  echo "package.sh: cargo build ${release_flag[*]} ${packages[*]}" >&2
  cargo build "${release_flag[@]}" "${packages[@]}"
  if [ "$windows" = 1 ]; then
    echo "package.sh: cargo build ${release_flag[*]} --target $WINDOWS_TARGET ${packages[*]}" >&2
    cargo build "${release_flag[@]}" --target "$WINDOWS_TARGET" "${packages[@]}"
  fi
fi

top="netmix-$version"
dist="$root/dist"
mkdir -p "$dist"
stage_root="$(mktemp -d "$dist/.stage.XXXXXX")"
trap 'rm -rf "$stage_root"' EXIT

# need FILE: fails with one line when a build output is missing.
need() {
  [ -f "$1" ] && return 0
  if [ "$build" = 1 ]; then
    die "$1 is missing after the build"
  fi
  die "$1 is missing (--no-build packs existing outputs: build first with cargo build $([ "$profile" = release ] && echo --release)${2:+ --target $2})"
}

# stage OS: fills $stage_root/OS/$top for OS = linux | windows.
stage() {
  local os="$1" out bin_src bin_name lib_prefix lib_suffix triple=""
  if [ "$os" = linux ]; then
    out="$target_dir/$profile" bin_name=netmix lib_prefix=lib lib_suffix=.so
  else
    out="$target_dir/$WINDOWS_TARGET/$profile" bin_name=netmix.exe lib_prefix="" lib_suffix=.dll
    triple="$WINDOWS_TARGET"
  fi
  local dir="$stage_root/$os/$top"
  mkdir -p "$dir/plugins" "$dir/configs"
  bin_src="$out/$bin_name"
  need "$bin_src" "$triple"
  cp "$bin_src" "$dir/$bin_name"
  local i lib
  for i in "${!plugin_libs[@]}"; do
    lib="$out/$lib_prefix${plugin_libs[$i]}$lib_suffix"
    need "$lib" "$triple"
    cp "$lib" "$dir/plugins/"
    # A plugin's shipped model(s): <crate>/model/*.onnx → models/<crate folder>/.
    if compgen -G "${plugin_dirs[$i]}/model/*.onnx" >/dev/null; then
      mkdir -p "$dir/models/$(basename "${plugin_dirs[$i]}")"
      cp "${plugin_dirs[$i]}"/model/*.onnx "$dir/models/$(basename "${plugin_dirs[$i]}")/"
    fi
  done
  [ -f "$dir/models/onnx/default.onnx" ] || die "plugins/onnx/model/default.onnx (the onnx strategy's model) is missing"
  cp configs/*.toml "$dir/configs/"
  cp README.md "$dir/"
  local licences=0 f
  for f in LICENSE* LICENCE* COPYING*; do
    [ -f "$f" ] && cp "$f" "$dir/" && licences=1
  done
  [ "$licences" = 1 ] || [ "$os" = windows ] ||
    echo "package.sh: note: the repository has no licence file (LICENSE*, COPYING*); none is packed" >&2
  if [ "$os" = linux ]; then
    mkdir -p "$dir/systemd"
    cp scripts/systemd/netmix.service "$dir/systemd/"
  fi
}

# pack FORMAT SRC_PARENT OUT: archives SRC_PARENT/$top as OUT (tar.gz or zip), owned by root,
# directories 0755, files 0644, the binary 0755, entries in name order, one timestamp.
pack() {
  python3 - "$1" "$2" "$top" "$3" <<'PY'
import os, sys, tarfile, time, zipfile

fmt, parent, top, out = sys.argv[1:]
# One timestamp for every entry: $SOURCE_DATE_EPOCH when set (reproducible builds), else now.
mtime = int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
entries = []
for dirpath, dirnames, filenames in os.walk(os.path.join(parent, top)):
    dirnames.sort()
    rel = os.path.relpath(dirpath, parent)
    entries.append((rel, dirpath, True))
    for name in sorted(filenames):
        entries.append((os.path.join(rel, name), os.path.join(dirpath, name), False))

def mode(rel, is_dir):
    if is_dir or os.path.basename(rel) in ("netmix", "netmix.exe"):
        return 0o755
    return 0o644

tmp = out + ".part"
if fmt == "tar.gz":
    with tarfile.open(tmp, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
        for rel, path, is_dir in entries:
            info = tar.gettarinfo(path, arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = mode(rel, is_dir)
            info.mtime = mtime
            if is_dir:
                tar.addfile(info)
            else:
                with open(path, "rb") as f:
                    tar.addfile(info, f)
else:
    stamp = time.gmtime(max(mtime, 315532800))[:6]  # zip dates start in 1980
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for rel, path, is_dir in entries:
            name = rel.replace(os.sep, "/") + ("/" if is_dir else "")
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.create_system = 3  # unix, so that the modes below count
            info.external_attr = ((0o040000 if is_dir else 0o100000) | mode(rel, is_dir)) << 16
            if is_dir:
                info.external_attr |= 0x10  # MS-DOS directory flag
                z.writestr(info, b"")
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as f:
                    z.writestr(info, f.read())
os.replace(tmp, out)
PY
}

if [ "$linux" = 1 ]; then
  stage linux
  out="$dist/$top-x86_64-linux.tar.gz"
  pack tar.gz "$stage_root/linux" "$out"
  echo "$out"
fi
if [ "$windows" = 1 ]; then
  stage windows
  out="$dist/$top-x86_64-windows.zip"
  pack zip "$stage_root/windows" "$out"
  echo "$out"
fi
