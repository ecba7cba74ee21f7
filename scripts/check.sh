#!/usr/bin/env bash
# The main job: set everything up, then check the bundled NumPy port against torch.nn.LSTM.
# Extra arguments go to `lstm-conformance check`, e.g. `bash scripts/check.sh --profile thorough`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/lstm-conformance check numpy "$@"
