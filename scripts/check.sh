#!/usr/bin/env bash
# The main job: set everything up, then check the bundled NumPy port against torch.nn.LSTM with
# the ci profile. Extra arguments go to `lstm-conformance check` after that `--profile ci`, so they
# win: e.g. `bash scripts/check.sh --profile thorough -n 2`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/lstm-conformance check numpy --profile ci "$@"
