#!/usr/bin/env bash
# Install whatever is missing for running and testing the platform, then generate code.
# Idempotent and quick when nothing changed: each step is skipped when its inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMPS=$VENV/.stamps
say() { printf 'setup: %s\n' "$*"; }

# 1. Debian packages: PostgreSQL 15 and Redis (servers run under the project's own dirs),
#    Chromium for the browser end-to-end tests (driven by npm playwright-core).
APT_PACKAGES=(postgresql-15 redis-server chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Python 3.12 virtualenv (the OSRM wheels need 3.12+).
find_python() {
  # pyenv puts a python3.12 shim on PATH that fails unless 3.12 is selected: try each candidate.
  local candidate
  for candidate in python3.12 "$(pyenv root 2>/dev/null)/versions/3.12.1/bin/python3.12" \
      /usr/bin/python3.12 /usr/local/bin/python3.12; do
    if "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1; then
      command -v "$candidate"; return
    fi
  done
  echo "setup: Python 3.12 not found (install it, e.g. with pyenv)" >&2; exit 1
}
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$(find_python)" -m venv "$VENV"
fi
mkdir -p "$STAMPS"

changed() {  # changed NAME FILE...: true when the files differ from the last successful run
  local sum; sum=$(cat "${@:2}" | sha256sum | cut -d' ' -f1)
  [ "$(cat "$STAMPS/$1" 2>/dev/null)" != "$sum" ] && { echo "$sum" > "$STAMPS/$1.new"; return 0; }
  return 1
}
done_step() { mv "$STAMPS/$1.new" "$STAMPS/$1"; }

# 3. Pinned wheels: requirements.lock holds exactly what the last green CI run had.
if changed pip requirements.lock; then
  say "installing Python packages from requirements.lock"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.lock
  done_step pip
fi
# The project's own packages and the generated code are importable everywhere in the venv.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n' "$ROOT" "$ROOT/gen/python" "$ROOT/clients/python" > "$site/lastmile-paths.pth"
cat > "$VENV/bin/lastmile" <<SH
#!/usr/bin/env bash
exec "$VENV/bin/python" -m ops "\$@"
SH
chmod +x "$VENV/bin/lastmile"

# 4. npm packages of the TypeScript clients, from the lock file.
if changed npm clients/web/package-lock.json || [ ! -d clients/web/node_modules ]; then
  say "installing npm packages (clients/web)"
  (cd clients/web && npm ci --no-audit --no-fund --loglevel=error)
  [ -f "$STAMPS/npm.new" ] && done_step npm
fi

# 5. Generated code, from protos/ (never edited by hand).
if changed gen scripts/gen-protos.sh requirements.lock clients/web/package-lock.json \
    $(find protos -name '*.proto' | LC_ALL=C sort) || [ ! -d gen/python ]; then
  say "generating code from protos/"
  bash scripts/gen-protos.sh >/dev/null
  (cd clients/web && npm run -s build)
  [ -f "$STAMPS/gen.new" ] && done_step gen
fi

# 6. Browser apps (clients/web/apps -> clients/web/dist/apps), served by `make up`.
if changed apps clients/web/package-lock.json clients/web/src/client.ts \
    $(find protos clients/web/apps -type f | LC_ALL=C sort) \
    || [ ! -f clients/web/dist/apps/dashboard/index.html ]; then
  say "building the browser apps"
  (cd clients/web && npm run -s build:apps >/dev/null)
  [ -f "$STAMPS/apps.new" ] && done_step apps
fi
say "ready"
