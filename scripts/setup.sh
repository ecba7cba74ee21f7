#!/usr/bin/env bash
# Set up .venv with everything the suite needs: torch==2.13.0 first (so pip never resolves a
# multi-GB CUDA build), then this project with its test extra. Safe to run again.
# Real ports' extras are added by name: `bash scripts/setup.sh onnxruntime keras` or
# LSTM_EXTRAS="onnxruntime keras" (extras: onnxruntime, jax, keras, paddle, all).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
extras="test"
from_env=${LSTM_EXTRAS:-}
for extra in "$@" ${from_env//,/ }; do
    case ",$extras," in *",$extra,"*) ;; *) extras="$extras,$extra" ;; esac
done
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
