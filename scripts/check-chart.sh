#!/usr/bin/env bash
# Check the Helm chart offline, as CI does: helm lint (helm-sdkpy, Helm's own library) with the
# default values and every helm/ci/*.yaml (lint renders every template and enforces
# values.schema.json), the rendered manifests against the Kubernetes schemas
# (kubernetes-validate), and the edge's Envoy config: equal to what ops/servers/envoy.py renders
# and accepted by `envoy --mode validate`. Exits non-zero on any error. See ops/chart.py.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
exec "$VENV/bin/python" -m ops.chart --chart helm "$@"
