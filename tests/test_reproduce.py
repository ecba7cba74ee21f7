"""Reproducer scripts: they rebuild the case exactly, exit 1 while the port differs, 0 once it is fixed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.adapters import Capabilities
from conformance.arrays import LSTMConfig
from conformance.case import Call, Case, Fault, PackingCall
from conformance.checks import check_error, check_forward, check_packing_error
from conformance.registry import resolve
from conformance.reproduce import script, source
from conformance.strategies import CALL_FAULTS, bad_call_cases, bad_constructor_cases, bad_packing_calls, cases
from conformance.verdict import ConformanceFailure

from .conftest import REPO

NAMES = {"LSTMConfig": LSTMConfig, "Call": Call, "Case": Case, "Fault": Fault, "PackingCall": PackingCall}
CAPS = Capabilities()


@settings(max_examples=40, deadline=None)
@given(st.one_of(cases(CAPS), bad_constructor_cases(CAPS), bad_packing_calls(),
                 st.sampled_from(list(CALL_FAULTS)).flatmap(lambda fault: bad_call_cases(fault, CAPS))))
def test_source_rebuilds_the_case_exactly(case: object) -> None:
    rebuilt = eval(source(case), dict(NAMES))  # noqa: S307 - our own generated source
    assert rebuilt == case or repr(rebuilt) == repr(case)  # nan != nan: compare the printed form then
    assert rebuilt.to_code() == case.to_code()


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "repro.py"
    path.write_text(code)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _failure(action) -> ConformanceFailure:  # noqa: ANN001
    with pytest.raises(ConformanceFailure) as info:
        action()
    return info.value


def test_forward_reproducer_exits_1_until_the_port_is_fixed(tmp_path: Path) -> None:
    broken = "tests.ports.broken:ReverseNotFlipped"
    case = Case(LSTMConfig(3, 4, bidirectional=True), Call(5, 2))
    code = script(broken, _failure(lambda: check_forward(resolve(broken), case, diagnose=True)),
                  "test_conformance.py::test_matches_torch[bidirectional]")
    result = _run(code, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    for fragment in ("mismatched elements:", "Where: first departs from torch at layer 0, reverse direction",
                     "Likely bug: reverse outputs not put back in time order", "still differs"):
        assert fragment in result.stdout
    fixed = _run(code.replace(broken, "tests.ports.scratch_lstm:ScratchLSTM"), tmp_path)
    assert fixed.returncode == 0 and "matches torch.nn.LSTM on this case" in fixed.stdout, fixed.stdout + fixed.stderr


def test_second_call_reproducer_calls_twice(tmp_path: Path) -> None:
    broken = "tests.ports.broken:Stateful"
    case = Case(LSTMConfig(3, 4), Call(5, 2))
    failure = _failure(lambda: check_forward(resolve(broken), case, repeat=True))
    assert failure.repeat
    code = script(broken, failure, repeat=failure.repeat)
    assert "repeat=True" in code and _run(code, tmp_path).returncode == 1


def test_error_reproducer_exits_1_until_the_port_is_fixed(tmp_path: Path) -> None:
    broken = "tests.ports.broken_errors:WrongErrorMessage"
    case = next(c for c in _examples(bad_call_cases("input has one feature too many", CAPS)))
    code = script(broken, _failure(lambda: check_error(resolve(broken), case)))
    assert _run(code, tmp_path).returncode == 1
    assert _run(code.replace(broken, "torch"), tmp_path).returncode == 0


def test_packing_reproducer_exits_1_until_the_port_is_fixed(tmp_path: Path) -> None:
    broken = "tests.ports.packing:UncheckedPacking"
    call = PackingCall("pack_padded_sequence", (0, 2), 2, fault="a length is 0")
    candidate = resolve(broken)
    code = script(broken, _failure(lambda: check_packing_error(candidate, call, candidate.target.lstm_conformance_packing)))
    assert _run(code, tmp_path).returncode == 1
    assert _run(code.replace(broken, "tests.ports.packing:WithTorchPacking"), tmp_path).returncode == 0


def test_unknown_implementation_in_a_reproducer_exits_2(tmp_path: Path) -> None:
    code = script("nope", ConformanceFailure("nope", Case(LSTMConfig(1, 1), Call(1)), []))
    result = _run(code, tmp_path)
    assert result.returncode == 2 and "unknown implementation 'nope'" in result.stderr


def _examples(strategy: st.SearchStrategy) -> list:
    found: list = []

    @settings(max_examples=5, database=None, derandomize=True)
    @given(strategy)
    def collect(value: object) -> None:
        found.append(value)

    collect()
    return found
