"""The command line: check, report, list; one-line errors; reproducibility by seed and database."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_report_on_a_port_never_seen_gives_a_matrix_and_a_reproducer_that_exits_1(tmp_path: Path) -> None:
    (tmp_path / "new_port.py").write_text(NEW_PORT)
    result = _cli("report", "new_port:TanhOutputGate", "--profile", "dev", "--max-examples", "3", "-n", "2",
                  "--json", "out.json", "--markdown", "out.md", cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads((tmp_path / "out.json").read_text())
    assert {"implementation", "torch_version", "features", "failures"} <= set(doc)
    assert doc["implementation"] == "new_port:TanhOutputGate" and doc["torch_version"].startswith("2.")
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
    table = _cli("table", "out.json", "--markdown", "table.md", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert lines[0] == "| feature | `new_port:TanhOutputGate` |"
    assert "| batch_first | **failed** |" in lines and "| errors: forward call | passed |" in lines


@pytest.mark.parametrize("args, message", [
    (["check", "nope"], "unknown implementation 'nope'"),
    (["report", "numpy", "--json", "/no/such/folder/out.json"], "folder /no/such/folder does not exist"),
    (["report", "numpy"], "report needs --json FILE and/or --markdown FILE"),
    (["check", "numpy", "--profile", "fast"], "invalid choice: 'fast'"),
    (["check", "numpy", "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["table", "missing.json"], "cannot read report missing.json"),
])
def test_bad_input_is_a_one_line_error(tmp_path: Path, args: list[str], message: str) -> None:
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("lstm-conformance"), result.stderr


def test_list_shows_capabilities(tmp_path: Path) -> None:
    result = _cli("list", cwd=tmp_path)
    assert result.returncode == 0
    assert "numpy" in result.stdout and "torch" in result.stdout and "unsupported:" in result.stdout


def test_check_prints_a_summary_table(tmp_path: Path) -> None:
    result = _cli("check", "torch", "--profile", "dev", "--max-examples", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "feature" in result.stdout and "batch_first" in result.stdout and " passed" in result.stdout


def test_a_seed_reproduces_a_run_even_where_ci_derandomizes(tmp_path: Path) -> None:
    (tmp_path / "test_seed.py").write_text(
        "from hypothesis import settings\n\n"
        "def test_seed_is_honoured():\n    assert not settings.default.derandomize\n")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "CI": "true"}
    runs = [subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_seed.py", *extra],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            for extra in (["--hypothesis-seed=7"], [])]
    assert runs[0].returncode == 0, runs[0].stdout
    assert runs[1].returncode == 1  # without a seed, CI runs stay derandomized


def test_a_failing_example_replays_from_the_database(suite_runner, tmp_path: Path) -> None:
    args = ["--lstm-impl=tests.ports.broken:OnnxGateOrder", "--hypothesis-profile=dev", "-x", "-q",
            "-k", "test_matches_torch and bidirectional"]
    first = suite_runner(*args, env={"CI": None})
    assert first.returncode == 1
    assert any((tmp_path / ".hypothesis" / "examples").iterdir())
    second = suite_runner(*args, env={"CI": None})
    drawn = [re.findall(r"Draw 1 \(case\): (Case\(.*?\)\))", run.stdout) for run in (first, second)]
    assert drawn[0] and drawn[0][0] == drawn[1][0], (drawn, second.stdout[-3000:])
