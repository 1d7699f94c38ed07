#!/usr/bin/env bash
# Runs every test: builds the binary and the plugin libraries the lab tests load, then the
# whole workspace's tests. Needs root (network namespaces); see the README.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --lib
cargo test --workspace --no-fail-fast
