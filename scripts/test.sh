#!/usr/bin/env bash
# Everything CI checks, in order of speed: lint, types, contracts, generated clients, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
step() { printf '\n== %s\n' "$*"; }

step "ruff";           $BIN/ruff check . && $BIN/ruff format --check .
step "mypy";           $BIN/mypy .
step "contracts";      bash scripts/check-protos.sh
step "web clients";    (cd clients/web && npm run -s typecheck)
step "generated code is reproducible"
before=$(find gen clients/python/lastmile_client clients/web/src/gen -type f -exec sha256sum {} + | sort)
bash scripts/gen-protos.sh >/dev/null
after=$(find gen clients/python/lastmile_client clients/web/src/gen -type f -exec sha256sum {} + | sort)
[ "$before" = "$after" ] || { echo "regenerating changed the generated code"; exit 1; }
step "pytest"
# pytest exits 5 when it collected nothing: that is a failure here, like any other non-zero.
# The slowest tests are listed so a test drifting towards its time limits shows in CI logs.
$BIN/pytest --durations=15 "$@"
