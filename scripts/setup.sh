#!/usr/bin/env bash
# Create .venv and install clipgeo with its locked stack (idempotent, quick when nothing changed).
# Usage: scripts/setup.sh [--test]   (--test also installs what the test suite needs)
# The exact versions come from requirements.lock (pip freeze of a working venv), installed with
# --no-deps: no resolver run, so a new release upstream cannot change what gets installed.
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
key="$(cat pyproject.toml requirements.lock scripts/setup.sh | sha256sum | cut -c1-16)"
have="$(cat $stamp 2>/dev/null || true)"
if [[ "$have" == "$key test=1" || ( $want_test == 0 && "$have" == "$key test=0" ) ]]; then
  echo "[setup] .venv is up to date"
else
  echo "[setup] installing clipgeo and its stack into .venv (first time: a few minutes, ~7 GB)"
  .venv/bin/python -m pip install -q --no-deps -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
    || .venv/bin/python -m pip install -q --no-deps -e .
  # The lock holds every requirement of every locked package (clip-benchmark's included) and
  # setuptools itself (torch needs >= 77.0.3): a fresh install is clean. Say what is not, if anything.
  if ! conflicts="$(.venv/bin/python -m pip check 2>&1)"; then
    echo "[setup] WARNING: pip check reports conflicts:" >&2
    echo "$conflicts" | sed 's/^/[setup]   /' >&2
  fi
  echo "$key test=$want_test" > $stamp
fi

# The report tests open the HTML in a real headless browser: Debian's chromium.
if [[ $want_test == 1 ]] && ! command -v chromium >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium for the browser tests"
    # Wait (up to 10 min) for another apt/dpkg process instead of failing on its lock.
    apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
  else
    echo "[setup] WARNING: chromium is not installed and cannot be installed here (need root + apt-get);" \
         "the browser tests will fail: install Debian's 'chromium' package" >&2
  fi
fi
