"""The pytest plugin as a user meets it: selection, header, skips, usage errors, xdist."""

from __future__ import annotations

import re

import pytest

from conformance.adapters import FEATURES


def test_header_names_the_resolved_implementation_and_its_origin(suite_runner) -> None:
    result = suite_runner("--lstm-impl=torch", "-k", "any", "--hypothesis-profile=dev")
    assert result.returncode == 0, result.stdout
    assert "lstm-conformance: checking torch = torch.nn:LSTM (drop-in), from --lstm-impl" in result.stdout


def test_environment_variable_selects_the_implementation(suite_runner) -> None:
    result = suite_runner("-k", "any", "--hypothesis-profile=dev", env={"LSTM_CONFORMANCE_IMPL": "torch"})
    assert result.returncode == 0, result.stdout
    assert "from environment variable LSTM_CONFORMANCE_IMPL" in result.stdout


def test_unsupported_features_are_skipped_with_the_reason_never_passed(suite_runner) -> None:
    result = suite_runner("--lstm-impl=tests.ports.adapters:LimitedNumpyLSTM", "--hypothesis-profile=dev",
                          "-rs", "-k", "test_matches_torch and (packed or float64 or any)")
    assert result.returncode == 0, result.stdout
    skipped = re.findall(r"SKIPPED \[\d+\] .*declares no support for (.*)", result.stdout)
    assert any("packed (" in line for line in skipped), result.stdout
    assert any("dtype float64" in line for line in skipped), result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and re.search(r"\d+ skipped", summary), summary
    # test_matches_torch[any] ran and passed; every focus on packed or float64 was skipped
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed == 1


@pytest.mark.parametrize("spec, message", [
    ("nope", "unknown implementation 'nope'"),
    ("missing_pkg.mod:LSTM", "cannot import 'missing_pkg.mod'"),
    ("tests.ports.adapters:NoForward", "does not implement forward"),
])
def test_bad_implementation_is_a_one_line_usage_error(suite_runner, spec: str, message: str) -> None:
    result = suite_runner(f"--lstm-impl={spec}")
    assert result.returncode == 4  # pytest's usage error
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_parallel_workers_run_the_suite(suite_runner) -> None:
    result = suite_runner("--lstm-impl=numpy", "-n", "2", "--hypothesis-profile=dev")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"2 workers", result.stdout)


def test_every_feature_has_a_focused_test() -> None:
    from conformance.strategies import FOCI, focus_requirements

    covered = set().union(*(focus_requirements(focus)[0] for focus in FOCI))
    assert covered == set(FEATURES)


FREEZE_PROBE = """
import gc, os

def pytest_unconfigure(config):
    with open(os.environ["FREEZE_PROBE_TO"], "a") as probe:
        probe.write(f"{gc.get_freeze_count()}\\n")
"""


@pytest.mark.parametrize("selects_the_suite", [True, False])
def test_start_up_objects_are_frozen_only_in_a_conformance_run(tmp_path, selects_the_suite: bool) -> None:
    """gc.freeze() (issue 6: full collections and the one at exit skip torch's objects) is process-wide:
    a pytest session that does not run the suite keeps its collector as it was."""
    from tests.conftest import REPO, run_pytest

    (tmp_path / "freeze_probe.py").write_text(FREEZE_PROBE)
    (tmp_path / "test_other.py").write_text("def test_other():\n    assert True\n")
    probe = tmp_path / "frozen.txt"
    target = ["--pyargs", "conformance.suite", "--lstm-impl=torch", "-k", "nothing_at_all"] if selects_the_suite \
        else ["test_other.py", "--lstm-impl=torch"]
    run_pytest(["-p", "freeze_probe", *target], cwd=tmp_path,
               env={"FREEZE_PROBE_TO": str(probe), "PYTHONPATH": f"{REPO}:{tmp_path}"})
    frozen = int(probe.read_text().split()[0])
    assert (frozen > 10_000) if selects_the_suite else frozen == 0, frozen
