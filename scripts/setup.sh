#!/usr/bin/env bash
# Set up .venv with everything the suite needs: torch==2.13.0 first (so pip never resolves a
# multi-GB CUDA build), then this project with its test extra. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
