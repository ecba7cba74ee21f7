#!/usr/bin/env bash
# Set everything up, then run the suite's own tests and the conformance suite on the bundled port.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CI=${CI:-true}  # the suite's `ci` profile unless told otherwise
exec .venv/bin/python -m pytest -n 2 tests conformance/suite "$@"
