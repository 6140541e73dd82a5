#!/usr/bin/env bash
# The whole test suite: installs the SDK worker fixtures (npm `inngest`, PyPI `inngest`) when
# missing or stale, then runs every Rust test, including the end-to-end ones that start real
# sluice and worker processes.
set -euo pipefail
cd "$(dirname "$0")/.."

ts=fixtures/ts-worker
if [ ! -f "$ts/node_modules/.package-lock.json" ] || [ "$ts/package-lock.json" -nt "$ts/node_modules/.package-lock.json" ]; then
  echo "installing $ts (npm ci)" >&2
  npm ci --prefix "$ts" --no-audit --no-fund --loglevel=error >&2
fi
bash fixtures/py-worker/setup.sh

cargo test --workspace --locked "$@"
