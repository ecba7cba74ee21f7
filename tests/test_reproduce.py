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
from conformance.case import Call, Case, Fault, PackingCall, Values
from conformance.checks import check_forward, check_packing_error
from conformance.runner import check_error
from conformance.registry import resolve
from conformance.reproduce import script, source
from conformance.bad_calls import CALL_FAULTS, bad_call_cases, bad_constructor_cases, bad_packing_calls
from conformance.strategies import cases
from conformance.verdict import ConformanceFailure

from .conftest import REPO

NAMES = {"LSTMConfig": LSTMConfig, "Call": Call, "Case": Case, "Fault": Fault, "PackingCall": PackingCall,
         "Values": Values}
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


def _failure(action) -> ConformanceFailure:
    with pytest.raises(ConformanceFailure) as info:
        action()
    return info.value


@pytest.mark.slow
def test_forward_reproducer_exits_1_until_the_port_is_fixed(tmp_path: Path) -> None:
    broken = "tests.ports.broken:ReverseNotFlipped"
    case = Case(LSTMConfig(3, 4, bidirectional=True), Call(5, 2))
    code = script(broken, _failure(lambda: check_forward(resolve(broken), case, diagnose=True)),
                  "test_conformance.py::test_matches_torch[bidirectional]")
    result = _run(code, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    for fragment in ("elements differ", "Where: first departs from torch at layer 0, reverse direction",
                     "Likely bug: reverse outputs not put back in time order", "still differs"):
        assert fragment in result.stdout
    fixed = _run(code.replace(broken, "tests.ports.scratch_lstm:ScratchLSTM"), tmp_path)
    assert fixed.returncode == 0 and "matches torch.nn.LSTM on this case" in fixed.stdout, fixed.stdout + fixed.stderr


@pytest.mark.slow
def test_second_call_reproducer_calls_twice(tmp_path: Path) -> None:
    broken = "tests.ports.broken:Stateful"
    case = Case(LSTMConfig(3, 4), Call(5, 2))
    failure = _failure(lambda: check_forward(resolve(broken), case, repeat=True))
    assert failure.repeat
    code = script(broken, failure, repeat=failure.repeat)
    assert "repeat=True" in code and _run(code, tmp_path).returncode == 1


@pytest.mark.slow
def test_error_reproducer_exits_1_until_the_port_is_fixed(tmp_path: Path) -> None:
    broken = "tests.ports.broken_errors:WrongErrorMessage"
    case = next(c for c in _examples(bad_call_cases("input has one feature too many", CAPS)))
    code = script(broken, _failure(lambda: check_error(resolve(broken), case)))
    assert _run(code, tmp_path).returncode == 1
    assert _run(code.replace(broken, "torch"), tmp_path).returncode == 0


@pytest.mark.slow
def test_packing_reproducer_exits_1_until_the_port_is_fixed(tmp_path: Path) -> None:
    broken = "tests.ports.packing:UncheckedPacking"
    call = PackingCall("pack_padded_sequence", (0, 2), 2, fault="a length is 0")
    candidate = resolve(broken)
    code = script(broken, _failure(lambda: check_packing_error(candidate, call, candidate.target.lstm_conformance_packing)))
    assert _run(code, tmp_path).returncode == 1
    assert _run(code.replace(broken, "tests.ports.packing:WithTorchPacking"), tmp_path).returncode == 0


@pytest.mark.slow
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


def _forward_script() -> str:
    broken = "tests.ports.broken:ReverseNotFlipped"
    case = Case(LSTMConfig(3, 4, bidirectional=True), Call(5, 2))
    return script(broken, _failure(lambda: check_forward(resolve(broken), case)))


def _run_elsewhere(code: str, tmp_path: Path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The reproducer run from a folder that is not the one the suite ran in, without the repository on the path."""
    path = tmp_path / "repro.py"
    path.write_text(code)
    return subprocess.run([sys.executable, *flags, str(path)], cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", **(env or {})}, capture_output=True, text=True, timeout=300)


def _says_it_cannot_run(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr  # 1 would read as "still differs"
    assert "still differs" not in result.stdout
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"lstm-conformance reproducer: cannot run in {sys.executable}: "), result.stderr
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.slow
def test_a_reproducer_without_conformance_importable_exits_2_saying_what_to_install(tmp_path: Path) -> None:
    import torch

    # -S: no site-packages, so neither the installed lstm-conformance nor torch imports
    result = _run_elsewhere(_forward_script(), tmp_path, "-I", "-S")
    _says_it_cannot_run(result, "No module named 'conformance'", "pip install lstm-conformance",
                        f"pip install torch=={torch.__version__.split('+')[0]} first",
                        f"the interpreter the suite ran in: {sys.executable}")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_reproducer_without_torch_importable_exits_2(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "torch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no torch in this interpreter')\n")
    result = _run_elsewhere(_forward_script(), tmp_path, env={"PYTHONPATH": f"{shadow.parent}:{REPO}"})
    _says_it_cannot_run(result, "no torch in this interpreter", "pip install lstm-conformance")


@pytest.mark.slow
def test_a_reproducer_whose_port_does_not_import_here_exits_2(tmp_path: Path) -> None:
    result = _run_elsewhere(_forward_script(), tmp_path)  # `tests.ports` imports only from the repository's root
    _says_it_cannot_run(result, "cannot import 'tests.ports.broken'", f"(from {tmp_path})",
                        "run this file from the folder the suite ran in")
    assert "Traceback" not in result.stderr


def test_a_check_that_breaks_is_exit_2_not_a_difference(capsys: pytest.CaptureFixture) -> None:
    from conformance.reproduce import main

    assert main("torch", Case(LSTMConfig(3, 4), "not a call")) == 2  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "Traceback" in err and "this is not a difference from torch" in err.strip().splitlines()[-1], err


def _command(command: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    return subprocess.run(["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@settings(max_examples=40, deadline=None)
@given(st.one_of(cases(CAPS), bad_constructor_cases(CAPS), bad_packing_calls(),
                 st.sampled_from(list(CALL_FAULTS)).flatmap(lambda fault: bad_call_cases(fault, CAPS))))
def test_the_one_line_command_reads_back_every_case(case: object) -> None:
    from conformance.reproduce import _parse_case

    rebuilt = _parse_case(source(case))
    assert rebuilt == case or repr(rebuilt) == repr(case)


@pytest.mark.parametrize("repeat", [False, True, 2, 60, (False, False, True, False), (True,)])
def test_the_one_line_command_carries_the_calls_the_failure_needs(repeat: object) -> None:
    import shlex

    from conformance.reproduce import _parse_repeat, command

    words = shlex.split(command("torch", Case(LSTMConfig(3, 4), Call(5, 2)), repeat=repeat))
    given = [w.partition("=")[2] or "twice" for w in words if w.startswith("--repeat")]
    assert _parse_repeat(given[0] if given else None) == repeat
    assert all(w.startswith("--repeat") or not w.startswith("--") for w in words)


@pytest.mark.slow
def test_the_one_line_command_exits_1_until_the_port_is_fixed_and_0_once_it_matches() -> None:
    from conformance.reproduce import command

    case = Case(LSTMConfig(3, 4, bidirectional=True), Call(5, 2))
    broken = _command(command("tests.ports.broken:ReverseNotFlipped", case))
    assert broken.returncode == 1 and "Likely bug: reverse outputs not put back in time order" in broken.stdout, \
        broken.stdout + broken.stderr
    fixed = _command(command("torch", case))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr


@pytest.mark.slow
@pytest.mark.parametrize("text", ["__import__('os').system('true')", "Case(config=LSTMConfig(1, 1).x)", "Case(",
                                  "Call(seq_len=[1][0])"])
def test_the_one_line_command_rejects_what_is_not_a_case_with_exit_2(text: str) -> None:
    import shlex

    result = _command(f"python -m conformance.reproduce torch {shlex.quote(text)}")
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "cannot read the case" in errors[0], result.stderr


@pytest.mark.parametrize("failure", [
    ConformanceFailure("torch", Case(LSTMConfig(2, 3), Call(2, 1)), []),
    ConformanceFailure("torch", PackingCall("pack_padded_sequence", (2, 3), 2), []),
], ids=["case", "packing-call"])
def test_what_a_reproducer_imports_is_declared_public(failure: ConformanceFailure) -> None:
    """A saved script outlives the run: every name it imports from conformance is in that module's __all__."""
    import ast
    import importlib

    tree = ast.parse(script("torch", failure))
    imported = [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("conformance") for alias in node.names]
    assert ("conformance.reproduce", "main") in imported
    private = [f"{module}.{name}" for module, name in imported
               if name not in getattr(importlib.import_module(module), "__all__", ())]
    assert not private, f"a reproducer imports names its module does not declare public: {private}"
