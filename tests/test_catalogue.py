"""The suite flags every deliberately broken port and passes every correct one.

Each port is checked the way a user checks theirs: ``pytest --lstm-impl=... --hypothesis-profile=ci``
in a fresh interpreter, from an empty folder.  A broken port must make that exit 1 with a
conformance failure; a correct port (including ones more accurate than torch) must exit 0.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from tests.ports.adapters import ADAPTER_GRADIENTS_CATALOGUE
from tests.ports.broken import CATALOGUE, CORRECT
from tests.ports.broken_errors import ERROR_CATALOGUE
from tests.test_diagnosis import DIAGNOSES
from tests.test_gradients import GRADIENT_DIAGNOSES

BROKEN = {name: f"tests.ports.broken:{cls.__name__}" for name, cls in CATALOGUE.items()}
BROKEN.update({name: f"tests.ports.broken_errors:{cls.__name__}" for name, cls in ERROR_CATALOGUE.items()})
BROKEN.update({
    "adapter-swapped-states": "tests.ports.adapters:SwappedStatesAdapter",
    "adapter-list-result": "tests.ports.adapters:ListResultAdapter",
    "unchecked-packing": "tests.ports.packing:UncheckedPacking",
    **{name: f"tests.ports.adapters:{cls.__name__}" for name, cls in ADAPTER_GRADIENTS_CATALOGUE.items()},
})
#: Process ports in JavaScript (tests/ports/js), run as `exec:node FILE`: each broken one is flagged at its
#: first failure; the hang costs three times its time limit, so it runs with a short one.
JS_PORTS = Path(__file__).resolve().parent / "ports" / "js"
BROKEN.update({name: f"exec:node {shlex.quote(str(JS_PORTS / script))}" for name, script in (
    ("js-hard-sigmoid", "hard_sigmoid.js"), ("js-crash", "crash.js"), ("js-hang", "hang.js"),
    ("js-malformed", "malformed.js"))})
EXTRA_ARGS = {"js-hang": ("--lstm-timeout=1",)}
GOOD = {name: f"{cls.__module__}:{cls.__name__}" for name, cls in CORRECT.items()}
GOOD.update({
    "numpy": "numpy",
    "torch": "torch",
    "numpy-float64-inside": "tests.ports.adapters:Float64InsideNumpyLSTM",
    "numpy-limited": "tests.ports.adapters:LimitedNumpyLSTM",
    "with-torch-packing": "tests.ports.packing:WithTorchPacking",
    "js-scratch": f"exec:node {shlex.quote(str(JS_PORTS / 'scratch_lstm.js'))}",
})


def _skip_without_node(name: str) -> None:
    if name.startswith("js-") and shutil.which("node") is None:
        pytest.skip("node is not installed: the JavaScript ports cannot run")


def test_catalogue_is_large_and_documented() -> None:
    assert len(CATALOGUE) >= 15 and len(ERROR_CATALOGUE) >= 4
    for cls in [*CATALOGUE.values(), *ERROR_CATALOGUE.values()]:
        assert cls.__doc__ and cls.__doc__.strip(), f"{cls.__name__} needs a one-line description of its bug"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_port_is_flagged(suite_runner, name: str) -> None:
    """Flagged, with a reproducer, and (on the minimal case hypothesis reports) the right hint."""
    _skip_without_node(name)
    result = suite_runner(f"--lstm-impl={BROKEN[name]}", "--hypothesis-profile=ci", "-x", "-q",
                          *EXTRA_ARGS.get(name, ()))
    assert result.returncode == 1, f"{name} was not flagged:\n{result.stdout[-3000:]}"
    assert "does not match torch.nn.LSTM" in result.stdout, result.stdout[-3000:]
    assert "Reproducer" in result.stdout and "python -m conformance.reproduce " in result.stdout
    hint = DIAGNOSES[name][2] if name in DIAGNOSES else GRADIENT_DIAGNOSES.get(name, (None, None))[1]
    if hint:
        assert f"[{hint}]" in result.stdout, f"{name}: expected the hint [{hint}]:\n{result.stdout[-6000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GOOD))
def test_correct_port_passes(suite_runner, name: str) -> None:
    _skip_without_node(name)
    result = suite_runner(f"--lstm-impl={GOOD[name]}", "--hypothesis-profile=ci", "-q")
    assert result.returncode == 0, f"{name} was flagged:\n{result.stdout[-5000:]}"


@pytest.mark.slow
def test_a_failure_report_gives_statistics_and_the_case_as_code(suite_runner) -> None:
    result = suite_runner(f"--lstm-impl={BROKEN['onnx-gate-order']}", "--hypothesis-profile=dev", "-x", "-q",
                          "-k", "test_matches_torch and initial_state")
    out = result.stdout
    assert result.returncode == 1
    for fragment in ("elements differ", "largest difference", "at (", "largest relative",
                     "torch's own error on this tensor", "What differs", "on case: Case(LSTMConfig(",
                     "The case as code", "model = nn.LSTM("):
        assert fragment in out, f"missing {fragment!r} in:\n{out[-4000:]}"
