#!/usr/bin/env bash
# Install the real third-party ports, then run the conformance suite on each (docs/real-ports.md).
# Ports: the arguments, else $LSTM_PORTS, else the Python ports: onnxruntime keras torch-quantizable
# (.ci/run names them and the two JavaScript ports, tfjs and onnxruntime-node).
# Each run must exit 0: known divergences are expected failures (implementations/expected/*.txt).
# Extra pytest arguments: LSTM_PYTEST_ARGS, e.g. LSTM_PYTEST_ARGS="--lstm-skip-expected-failures".
# The ports and their extras below are checked against implementations/real_ports.py (tests/test_real_port_sources.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then ports=("$@"); else read -ra ports <<< "${LSTM_PORTS:-onnxruntime keras torch-quantizable}"; fi
extras=()
for port in "${ports[@]}"; do
    case $port in
        onnxruntime) extras+=(onnxruntime) ;;
        flax) extras+=(jax) ;;
        keras) extras+=(keras) ;;
        paddle) extras+=(paddle) ;;
        torch-quantizable) ;;  # ships with torch
        tfjs|onnxruntime-node) extras+=("$port") ;;  # npm packages: setup.sh runs npm ci for them
        *) echo "test-ports.sh: unknown port '$port' (onnxruntime, flax, keras, paddle, torch-quantizable," \
                "tfjs, onnxruntime-node)" >&2; exit 2 ;;
    esac
done
bash scripts/setup.sh ${extras[@]+"${extras[@]}"}
export CI=${CI:-true}
# Ports write caches into the home folder (ONNX Runtime and Paddle ~/.cache, Keras KERAS_HOME).
home=$(mktemp -d "${TMPDIR:-/tmp}/lstm-ports-home.XXXXXX")
trap 'rm -rf "$home"' EXIT
export HOME="$home" XDG_CACHE_HOME="$home/cache" KERAS_HOME="$home/keras"
status=0
for port in "${ports[@]}"; do
    echo "=== lstm-conformance: $port"
    start=$SECONDS
    # shellcheck disable=SC2086
    .venv/bin/python -m pytest --lstm-impl="$port" --lstm-profile=ci -n 2 conformance/suite -q \
        ${LSTM_PYTEST_ARGS:-} || status=1
    echo "=== lstm-conformance: $port took $((SECONDS - start)) s"
done
exit $status
