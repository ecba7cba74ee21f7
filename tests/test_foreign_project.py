"""The installed plugin in a project that is not the conformance suite: everything runs as without it.

The ``pytest11`` entry point loads the plugin into every pytest session of the environment a port
author installs lstm-conformance into.  A project of their own (its hypothesis tests and profile,
a ``stress/`` folder, a ``stress`` marker of its own, a stale ``LSTM_CONFORMANCE_IMPL`` or
``LSTM_CONFORMANCE_DATABASE``) must run exactly as it does with the plugin disabled: the same outcome
per test, the same hypothesis settings (its example database too), the same header, and torch never
imported.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

from .conftest import REPO, run_pytest

CONFTEST = '''
import json, os, sys

import pytest
from hypothesis import settings

OWN_PROFILE = {own_profile!r}
if OWN_PROFILE:
    settings.register_profile("mine", max_examples=13, deadline=1000)
    settings.load_profile("mine")


@pytest.fixture
def expected_examples():
    """What this project's hypothesis tests run: its own profile's number, else hypothesis' default."""
    return settings.get_profile("mine" if OWN_PROFILE else "default").max_examples


def pytest_sessionfinish(session):
    with open(os.environ["FOREIGN_OUT"] + ".torch", "w") as out:
        json.dump("torch" in sys.modules, out)
'''

PROPERTIES = '''
import json, os

from hypothesis import given, settings, strategies as st

RAN = []


@given(st.integers())
def test_a_property(x):
    RAN.append(x)
    current = settings.default  # inside a hypothesis test: the settings it runs with
    with open(os.environ["FOREIGN_OUT"] + ".settings", "w") as out:
        json.dump({"max_examples": current.max_examples, "deadline": repr(current.deadline),
                   "derandomize": current.derandomize, "phases": repr(current.phases),
                   "print_blob": current.print_blob, "database": repr(current.database)}, out)


def test_the_property_ran_as_many_examples_as_the_project_says(expected_examples):
    assert len(RAN) == expected_examples
'''

STRESS_FOLDER = '''
def test_in_a_folder_named_stress():
    assert True
'''

MARKED = '''
import pytest


@pytest.mark.stress
def test_marked_stress_by_the_project():
    assert True
'''


def _plugin_name() -> str:
    """The name pytest registers the plugin under: its ``pytest11`` entry point's."""
    names = [ep.name for ep in metadata.entry_points(group="pytest11") if ep.value == "conformance.plugin"]
    assert len(names) == 1, f"lstm-conformance's pytest11 entry point is not installed: {names}"
    return names[0]


def _project(root: Path, own_profile: bool) -> Path:
    root.mkdir()
    (root / "conftest.py").write_text(CONFTEST.format(own_profile=own_profile))
    (root / "test_properties.py").write_text(PROPERTIES)
    (root / "test_marked.py").write_text(MARKED)
    (root / "stress").mkdir()
    (root / "stress" / "test_heavy.py").write_text(STRESS_FOLDER)
    return root


def _outcomes(junit: Path) -> dict[str, str]:
    """Each test's (or collection error's) outcome, with its skip or error message."""
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                message = (child.get("message") or "").splitlines()
                outcome = f"{child.tag}: {message[0] if message else ''}"
        outcomes[test] = outcome
    return outcomes


def _run(project: Path, name: str, args: list[str], env: dict) -> dict:
    out = project.parent / name
    junit = project.parent / f"{name}.xml"
    result = run_pytest([*args, f"--junitxml={junit}", "-o", "junit_family=xunit1"], cwd=project,
                        env={**env, "FOREIGN_OUT": str(out)})
    lines = result.stdout.splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith("collect")), len(lines))
    # the header: the lines before collection, but for pytest's list of the installed plugins
    header = [line for line in lines[1:end] if not line.startswith("plugins:")]
    summary = re.sub(r" in [\d.]+s", "", lines[-1]) if lines else ""
    found = {suffix: json.loads(Path(f"{out}.{suffix}").read_text()) if Path(f"{out}.{suffix}").exists() else None
             for suffix in ("settings", "torch")}
    return {"code": result.returncode, "outcomes": _outcomes(junit) if junit.exists() else {}, "header": header,
            "summary": summary, **found, "output": result.stdout + result.stderr,
            "plugins": next((line for line in lines if line.startswith("plugins:")), "")}


@pytest.mark.slow
@pytest.mark.parametrize("own_profile, strict_markers, ci", [
    (True, False, None),   # the project loads its own profile; its stress marker is not registered anywhere
    (False, True, "true"),  # hypothesis' default (its ci profile under CI), and --strict-markers
], ids=["own-profile", "strict-markers-under-CI"])
def test_a_foreign_project_runs_as_without_the_plugin(tmp_path: Path, own_profile: bool, strict_markers: bool,
                                                      ci: str | None) -> None:
    project = _project(tmp_path / "project", own_profile)
    args = ["--strict-markers", "--continue-on-collection-errors"] if strict_markers else []
    # a stale implementation and shared database, left from another shell (either would be a usage error)
    env = {"LSTM_CONFORMANCE_IMPL": "nope", "LSTM_CONFORMANCE_DATABASE": "nope://stale", "CI": ci}
    name = _plugin_name()
    installed = _run(project, "with", args, env)
    disabled = _run(project, "without", [*args, "-p", f"no:{name}"], env)
    assert installed["code"] == disabled["code"], installed["output"]
    assert "lstm-conformance" in installed["plugins"] and "lstm-conformance" not in disabled["plugins"], \
        (installed["plugins"], disabled["plugins"])  # the comparison is between the plugin and none
    assert installed["outcomes"] == disabled["outcomes"], installed["output"]
    assert installed["summary"] == disabled["summary"], installed["output"]  # counts, warnings included
    assert installed["settings"] == disabled["settings"], installed["output"]
    assert installed["header"] == disabled["header"], installed["output"]
    assert not any("lstm-conformance" in line for line in installed["header"]), installed["header"]
    assert installed["torch"] is False and disabled["torch"] is False

    # and the project's own tests ran as the project says, not as the suite's profiles would have them
    outcomes = installed["outcomes"]
    assert outcomes["test_properties::test_the_property_ran_as_many_examples_as_the_project_says"] == "passed", \
        installed["output"]
    assert outcomes["stress.test_heavy::test_in_a_folder_named_stress"] == "passed", outcomes
    marked = [outcome for test, outcome in outcomes.items() if "test_marked" in test]
    if strict_markers:  # the project never registered `stress`: pytest rejects it, with the plugin too
        assert marked and all(outcome.startswith("error") for outcome in marked), outcomes
    else:
        assert marked == ["passed"], outcomes


IMPORT_ONLY = """
import json, sys
from hypothesis import settings
from hypothesis.errors import InvalidArgument

def profiles():
    found = {}
    for name in ("default", "ci", "dev", "thorough", "lstm-conformance-ci"):
        try:
            found[name] = repr(settings.get_profile(name))
        except InvalidArgument:
            found[name] = None
    return found, settings.get_current_profile_name(), repr(settings.default)

before = profiles()
import conformance.plugin
print(json.dumps({"same": profiles() == before, "torch": "torch" in sys.modules}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("ci", [None, "true"])
def test_importing_the_plugin_registers_and_loads_no_profile(tmp_path: Path, ci: str | None) -> None:
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env.update({"PYTHONPATH": str(REPO), **({"CI": ci} if ci else {})})
    result = subprocess.run([sys.executable, "-c", IMPORT_ONLY], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"same": True, "torch": False}
