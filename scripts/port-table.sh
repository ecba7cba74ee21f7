#!/usr/bin/env bash
# The port x feature table of docs/real-ports.md: a conformance report for each port, then one table of them all.
# Usage: bash scripts/port-table.sh [port ...]   (default: numpy and the Python real ports;
# tests/test_real_port_sources.py checks that list against implementations/real_ports.py)
set -euo pipefail
cd "$(dirname "$0")/.."
ports=("$@")
[ ${#ports[@]} -gt 0 ] || ports=(numpy onnxruntime flax keras paddle torch-quantizable)
out=$(mktemp -d)
export HOME="$out/home" XDG_CACHE_HOME="$out/home/.cache" KERAS_HOME="$out/home/.keras"  # ports write caches
mkdir -p "$HOME"
for port in "${ports[@]}"; do
    .venv/bin/lstm-conformance report "$port" --profile ci -n 2 --json "$out/$port.json" > "$out/$port.log" 2>&1 \
        || echo "$port: the report found failures (see $out/$port.log)" >&2
done
reports=()
for port in "${ports[@]}"; do reports+=("$out/$port.json"); done
.venv/bin/lstm-conformance table "${reports[@]}"
