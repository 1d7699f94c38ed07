#!/usr/bin/env bash
# Provides the ONNX Runtime C library for the `onnx` strategy plugin without any download
# outside PyPI: installs the pinned `onnxruntime` wheel into a repo-local folder (.deps/onnxruntime)
# and prints the path of libonnxruntime.so.1.31.1 (export it as NETMIX_ORT_LIB, or set the
# plugin's `library` option). Idempotent: does nothing when the library is already there.
#
#   ./scripts/setup-onnx.sh            # the runtime only (what the plugin and the tests need)
#   ./scripts/setup-onnx.sh --train    # also the pinned training tools (plugins/onnx/train)
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
DEST=.deps/onnxruntime
LIB="$DEST/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
PYTHON=${PYTHON:-python3}

mkdir -p .deps
[ -f .deps/.gitignore ] || echo '*' > .deps/.gitignore   # never committed

if [ ! -f "$LIB" ]; then
  if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    echo "setup-onnx: $PYTHON -m pip is not available; install python3-pip (apt-get install python3-pip)" >&2
    exit 1
  fi
  echo "setup-onnx: installing onnxruntime==$ORT_VERSION into $DEST (from PyPI)" >&2
  # --no-deps: only the C library inside the wheel is used; numpy etc. are not needed for that.
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$DEST" "onnxruntime==$ORT_VERSION" >&2
fi
if [ ! -f "$LIB" ]; then
  echo "setup-onnx: $LIB is missing after installing the wheel" >&2
  exit 1
fi

if [ "${1:-}" = "--train" ]; then
  echo "setup-onnx: installing the training tools (plugins/onnx/train/requirements.txt) into .deps/train" >&2
  "$PYTHON" -m pip install --quiet --disable-pip-version-check \
    --target .deps/train -r plugins/onnx/train/requirements.txt >&2
fi

realpath "$LIB"
