#!/usr/bin/env bash
# One command from connection logs to a model for the `onnx` strategy:
#   ./plugins/onnx/train/train.sh --log conns.jsonl --out model.onnx
# Installs the pinned tools (requirements.txt) into .deps/train on first use (PyPI only).
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
if ! PYTHONPATH="$root/.deps/train" python3 -c "import sklearn, skl2onnx, onnx" 2>/dev/null; then
  "$root/scripts/setup-onnx.sh" --train >/dev/null
fi
PYTHONPATH="$root/.deps/train" exec python3 "$root/plugins/onnx/train/train.py" "$@"
