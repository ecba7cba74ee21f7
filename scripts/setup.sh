#!/usr/bin/env bash
# Set up .venv with everything the suite needs: torch==2.13.0 first (so pip never resolves a
# multi-GB CUDA build), then this project with its test extra, saying what it does step by step.
# Safe to run again: when .venv already holds what this run would install (the same torch pin,
# extras and pyproject.toml), it says so and installs nothing; remove .venv to start afresh.
# Other extras are added by name: `bash scripts/setup.sh onnxruntime keras` or
# LSTM_EXTRAS="onnxruntime keras" (extras: onnxruntime, jax, keras, paddle, redis, all; dev, the
# contributor's linter, type checker and pre-commit). The JavaScript ports (tfjs, onnxruntime-node)
# are named the same way: their npm packages are installed with `npm ci` from
# the lockfile in implementations/js/<port>, scripts skipped (onnxruntime-node's downloads CUDA binaries).
# The real ports' extras and JavaScript ports named here are checked against implementations/real_ports.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch_pin="torch==2.13.0"
extras="test"
js_ports=()
from_env=${LSTM_EXTRAS:-}
for extra in "$@" ${from_env//,/ }; do
    case $extra in tfjs|onnxruntime-node) js_ports+=("$extra"); continue ;; esac
    case ",$extras," in *",$extra,"*) ;; *) extras="$extras,$extra" ;; esac
done

say() { echo "setup: $*"; }

# npm ci for each JavaScript port named, unless its node_modules came from the same lockfile
install_js_ports() {
    for port in ${js_ports[@]+"${js_ports[@]}"}; do
        folder=implementations/js/$port
        if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
            say "the $port port needs node and npm (Node.js 20 or later), which are not on PATH"; exit 1
        fi
        js_stamp="$(cksum < "$folder/package-lock.json")"
        if [ -f "$folder/node_modules/.lstm-conformance-setup" ] && \
                [ "$(cat "$folder/node_modules/.lstm-conformance-setup")" = "$js_stamp" ]; then
            say "$folder/node_modules is up to date"
            continue
        fi
        say "installing the $port port's npm packages (npm ci in $folder, install scripts skipped)"
        (cd "$folder" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
        echo "$js_stamp" > "$folder/node_modules/.lstm-conformance-setup"
    done
}

# written once everything is installed: what was installed, and from which pyproject.toml
stamp_file=.venv/.lstm-conformance-setup
stamp="$torch_pin lstm-conformance[$extras] $(cksum < pyproject.toml)"
if [ -x .venv/bin/python ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    say ".venv is up to date ($torch_pin, lstm-conformance[$extras]); remove .venv to set it up afresh"
    install_js_ports
    exit 0
fi

pip=(.venv/bin/python -m pip install --disable-pip-version-check)
if [ ! -t 1 ]; then
    pip+=(--progress-bar off)  # a log, not a terminal: a redrawn progress bar would fill it
fi
if [ -x .venv/bin/python ]; then
    say "using the existing .venv ($(.venv/bin/python --version 2>&1))"
else
    say "creating .venv with $("$python" --version 2>&1) ($python)"
    "$python" -m venv .venv
fi
say "step 1 of 2: installing $torch_pin (CPU build; the first time, pip downloads about 200 MB)"
"${pip[@]}" "$torch_pin"
say "step 2 of 2: installing this project, editable, with extras [$extras] and their dependencies"
"${pip[@]}" -e ".[$extras]"
echo "$stamp" > "$stamp_file"
install_js_ports
say "done: .venv/bin/lstm-conformance and .venv/bin/python -m pytest are ready"
