"""Expected-failures files: known divergences become xfail (or skips); stale entries are warned about."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PORT = "--lstm-impl=tests.ports.broken:Float32Inside"  # fails wherever a float64 model is drawn
ONLY_FLOAT64 = ("-k", "test_matches_torch and float64", "--hypothesis-profile=dev")


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "expected.txt"
    path.write_text(text)
    return f"--lstm-expected-failures={path}"


@pytest.mark.slow
def test_without_the_file_the_divergence_fails(suite_runner) -> None:
    assert suite_runner(PORT, *ONLY_FLOAT64).returncode == 1


@pytest.mark.slow
def test_listed_failures_are_xfailed_with_their_reason(suite_runner, tmp_path: Path) -> None:
    listed = _file(tmp_path, "# known\ntest_conformance.py::test_matches_torch[float64]  # computes in float32\n")
    result = suite_runner(PORT, listed, "-rx", *ONLY_FLOAT64)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "XFAIL" in result.stdout and "expected failure: computes in float32" in result.stdout
    assert "1 expected failure(s) from" in result.stdout


@pytest.mark.slow
def test_expected_failures_can_be_skipped_for_speed(suite_runner, tmp_path: Path) -> None:
    listed = _file(tmp_path, "test_conformance.py::test_matches_torch[float64]  # computes in float32\n")
    result = suite_runner(PORT, listed, "--lstm-skip-expected-failures", "-rs", *ONLY_FLOAT64)
    assert result.returncode == 0 and "1 skipped" in result.stdout


@pytest.mark.slow
def test_an_entry_matching_nothing_is_warned_about(suite_runner, tmp_path: Path) -> None:
    listed = _file(tmp_path, "test_conformance.py::test_matches_torch[float64]  # known\n"
                             "test_conformance.py::test_no_such_test  # stale\n")
    result = suite_runner(PORT, listed, *ONLY_FLOAT64)
    assert "expected failure 'test_conformance.py::test_no_such_test'" in result.stdout
    assert "matches no collected test" in result.stdout


@pytest.mark.slow
def test_an_entry_without_a_reason_is_a_usage_error(suite_runner, tmp_path: Path) -> None:
    result = suite_runner(PORT, _file(tmp_path, "test_conformance.py::test_matches_torch\n"))
    assert result.returncode == 4
    assert "every entry needs a reason after '#'" in result.stderr


@pytest.mark.slow
def test_an_entry_for_a_case_property_expects_only_those_examples(suite_runner, tmp_path: Path) -> None:
    """Float32Inside fails on every float64 model: `when dtype='float64'` expects exactly that."""
    listed = _file(tmp_path, "test_conformance.py::test_matches_torch[  when dtype=float64  # computes in float32\n")
    result = suite_runner(PORT, listed, "-rx", "-k", "test_matches_torch and (float64 or any or batch_first) and not many",
                          "--hypothesis-profile=dev")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "expected failure: computes in float32" in result.stdout and "XFAIL" in result.stdout
    assert re.search(r"\b2 passed, \d+ deselected, 1 xfailed", result.stdout), result.stdout[-2000:]  # float64 xfails; the others pass with a note
    assert re.search(r"^expected failure: [12]; -v lists examples", result.stdout, re.M), result.stdout[-3000:]


@pytest.mark.slow
def test_a_case_property_entry_does_not_hide_other_divergences(suite_runner, tmp_path: Path) -> None:
    listed = _file(tmp_path, "test_conformance.py::  when dtype=float64  # expected\n")
    result = suite_runner("--lstm-impl=tests.ports.broken:OnnxGateOrder", listed, "-k", "test_matches_torch and any",
                          "--hypothesis-profile=dev")
    assert result.returncode == 1 and "gate order" in result.stdout
    assert "dtype='float32'" in result.stdout or "LSTMConfig(input_size" in result.stdout


@pytest.mark.slow
def test_an_unknown_property_is_a_usage_error(suite_runner, tmp_path: Path) -> None:
    result = suite_runner(PORT, _file(tmp_path, "test_conformance.py:: when colour=blue  # nonsense\n"))
    assert result.returncode == 4 and "'when' takes conditions such as" in result.stderr


def test_conditions_compare_case_properties() -> None:
    from conformance.arrays import LSTMConfig
    from conformance.case import Call, Case
    from conformance.expected import ExpectedFailure, _parse_when

    entry = ExpectedFailure("test_", "r", "f:1", _parse_when("bidirectional=True, num_layers>=2, batch!=1", "f:1"))
    assert entry.covers(Case(LSTMConfig(1, 1, num_layers=3, bidirectional=True), Call(2, batch=2)))
    assert not entry.covers(Case(LSTMConfig(1, 1, num_layers=1, bidirectional=True), Call(2, batch=2)))
    assert not entry.covers(Case(LSTMConfig(1, 1, num_layers=3, bidirectional=True), Call(2, batch=1)))
    assert not entry.covers(Case(LSTMConfig(1, 1, num_layers=3, bidirectional=False), Call(2, batch=2)))
    unbatched = ExpectedFailure("test_", "r", "f:1", _parse_when("batch<2", "f:1"))
    assert not unbatched.covers(Case(LSTMConfig(1, 1), Call(2, batch=None)))  # None < 2 does not apply
