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

# The end-to-end suite once more with every sluice process on PostgreSQL (database `test` on
# 127.0.0.1:5432, or SLUICE_TEST_PG_URL; a fresh schema per sluice), including the cluster tests
# (several nodes, kill -9 of one, a database restart). SLUICE_SKIP_PG=1 leaves it out.
if [ "${SLUICE_SKIP_PG:-}" != 1 ]; then
  SLUICE_TEST_BACKEND=postgres cargo test -p sluice-cli --locked --tests "$@"
fi
