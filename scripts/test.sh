#!/usr/bin/env bash
# Installs everything the tests need (Debian's dcmtk and chromium, the package with its native build and
# test extras, in ./.venv) and runs the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# Real peers: DCMTK's tools and encoders, Chromium for the web pages, npm for `pacsnode viewer install`.
if ! /usr/bin/storescu --version 2>/dev/null | grep -qi dcmtk || [ ! -x /usr/bin/chromium ] || ! command -v npm >/dev/null; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dcmtk chromium >/dev/null
    command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq npm >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"

# The native kernels must be the ones under test; a silent fallback to the twins would hide a broken build.
export PACSNODE_REQUIRE_NATIVE=1
.venv/bin/python -m pytest "$@"
# The pure-Python twins run the kernel equivalence tests and the unit suite once more.
PACSNODE_PURE=1 PACSNODE_REQUIRE_NATIVE=0 .venv/bin/python -m pytest -q tests/unit tests/native
