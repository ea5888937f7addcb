#!/usr/bin/env bash
# Contract checks: buf lint (STANDARD), formatting, and FILE-level breaking changes against the
# last commit of main (on main itself: against the previous commit).
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=.venv/bin/buf
$BUF lint
$BUF format --diff --exit-code
if git rev-parse --verify -q HEAD >/dev/null; then
  branch=$(git rev-parse --abbrev-ref HEAD)
  if [ "$branch" = main ]; then
    against=$(git rev-parse -q --verify HEAD~1 || true)
  else
    against=$(git rev-parse -q --verify main || true)
  fi
  if [ -n "$against" ] && git cat-file -e "$against:buf.yaml" 2>/dev/null; then
    $BUF breaking --against ".git#ref=$against"
    echo "protos: lint clean, no breaking change against ${against:0:12}"
    exit 0
  fi
fi
echo "protos: lint clean (no earlier contract to compare against)"
