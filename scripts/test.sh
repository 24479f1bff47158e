#!/usr/bin/env bash
# Installs everything the tests need (Debian's dcmtk, chromium and orthanc, the package with its
# native build and test extras, in ./.venv) and runs the whole suite, then the benchmarks in
# their smoke mode so that they never rot. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# Real peers: DCMTK's tools and encoders, Chromium for the web pages, Orthanc (and its
# DICOMweb plugin) as the benchmarks' reference, npm for `pacsnode viewer install`.
# Debian's policy-rc.d keeps the packaged Orthanc service from starting; the bench runs its own.
# g++ builds the one C++ kernel (libjpeg_call), which the tests require under CI=true.
packages="dcmtk chromium orthanc orthanc-dicomweb g++"
if ! /usr/bin/storescu --version 2>/dev/null | grep -qi dcmtk || [ ! -x /usr/bin/chromium ] \
        || [ ! -x /usr/sbin/Orthanc ] || ! command -v npm >/dev/null || ! command -v g++ >/dev/null; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $packages >/dev/null
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

# Benchmarks in smoke mode: tiny corpora, one round, no thresholds; they fail only when a
# server lost data or a query miscounted (the real runs are made by hand: bench/README.md).
.venv/bin/python -m pytest -q bench/test_bench_header.py --benchmark-disable
.venv/bin/python -m bench.run --smoke
.venv/bin/python -m bench.bench_dicomweb --smoke
.venv/bin/python bench/bench_pixels.py --smoke
