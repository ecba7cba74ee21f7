"""What a run shows a person: one report per root cause, verdicts as data, notes counted.

The sizes asserted here are what "readable" means: a port with one bug fails many tests, and
the run must still show that bug once, in full, and every other test in one line.
"""

from __future__ import annotations

import json
import re

import pytest

from conformance.arrays import LSTMConfig as C
from conformance.case import Call, Case
from conformance.checks import EVAL_MODE, check_forward
from conformance.registry import resolve
from conformance.verdict import ConformanceFailure

GATE_ORDER = "tests.ports.broken:OnnxGateOrder"


def _failure(path: str, case: Case, repeat: bool = False) -> ConformanceFailure:
    with pytest.raises(ConformanceFailure) as info:
        check_forward(resolve(path), case, repeat=repeat, diagnose=True)
    return info.value


@pytest.mark.slow
def test_a_port_with_one_bug_gets_one_report(suite_runner) -> None:
    result = suite_runner(f"--lstm-impl={GATE_ORDER}", "--hypothesis-profile=ci")
    out = result.stdout
    lines = out.splitlines()
    failed = [line for line in lines if line.startswith("FAILED ")]
    assert result.returncode == 1 and len(failed) >= 20, out[-3000:]
    assert len(lines) < 200, f"{len(lines)} lines:\n{out}"
    assert out.count("does not match torch.nn.LSTM") == 1, out  # the first failure in full, once
    assert f"{len(failed) - 1} more tests fail the same way: " in out
    assert len(re.findall(r"^_{3,} .* _{3,}$", out, re.M)) == 1  # the others: their FAILED line only
    assert "1 root cause" in out and "likely bug: gate order" in out
    assert 'python -m conformance.reproduce tests.ports.broken:OnnxGateOrder "Case(' in out
    # nothing that does not apply to the user, nothing internal
    for absent in ("reproduce_failure", "Failing test case", "Falsifying example", "Traceback",
                   "conformance/checks.py", "conformance/isolation.py", "ConformanceFailure"):
        assert absent not in out, f"{absent!r} in the output:\n{out}"
    # one closing summary line
    assert len([line for line in lines if re.match(r"=+ \d+ failed", line)]) == 1


@pytest.mark.slow
def test_grouping_holds_across_xdist_workers(suite_runner) -> None:
    result = suite_runner(f"--lstm-impl={GATE_ORDER}", "--hypothesis-profile=dev", "-n", "2",
                          "-k", "test_matches_torch and (any or batch_first or bidirectional or packed) and not many")
    out = result.stdout
    failed = [line for line in out.splitlines() if line.startswith("FAILED ")]
    assert result.returncode == 1 and len(failed) >= 4, out[-3000:]
    assert out.count("does not match torch.nn.LSTM") == 1, out
    assert f"{len(failed) - 1} more tests fail the same way" in out
    assert len(re.findall(r"^_{3,} .* _{3,}$", out, re.M)) == 1, out


@pytest.mark.slow
def test_every_failure_in_full_when_asked(suite_runner) -> None:
    result = suite_runner(f"--lstm-impl={GATE_ORDER}", "--hypothesis-profile=dev", "--lstm-all-reports",
                          "-k", "test_matches_torch and (any or batch_first) and not many")
    assert result.returncode == 1
    assert result.stdout.count("does not match torch.nn.LSTM") == 2, result.stdout


@pytest.mark.slow
def test_notes_are_counted_by_kind_and_listed_with_verbose(suite_runner) -> None:
    args = ("--lstm-impl=numpy", "--hypothesis-profile=dev", "-k", "test_packed_call_errors_match_torch")
    quiet, verbose = suite_runner(*args), suite_runner(*args, "-v")
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stdout[-3000:]
    counts = re.findall(r"^(reference-undefined|incidental error differs): (\d+) \((.*) calls\)",
                        quiet.stdout, re.M)
    assert counts, quiet.stdout[-3000:]
    assert all("packed" in by_call for _, _, by_call in counts)  # which call each note came from
    assert "  [" not in quiet.stdout.split("lstm-conformance notes")[1]  # no examples by default
    examples = verbose.stdout.split("lstm-conformance notes")[1]
    assert re.search(r"^  \[.+\] \(packed call\) torch ", examples, re.M), examples


def test_a_training_case_is_diagnosed_in_eval_mode_when_the_bug_is_not_dropout() -> None:
    case = Case(C(3, 4, num_layers=2, dropout=0.5), Call(5, 2, training=True))
    failure = _failure(GATE_ORDER, case)
    assert failure.hint is not None and failure.hint.name == "gate-order", failure
    assert failure.diagnosed_on == EVAL_MODE
    assert f"Likely bug (seen on {EVAL_MODE}): gate order" in str(failure)


def test_a_dropout_bug_is_still_diagnosed_on_the_training_case() -> None:
    case = Case(C(3, 4, num_layers=2, dropout=0.5), Call(5, 2, training=True))
    failure = _failure("tests.ports.broken:RecurrentDropout", case)
    assert failure.hint is not None and failure.hint.name == "recurrent-dropout", failure
    assert failure.diagnosed_on == ""


def test_problems_say_what_they_are_about_as_fields() -> None:
    stateful = _failure("tests.ports.broken:Stateful", Case(C(3, 4), Call(5, 2)), repeat=True)
    assert {(p.kind, p.tensor, p.call) for p in stateful.problems} <= {("values", t, 2) for t in ("output", "h_n", "c_n")}
    training = _failure("tests.ports.broken:RecurrentDropout",
                        Case(C(3, 4, num_layers=2, dropout=0.5), Call(5, 2, training=True)))
    assert {p.region for p in training.problems} == {"layer 0"} and {p.tensor for p in training.problems} <= {"h_n", "c_n"}
    mutated = _failure("tests.ports.broken:UpdatesC0InPlace", Case(C(3, 4), Call(5, 2, with_hx=True)))
    assert any(p.kind == "mutated" and p.tensor == "hx" for p in mutated.problems), mutated


def test_a_failure_as_data_is_plain_and_groups_by_its_likely_bug() -> None:
    first = _failure(GATE_ORDER, Case(C(3, 4), Call(5, 2)))
    second = _failure(GATE_ORDER, Case(C(2, 3, bidirectional=True), Call(4, 3)))
    other = _failure("tests.ports.broken:SingleBias", Case(C(3, 4), Call(5, 2)))
    data = first.to_data()
    assert json.loads(json.dumps(data)) == data  # strings, numbers, lists and dicts only
    assert data["hint"]["name"] == "gate-order" and data["location"]["layer"] == 0
    assert data["problems"][0]["mismatch"]["mismatched"] > 0
    assert first.root_cause() == second.root_cause() != other.root_cause()


def test_failures_without_a_hint_group_by_their_first_problem() -> None:
    from conformance.verdict import Problem, root_cause

    one = ConformanceFailure("x", Case(C(1, 1), Call(1)), [Problem("error", "torch raises ...", rule="wrong-message")])
    two = ConformanceFailure("x", Case(C(2, 2), Call(3)), [Problem("error", "other text", rule="wrong-message")])
    three = ConformanceFailure("x", Case(C(1, 1), Call(1)), [Problem("error", "torch raises ...", rule="missing-check")])
    assert one.root_cause() == two.root_cause() != three.root_cause()
    assert root_cause(one.to_data()) == one.root_cause()
