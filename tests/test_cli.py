"""The command line: check, report, list; one-line errors; help; reproducibility by seed and database."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance import bench, cli, report, report_render
from conformance.report import STATUSES

from .conftest import REPO

#: A port the suite has never seen: the output gate uses tanh instead of a sigmoid.
NEW_PORT = '''
import torch
from tests.ports.scratch_lstm import ScratchLSTM


class TanhOutputGate(ScratchLSTM):
    def _gates(self, gates):
        i, f, g, o = super()._gates(gates)
        return i, f, g, torch.tanh(torch.logit(o.clamp(1e-6, 1 - 1e-6)))
'''


def _cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    environ = {"PYTHONPATH": f"{REPO}:{cwd}", "PATH": "/usr/bin:/bin", "HOME": str(cwd), **(env or {})}
    return subprocess.run([sys.executable, "-m", "conformance", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_report_on_a_port_never_seen_gives_a_matrix_and_a_reproducer_that_exits_1(tmp_path: Path) -> None:
    (tmp_path / "new_port.py").write_text(NEW_PORT)
    started = time.perf_counter()
    result = _cli("report", "new_port:TanhOutputGate", "--profile", "dev", "--max-examples", "3", "-n", "2",
                  "--seed", "5", "--json", "out.json", "--markdown", "out.md", cwd=tmp_path, env={"CI": "true"})
    took = time.perf_counter() - started
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads((tmp_path / "out.json").read_text())
    assert {"implementation", "torch_version", "features", "failures"} <= set(doc)
    assert doc["implementation"] == "new_port:TanhOutputGate" and doc["torch_version"].startswith("2.")
    assert doc["schema"] == 2 and doc["profile"] == "dev" and doc["seed"] == 5  # as asked, CI or not
    assert 0 < doc["duration_s"] < took
    assert doc["notes"] and all(isinstance(n, int) and n > 0 for n in doc["notes"].values())
    assert set(doc["notes"]) <= {"reference-undefined", "incidental error differs", "expected failure"}
    rows = {row["name"]: row for row in doc["features"]}
    assert {"batch_first", "bidirectional", "packed_unsorted", "proj_size", "float64", "unbatched",
            "errors: forward call"} <= set(rows)
    for row in doc["features"]:
        assert set(row) == {"name", "status", "examples", "tests"} and row["status"] in STATUSES
        assert set(row["tests"]) <= set(STATUSES) and sum(row["tests"].values()) >= 1
        assert isinstance(row["examples"], int)
    assert rows["batch_first"]["status"] == "failed" and rows["batch_first"]["examples"] >= 1
    assert rows["errors: forward call"]["status"] == "passed"
    first = doc["failures"][0]
    assert set(first) >= {"feature", "summary", "reproducer"}
    assert "first departs from torch at layer 0, forward direction, time step 0" in first["summary"]
    (tmp_path / "repro.py").write_text(first["reproducer"])
    replay = subprocess.run([sys.executable, "repro.py"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert replay.returncode == 1, replay.stdout + replay.stderr
    markdown = (tmp_path / "out.md").read_text()
    assert "| feature | status | examples |" in markdown and "```python" in markdown
    assert f"profile `dev`, seed 5, {doc['duration_s']:.1f} s," in markdown
    assert "Notes (information, not failures): " in markdown
    table = _cli("table", "out.json", "--markdown", "table.md", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert lines[0] == "| feature | `new_port:TanhOutputGate` |"
    assert "| batch_first | **failed** |" in lines and "| errors: forward call | passed |" in lines


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["check", "nope"], "unknown implementation 'nope'"),
    (["report", "numpy", "--json", "/no/such/folder/out.json"], "folder /no/such/folder does not exist"),
    (["report", "numpy"], "report needs --json FILE and/or --markdown FILE"),
    (["check", "numpy", "--profile", "fast"], "invalid choice: 'fast'"),
    (["check", "numpy", "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["table", "missing.json"], "cannot read report missing.json"),
    (["check", "numpy", "--max-examples", "-3"], "--max-examples: must be a whole number of 1 or more, got '-3'"),
    (["check", "numpy", "--max-examples", "0"], "--max-examples: must be a whole number of 1 or more, got '0'"),
    (["report", "numpy", "--json", "x.json", "--max-examples", "many"], "--max-examples: must be a whole number"),
    (["check", "numpy", "--seed", "-1"], "argument --seed: must be a whole number of 0 or more, got '-1'"),
    (["report", "numpy", "--json", "x.json", "--seed", "1.5"], "argument --seed: must be a whole number of 0 or more"),
    (["check", "numpy", "-n", "-2"], "argument -n: must be a whole number of 0 or more, got '-2'"),
    (["check", "numpy", "-n", "two"], "argument -n: must be a whole number of 0 or more, got 'two'"),
    (["bench", "numpy", "--workers", "0"], "argument --workers: must be a whole number of 1 or more, got '0'"),
    (["bench", "numpy", "--seed", "-4"], "argument --seed: must be a whole number of 0 or more, or 'random', got '-4'"),
])
def test_bad_input_is_a_one_line_error(tmp_path: Path, args: list[str], message: str) -> None:
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("lstm-conformance"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout and "INTERNALERROR" not in result.stderr + result.stdout
    assert not result.stdout  # nothing ran


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "lstm-conformance bench: error: argument --workers: must be a whole number of 1 or more"),
    (["--seed", "x"], "lstm-conformance bench: error: argument --seed: must be a whole number of 0 or more"),
])
def test_bench_on_its_own_gives_the_same_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "conformance.bench", "numpy", *args], cwd=tmp_path,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(message), result.stderr


def _parsed(monkeypatch: pytest.MonkeyPatch, *argv: str) -> argparse.Namespace:
    """The namespace ``lstm-conformance check ...`` runs with; the suite itself is not run."""
    seen = []
    monkeypatch.setattr(cli, "_run", lambda args, doing: seen.append(args))
    assert cli.main(["check", *argv]) == 2  # _run gave nothing back
    return seen[0]


def test_good_option_values_reach_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    args = _parsed(monkeypatch, "numpy", "-n", "0", "--max-examples", "1", "--seed", "0")
    assert (args.workers, args.max_examples, args.seed) == (0, 1, 0)
    out = cli._pytest_args(args)
    assert "-n" not in out  # -n 0: no xdist
    assert "--lstm-max-examples=1" in out and "--hypothesis-seed=0" in out
    assert "--lstm-profile=dev" in out and not any(a.startswith("--hypothesis-profile") for a in out)
    assert "-n" in cli._pytest_args(_parsed(monkeypatch, "numpy", "-n", "3"))


@pytest.mark.parametrize("ci, argv, profile", [
    (None, [], "dev"), ("true", [], "ci"), ("", [], "dev"),
    (None, ["--profile", "thorough"], "thorough"), ("true", ["--profile", "dev"], "dev"),
    (None, ["--profile", "ci", "--profile", "thorough"], "thorough"),  # scripts/check.sh: the user's wins
])
def test_the_default_profile_follows_ci_as_pytest_does(monkeypatch: pytest.MonkeyPatch, ci: str | None,
                                                        argv: list[str], profile: str) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert _parsed(monkeypatch, "numpy", *argv).profile == profile


def test_the_cli_offers_the_plugins_profiles() -> None:
    from conformance import plugin

    assert cli.PROFILES == tuple(plugin.PROFILES) == bench.PROFILES


def test_n_without_xdist_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xdist" else real(name, *a))
    assert cli.main(["check", "numpy", "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["lstm-conformance: error: -n 2 needs pytest-xdist, which is not installed "
                                "(pip install pytest-xdist, or leave -n out)"]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


@pytest.mark.parametrize("command", ["check", "report", "table", "bench"])
def test_help_says_what_each_option_means_and_its_default(command: str) -> None:
    parser = _subcommands()[command]
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and "default" in action.help.lower(), (command, action.option_strings)


def test_check_help_states_the_defaults(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["check", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for said in ("Default: ci when the environment variable CI is set, else dev",
                 "(default: the profile's number)", "(default 0: no xdist", "(default: none: hypothesis draws",
                 "(default: the first failure of each root cause in full", "(default: none saved"):
        assert said in text, said


def _results() -> dict[str, report.TestResult]:
    return {"test_conformance.py::test_matches_torch[batch_first]":
            report.TestResult("test_conformance.py::test_matches_torch[batch_first]", "batch_first", "passed", 3)}


def test_a_report_without_a_seed_says_so() -> None:
    doc = report.document("numpy", None, "ci", _results(), duration_s=12.3456)
    assert json.loads(report_render.to_json(doc))["seed"] is None
    assert (doc["schema"], doc["profile"], doc["duration_s"]) == (2, "ci", 12.35)
    assert "profile `ci`, no seed given, 12.3 s," in report_render.to_markdown(doc)


@pytest.mark.slow
def test_table_reads_reports_of_either_schema(tmp_path: Path) -> None:
    new = report.document("numpy", None, "ci", _results(), seed=3, duration_s=1.0)
    old = {k: v for k, v in new.items() if k not in ("profile", "seed", "duration_s")}
    old.update(schema=1, hypothesis_profile="thorough", implementation="older")
    (tmp_path / "new.json").write_text(report_render.to_json(new))
    (tmp_path / "old.json").write_text(report_render.to_json(old))
    (tmp_path / "other.json").write_text(json.dumps({"schema": 3, "features": []}))
    result = _cli("table", "new.json", "old.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| batch_first | passed | passed |" in result.stdout and "profile ci, thorough" in result.stdout
    result = _cli("table", "other.json", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot read report other.json: not an lstm-conformance report (schema 1 or 2)" in result.stderr


@pytest.mark.slow
def test_list_shows_capabilities(tmp_path: Path) -> None:
    result = _cli("list", cwd=tmp_path)
    assert result.returncode == 0
    assert "numpy" in result.stdout and "torch" in result.stdout and "unsupported:" in result.stdout


@pytest.mark.slow
def test_check_prints_a_summary_table(tmp_path: Path) -> None:
    result = _cli("check", "torch", "--profile", "dev", "--max-examples", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "feature" in result.stdout and "batch_first" in result.stdout and " passed" in result.stdout


@pytest.mark.slow
def test_a_seed_reproduces_a_run_even_where_ci_derandomizes(suite_runner) -> None:
    """Under CI hypothesis derandomizes, which ignores --hypothesis-seed; the suite's tests honour it."""
    args = ["--lstm-impl=torch", "-k", "test_matches_torch and any and not many_layers", "--lstm-max-examples=4",
            "-s", "--hypothesis-verbosity=verbose"]
    runs = [suite_runner(*args, *seed, env={"CI": "true"})
            for seed in (["--hypothesis-seed=7"], ["--hypothesis-seed=7"], ["--hypothesis-seed=8"])]
    drawn = [re.findall(r"Draw 1 \(case\): (.*)", run.stdout) for run in runs]
    assert all(run.returncode == 0 for run in runs) and len(drawn[0]) == 4, runs[0].stdout[-3000:]
    assert drawn[0] == drawn[1] and drawn[0] != drawn[2], drawn


@pytest.mark.slow
def test_a_failing_example_replays_from_the_database(suite_runner, tmp_path: Path) -> None:
    args = ["--lstm-impl=tests.ports.broken:OnnxGateOrder", "--hypothesis-profile=dev", "-x", "-q",
            "-k", "test_matches_torch and bidirectional"]
    first = suite_runner(*args, env={"CI": None})
    assert first.returncode == 1
    assert any((tmp_path / ".hypothesis" / "examples").iterdir())
    second = suite_runner(*args, env={"CI": None})
    drawn = [re.findall(r"^What differs .* on case: (Case\(.*\))$", run.stdout, re.M) for run in (first, second)]
    assert drawn[0] and drawn[0][0] == drawn[1][0], (drawn, second.stdout[-3000:])


@pytest.mark.slow
def test_a_report_tells_unsupported_from_not_run_by_the_status_the_suite_records(tmp_path: Path) -> None:
    result = _cli("report", "tests.ports.adapters:LimitedNumpyLSTM", "--profile", "dev", "--max-examples", "1",
                  "--json", "out.json", cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {row["name"]: row["status"] for row in json.loads((tmp_path / "out.json").read_text())["features"]}
    assert rows["packed"] == rows["float64"] == "unsupported"  # declared absent by the adapter
    assert rows["errors: constructor arguments"] == "not run"  # does not apply to adapters
    assert rows["batch_first"] == "passed"
