#!/usr/bin/env bash
# Create .venv and install clipgeo with its pinned stack (idempotent, quick when nothing changed).
# Usage: scripts/setup.sh [--test]   (--test also installs what the test suite needs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
want_test=0; [[ "${1:-}" == "--test" ]] && want_test=1

if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.clipgeo-installed   # "<hash of pyproject+this script> test=<0|1>"
key="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
have="$(cat $stamp 2>/dev/null || true)"
if [[ "$have" == "$key test=1" || ( $want_test == 0 && "$have" == "$key test=0" ) ]]; then
  echo "[setup] .venv is up to date"
else
  echo "[setup] installing clipgeo and its stack into .venv (first time: a few minutes, ~7 GB)"
  .venv/bin/python -m pip install -q --upgrade pip
  extras=""; [[ $want_test == 1 ]] && extras="[test]"
  .venv/bin/python -m pip install -q -e ".${extras}"
  echo "$key test=$want_test" > $stamp
fi

# The report tests open the HTML in a real headless browser: Debian's chromium.
if [[ $want_test == 1 ]] && ! command -v chromium >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium for the browser tests"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[setup] WARNING: chromium is not installed and cannot be installed here (need root + apt-get);" \
         "the browser tests will fail: install Debian's 'chromium' package" >&2
  fi
fi
