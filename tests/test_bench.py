"""The benchmark computes its figures correctly: arithmetic, attribution to tests, JSON, errors.

No assertion here is about speed: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import bench, timing
from tests.conftest import REPO


def _test(nodeid: str, pid: int, start: float, end: float, examples: int = 10, outcome: str = "passed") -> dict:
    return {"event": "test", "nodeid": nodeid, "pid": pid, "start": start, "end": end, "examples": examples,
            "outcome": outcome}


def test_figures_arithmetic() -> None:
    f = bench.figures(examples=30, wall_s=10.0, forward_s=7.5)
    assert f == {"examples": 30, "wall_s": 10.0, "forward_s": 7.5, "overhead_fraction": 0.25, "examples_per_s": 3.0}
    assert bench.figures(0, 0.0, 0.0)["overhead_fraction"] is None  # a test that ran nothing: no ratio
    assert bench.figures(0, 0.0, 0.0)["examples_per_s"] is None


def test_the_speedup_ceiling_keeps_each_runs_fixed_cost_whole() -> None:
    assert bench.speedup_ceiling(20.0, 2.0, 5.0, 2) == pytest.approx(20.0 / (5.0 + 9.0))
    assert bench.speedup_ceiling(20.0, 0.0, 0.0, 2) == pytest.approx(2.0)  # no fixed cost: perfect
    assert bench.speedup_ceiling(20.0, 2.0, 2.0, 4) == pytest.approx(20.0 / 6.5)


@pytest.mark.slow
def test_a_run_selecting_no_test_measures_the_fixed_cost() -> None:
    run = bench.run_suite("numpy", "dev", 0, empty=True)
    assert run["exit_code"] == 5 and run["examples"] == 0 and 0 < run["wall_s"] < 60


def test_forward_records_go_to_the_test_running_in_their_owner_process() -> None:
    tests = [_test("a.py::t1", 100, 0.0, 1.0), _test("a.py::t2", 100, 1.0, 2.0), _test("b.py::t3", 200, 0.0, 2.0)]
    forwards = [
        ("100", "reference", 0.5, 0.25),   # owner 100 during t1
        ("100", "candidate", 1.5, 0.5),    # owner 100 during t2
        ("200", "oracle", 0.5, 0.125),     # owner 200 (the other xdist worker) during t3, although t1 ran then too
        ("100", "candidate", 5.0, 1.0),    # after every test of its owner
        ("300", "candidate", 0.5, 2.0),    # an owner that ran no test
    ]
    sums, unattributed = bench.attribute(tests, forwards)
    assert sums == {"a.py::t1": 0.25, "a.py::t2": 0.5, "b.py::t3": 0.125}
    assert unattributed == 3.0


def test_analyse_totals_groups_and_files() -> None:
    tests = [_test("conformance/suite/test_a.py::test_x[one]", 1, 10.0, 12.0, examples=30),
             _test("conformance/suite/test_a.py::test_x[two]", 1, 12.0, 13.0, examples=20),
             _test("conformance/suite/test_b.py::test_y", 1, 13.0, 17.0, examples=8, outcome="failed")]
    forwards = [("1", "reference", 10.5, 0.5), ("1", "oracle", 10.6, 0.25), ("1", "candidate", 10.7, 0.25),
                ("1", "candidate", 12.5, 0.5), ("1", "reference", 14.0, 1.0)]
    result = bench.analyse(20.0, tests, forwards)
    assert result["examples"] == 58
    assert result["wall_s"] == 20.0 and result["forward_s"] == 2.5
    assert result["overhead_fraction"] == pytest.approx((20.0 - 2.5) / 20.0)
    assert result["examples_per_s"] == pytest.approx(58 / 20.0, abs=0.01)
    assert result["forward_by_label"] == {"reference": 1.5, "oracle": 0.25, "candidate": 0.75}
    assert result["tests_wall_s"] == 7.0 and result["unattributed_forward_s"] == 0.0
    assert result["outcomes"] == {"passed": 2, "failed": 1}
    one = result["groups"]["test_a.py::test_x[one]"]
    assert one["forward_s"] == 1.0 and one["wall_s"] == 2.0 and one["overhead_fraction"] == 0.5
    assert one["examples_per_s"] == 15.0
    assert result["groups"]["test_b.py::test_y"]["outcome"] == "failed"
    assert result["files"]["test_a.py"] == bench.figures(50, 3.0, 1.5)
    assert result["files"]["test_b.py"] == bench.figures(8, 4.0, 1.0)
    json.dumps(result)  # the report is plain JSON


def test_records_are_read_back_from_the_folder(tmp_path: Path) -> None:
    (tmp_path / "forward-100-101.tsv").write_text("reference\t1.5\t0.25\ncandidate\t1.6\t0.5\noracle\t1.7")
    (tmp_path / "forward-100-102.tsv").write_text("candidate\t1.8\t0.125\n")  # a forked child of the worker
    (tmp_path / "tests-100-100.tsv").write_text(
        json.dumps({"event": "session", "pid": 100}) + "\n" + json.dumps(_test("t.py::t", 100, 1.0, 2.0)) + "\n{broken")
    tests, forwards, events = bench.load_records(tmp_path)
    assert [t["nodeid"] for t in tests] == ["t.py::t"] and [e["event"] for e in events] == ["session"]
    # the last line of the first file was cut short (a killed process): it is dropped
    assert sorted(forwards) == [("100", "candidate", 1.6, 0.5), ("100", "candidate", 1.8, 0.125),
                                ("100", "reference", 1.5, 0.25)]


def test_catalogue_median_counts_an_unflagged_port_as_slowest() -> None:
    def port(seconds):
        return {"flagged": seconds is not None, "seconds_to_flag": seconds}

    summary = bench.summarise_catalogue({"a": port(2.0), "b": port(4.0), "c": port(None)})
    assert summary["median_seconds_to_flag"] == 4.0
    assert summary["max_seconds_to_flag"] == 4.0 and summary["not_flagged"] == ["c"]
    assert bench.summarise_catalogue({"a": port(None), "b": port(None), "c": port(1.0)})["median_seconds_to_flag"] is None
    assert bench.summarise_catalogue({"a": port(1.0), "b": port(3.0)})["median_seconds_to_flag"] == 2.0


def test_the_catalogue_outside_a_checkout_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(bench.BenchError) as raised:
        bench.catalogue_ports(tmp_path)
    message = str(raised.value)
    assert "\n" not in message and "needs a source checkout" in message
    assert str(tmp_path / "tests" / "ports" / "broken.py") in message


@pytest.mark.slow
def test_the_catalogue_of_this_checkout_is_listed_without_importing_it() -> None:
    from tests.ports.broken import CATALOGUE

    ports = bench.catalogue_ports(REPO)
    assert ports == {name: f"tests.ports.broken:{cls.__name__}" for name, cls in CATALOGUE.items()}


@pytest.mark.slow
def test_catalogue_outside_a_checkout_fails_before_any_run(tmp_path: Path) -> None:
    result = _run_main(["torch", "--catalogue", str(tmp_path)])
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--catalogue needs a source checkout of lstm-conformance" in result.stderr
    assert "running the suite" not in result.stderr


def test_timing_is_off_without_the_variable() -> None:
    if timing.ENABLED:
        pytest.skip("timings are on in this process")
    assert timing.timed("candidate") is timing.timed("reference")  # one shared do-nothing context manager
    with timing.timed("candidate"):
        pass


@pytest.mark.slow
def test_timing_writes_one_file_per_process_and_owner(tmp_path: Path) -> None:
    code = ("import os\nfrom conformance import timing\n"
            "with timing.timed('reference'):\n    pass\n"
            "pid = os.fork()\n"
            "if pid == 0:\n    timing.record('candidate', 1.0, 0.5)\n    os._exit(0)\n"
            "os.waitpid(pid, 0)\nprint(os.getpid(), pid)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), **{timing.ENV_VAR: str(tmp_path), timing.OWNER_VAR: "42"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    parent, child = out.stdout.split()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"forward-42-{parent}.tsv", f"forward-42-{child}.tsv"])
    label, _, seconds = (tmp_path / f"forward-42-{parent}.tsv").read_text().split()
    assert label == "reference" and 0 <= float(seconds) < 1
    assert (tmp_path / f"forward-42-{child}.tsv").read_text() == "candidate\t1.000000\t0.500000000\n"


def _run_main(argv: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "conformance.bench", *argv], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_an_unknown_implementation_is_a_one_line_error(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    result = _run_main(["no.such.module:LSTM", "--json", str(target)])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("lstm-conformance bench: error:") and "no.such.module" in result.stderr
    assert not target.exists()  # not left behind, empty


@pytest.mark.slow
def test_an_unwritable_json_path_is_a_one_line_error(tmp_path: Path) -> None:
    result = _run_main(["torch", "--json", str(tmp_path / "missing" / "out.json")])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot write --json" in result.stderr


@pytest.mark.slow
def test_a_bad_option_is_a_one_line_error() -> None:
    result = _run_main(["torch", "--profile", "fast"])
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_parser_plugs_into_a_subcommand_parser() -> None:
    parser = argparse.ArgumentParser(prog="lstm-conformance")
    sub = parser.add_subparsers(dest="command", required=True)
    bench.add_parser(sub)
    args = parser.parse_args(["bench", "numpy", "--profile", "dev", "--json", "x.json", "--catalogue", "--seed", "random"])
    assert args.func is bench.main and args.impl == "numpy" and args.profile == "dev" and args.catalogue == "."
    assert args.seed is None and args.scaling and args.workers == 2


@pytest.mark.slow
def test_a_small_run_attributes_the_worker_processes_forward_calls(tmp_path: Path) -> None:
    """End to end on 8 examples: the worker process's records reach the test that ran them."""
    target = tmp_path / "bench.json"
    result = _run_main(["torch", "--profile", "dev", "--no-scaling", "-k", "test_matches_torch and sizes_of_one",
                        "--json", str(target)])
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(target.read_text())
    for key in ("examples", "wall_s", "forward_s", "overhead_fraction", "examples_per_s", "groups", "scaling",
                "catalogue", "run"):
        assert key in report
    group = report["groups"]["test_conformance.py::test_matches_torch[sizes_of_one]"]
    assert group["examples"] == report["examples"] >= 8  # dev: 8 examples (more if hypothesis replays one)
    assert 0 < group["forward_s"] < group["wall_s"] < report["wall_s"]
    assert report["run"]["unattributed_forward_s"] == 0
    assert set(report["run"]["forward_by_label"]) == {"reference", "oracle", "candidate"}
    assert report["run"]["forward_by_label"]["candidate"] > 0
    assert report["overhead_fraction"] == pytest.approx(1 - report["forward_s"] / report["wall_s"], abs=1e-3)
    assert "test_conformance.py::test_matches_torch[sizes_of_one]" in result.stdout
