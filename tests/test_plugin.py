"""The pytest plugin as a user meets it: selection, header, profiles, skips, usage errors, xdist."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.adapters import FEATURES

ONLY_ANY = "test_matches_torch and any and not many_layers"  # -k for test_matches_torch[any] alone


@pytest.mark.slow
def test_header_names_the_resolved_implementation_and_its_origin(suite_runner) -> None:
    result = suite_runner("--lstm-impl=torch", "-k", "any", "--lstm-profile=dev")
    assert result.returncode == 0, result.stdout
    assert "lstm-conformance: checking torch = torch.nn:LSTM (drop-in), from --lstm-impl" in result.stdout


@pytest.mark.slow
def test_environment_variable_selects_the_implementation(suite_runner) -> None:
    result = suite_runner("-k", "any", "--lstm-profile=dev", env={"LSTM_CONFORMANCE_IMPL": "torch"})
    assert result.returncode == 0, result.stdout
    assert "from environment variable LSTM_CONFORMANCE_IMPL" in result.stdout


@pytest.mark.slow
def test_unsupported_features_are_skipped_with_the_reason_never_passed(suite_runner) -> None:
    result = suite_runner("--lstm-impl=tests.ports.adapters:LimitedNumpyLSTM", "--lstm-profile=dev",
                          "-rs", "-k", "test_matches_torch and (packed or float64 or any) and not many_layers")
    assert result.returncode == 0, result.stdout
    skipped = re.findall(r"SKIPPED \[\d+\] .*declares no support for (.*)", result.stdout)
    assert any("packed (" in line for line in skipped), result.stdout
    assert any("dtype float64" in line for line in skipped), result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and re.search(r"\d+ skipped", summary), summary
    # test_matches_torch[any] ran and passed; every focus on packed or float64 was skipped
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed == 1


PROBE = """
import json, os

from hypothesis import settings

EXAMPLES = {}


def pytest_runtest_logreport(report):
    if report.when == "call":
        EXAMPLES[report.nodeid.rpartition("::")[2]] = sum(v for k, v in report.user_properties
                                                          if k == "lstm-conformance-examples")


def pytest_sessionfinish(session):
    with open(os.environ["PROBE_TO"], "w") as out:
        json.dump({"examples": EXAMPLES, "session_profile": settings.get_current_profile_name(),
                   "session_max_examples": settings.default.max_examples}, out)
"""


def _probed(tmp_path: Path, suite_runner, *args: str,
            env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    from tests.conftest import REPO

    (tmp_path / "profile_probe.py").write_text(PROBE)
    probe = tmp_path / "probe.json"
    result = suite_runner("-p", "profile_probe", *args,
                          env={"PROBE_TO": str(probe), "PYTHONPATH": f"{REPO}:{tmp_path}", **(env or {})})
    return result, json.loads(probe.read_text()) if probe.exists() else {}


@pytest.mark.slow
@pytest.mark.parametrize("args, ci, profile, examples", [
    (["--lstm-profile=ci", "--hypothesis-profile=dev"], None, "ci", 30),  # --lstm-profile first
    (["--hypothesis-profile=thorough", "--lstm-max-examples=3"], "true", "thorough", 3),  # then the name given
    ([], "true", "ci", 30),  # then $CI
    ([], None, "dev", 8),
], ids=["lstm-profile", "hypothesis-profile-and-max-examples", "CI", "dev"])
def test_the_profile_rule_sets_the_suite_tests_and_nothing_else(tmp_path: Path, suite_runner, args: list[str],
                                                                 ci: str | None, profile: str, examples: int) -> None:
    result, probe = _probed(tmp_path, suite_runner, "--lstm-impl=torch", "-k", ONLY_ANY, *args, env={"CI": ci})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"profile '{profile}' ({examples} examples per test" in result.stdout, result.stdout
    assert probe["examples"] == {"test_matches_torch[any]": examples}, probe
    # the session's own hypothesis profile is what hypothesis and the command line made it
    session = {"--hypothesis-profile=dev": "dev", "--hypothesis-profile=thorough": "thorough"}
    named = next((session[arg] for arg in args if arg in session), "ci" if ci else "default")
    assert probe["session_profile"] == named and probe["session_max_examples"] == 100, probe


@pytest.mark.slow
def test_the_stress_tier_is_skipped_in_the_suite(suite_runner) -> None:
    result = suite_runner("--lstm-impl=torch", "-k", "stress", "-rs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SKIPPED \[1\] .*stress tier: run with --lstm-stress", result.stdout), result.stdout


RUN_TWICE = """
import json, sys
from conformance import report_collect

ONLY_ANY = sys.argv[1]
counts = []
for extra in (["--hypothesis-profile=dev"], ["--lstm-profile=ci", "--lstm-max-examples=2"],
              ["--hypothesis-profile=dev"], []):
    collector = report_collect.Collector()
    report_collect.run_suite("torch", ["-q", "-k", ONLY_ANY, *extra], collector)
    counts.append([result.examples for result in collector.results.values()])
from hypothesis import settings
print(json.dumps({"counts": counts, "session_profile": settings.get_current_profile_name(),
                  "session_max_examples": settings.default.max_examples}))
"""


@pytest.mark.slow
def test_each_in_process_run_gets_its_own_profile(tmp_path: Path) -> None:
    """`lstm-conformance report` runs pytest.main in its own process; the suite's modules (and
    their test functions) stay imported from one run to the next."""
    from tests.conftest import REPO

    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", RUN_TWICE, ONLY_ANY], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # --hypothesis-profile=dev made hypothesis load a profile `dev`: the session's settings, unchanged
    assert found == {"counts": [[8], [2], [8], [8]], "session_profile": "dev", "session_max_examples": 100}, found


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--lstm-timeout=0"], "--lstm-timeout must be a number of seconds above 0, got '0'"),
    (["--lstm-timeout", "soon"], "--lstm-timeout must be a number of seconds above 0, got 'soon'"),
    (["--lstm-max-examples", "0"], "--lstm-max-examples must be a whole number of 1 or more, got '0'"),
    (["--lstm-max-examples=2.5"], "--lstm-max-examples must be a whole number of 1 or more, got '2.5'"),
    (["--lstm-profile=fast"], "--lstm-profile must be one of dev, ci, thorough, got 'fast'"),
    (["--lstm-isolation=thread"], "--lstm-isolation must be one of process, inline, got 'thread'"),
    (["--lstm-impl="], "--lstm-impl must name an implementation"),
    (["--lstm-reproducers=probe_file.txt"], "--lstm-reproducers must be a folder"),
])
def test_a_bad_option_value_is_a_one_line_usage_error(suite_runner, tmp_path: Path, args: list[str],
                                                      message: str) -> None:
    (tmp_path / "probe_file.txt").write_text("a file, not a folder\n")
    result = suite_runner("--lstm-impl=torch", *args)
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"lstm-conformance: {message}" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
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


@pytest.mark.slow
def test_parallel_workers_run_the_suite(suite_runner) -> None:
    result = suite_runner("--lstm-impl=numpy", "-n", "2", "--lstm-profile=dev")
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


@pytest.mark.slow
@pytest.mark.parametrize("selects_the_suite", [True, False])
def test_start_up_objects_are_frozen_only_in_a_conformance_run(tmp_path, selects_the_suite: bool) -> None:
    """gc.freeze() (full collections and the one at exit skip torch's objects) is process-wide: a pytest
    session that does not run the suite keeps its collector as it was."""
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


class _Config:
    """What _suite_selected reads of a pytest config: `pytest` run in `folder`, no arguments."""

    def __init__(self, folder: Path) -> None:
        self.args = [str(folder)]
        self.invocation_params = type("Params", (), {"dir": folder})()

    def getini(self, name: str) -> list[str]:
        assert name == "norecursedirs"
        return [".*", "venv", "build"]

    def getoption(self, name: str, default: object = None) -> object:
        return {"pyargs": False, "collect_in_virtualenv": False}.get(name, default)


@pytest.mark.parametrize("installed_in, selected", [
    ("myenv/lib/python3/site-packages", False),  # a virtual environment (pyvenv.cfg) in the project
    (".venv/lib/python3/site-packages", False),  # a folder norecursedirs names
    ("vendor", True),  # an ordinary folder: `pytest` there collects the suite too
])
def test_a_project_folder_holding_the_installed_suite_selects_it_only_where_pytest_collects_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed_in: str, selected: bool) -> None:
    from conformance import plugin

    suite = tmp_path / installed_in / "conformance" / "suite"
    suite.mkdir(parents=True)
    (tmp_path / "myenv" / "pyvenv.cfg").parent.mkdir(exist_ok=True)
    (tmp_path / "myenv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    monkeypatch.setattr(plugin, "_SUITE", suite)
    assert plugin._suite_selected(_Config(tmp_path)) is selected
    assert plugin._suite_selected(_Config(suite)) is True  # naming the suite's folder itself always selects it
