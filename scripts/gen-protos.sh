#!/usr/bin/env bash
# Regenerate every client and stub from protos/ (the only source of truth):
#   gen/python/                     grpcio messages, typed stubs (.pyi) and service stubs
#   clients/python/lastmile_client/ betterproto clients (asyncio, grpclib)
#   clients/web/src/gen/            TypeScript messages and service descriptors for grpc-web
# Generator versions are pinned by requirements.lock and clients/web/package-lock.json.
# `--python-only` skips the TypeScript clients (container images need no Node.js).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"

WEB=1
[ "${1:-}" = "--python-only" ] && WEB=0

mapfile -t PROTOS < <(find protos -name '*.proto' | LC_ALL=C sort)

rm -rf gen/python clients/python/lastmile_client
mkdir -p gen/python clients/python/lastmile_client
if [ "$WEB" = 1 ]; then rm -rf clients/web/src/gen && mkdir -p clients/web/src/gen; fi

# The plugins announce every file they write on stderr; keep only real messages.
protoc() { "$VENV/bin/python" -m grpc_tools.protoc -I protos "$@" 2> >(grep -v '^Writing' >&2); }

protoc --python_out=gen/python --pyi_out=gen/python \
  --grpc_python_out=gen/python --mypy_grpc_out=gen/python "${PROTOS[@]}"
# Every generated folder is a regular package so mypy and pytest resolve them the same way.
find gen/python/lastmile -type d -exec touch {}/__init__.py \;

protoc --python_betterproto_out=clients/python/lastmile_client "${PROTOS[@]}"
touch clients/python/lastmile_client/__init__.py

if [ "$WEB" = 0 ]; then
  :
elif [ -x clients/web/node_modules/.bin/protoc-gen-es ]; then
  protoc --plugin=protoc-gen-es=clients/web/node_modules/.bin/protoc-gen-es \
    --es_out=clients/web/src/gen --es_opt=target=ts,import_extension=js "${PROTOS[@]}"
else
  echo "gen-protos: clients/web/node_modules missing; run 'make setup' for the TypeScript clients" >&2
  exit 1
fi
echo "gen-protos: generated from ${#PROTOS[@]} proto files"
