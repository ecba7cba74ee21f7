"""``lstm-conformance bench IMPL``: how much of the suite's time is the work it checks.

Runs the conformance suite on IMPL in a fresh ``pytest`` process with :mod:`conformance.timing`
on, and reports

* ``examples`` (hypothesis examples run), ``wall_s`` (the pytest process, end to end: start-up,
  collection and all), ``forward_s`` (seconds inside torch's forward calls, the float64 oracle's
  and the candidate's, summed over every process), ``overhead_fraction`` =
  ``(wall_s - forward_s) / wall_s`` and ``examples_per_s``; the same per test (``groups``) and per
  test file (``files``); for a process port, ``protocol_ms_per_example`` (its requests' round trips
  less the time the port says it spent, :data:`conformance.timing.PROTOCOL`) and that time over
  torch's and the oracle's forward time;
* ``scaling``: the same run with ``-n 2`` (pytest-xdist), and its speed-up over the plain run; also
  the fixed cost of each (a run selecting no test) and the speed-up those allow at most;
* with ``--catalogue [CHECKOUT]``: for each broken port of ``CHECKOUT/tests/ports/broken.py`` (a source
  checkout of this project, the current folder by default: the test tree is not installed), the seconds
  from starting ``pytest --lstm-impl=<port> --lstm-profile=P -x`` to its first reported failure, and
  their median.

The figures depend on the machine and on what else runs on it: the JSON records the load average
before and after each run.  The command and its JSON: ``docs/cli.md``; figures: ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Optional

from . import forkserver, timing
from .options import OneLineParser, OptionError, argparse_type, check_writable, non_negative_int, positive_int
from .registry import ResolutionError, resolve

__all__ = ["add_parser", "main", "analyse", "figures", "attribute", "load_records", "speedup_ceiling", "BenchError",
           "catalogue", "catalogue_ports"]

PROFILES = ("dev", "ci", "thorough")
#: Where a source checkout keeps the broken ports ``--catalogue`` times, below the checkout's root.
CATALOGUE_FILE = Path("tests", "ports", "broken.py")


class BenchError(Exception):
    """A usage error: reported as one line, exit status 2."""


# --------------------------------------------------------------------------- the arithmetic
def figures(examples: int, wall_s: float, forward_s: float) -> dict:
    """The four derived figures of one run or one group."""
    return {
        "examples": examples,
        "wall_s": round(wall_s, 4),
        "forward_s": round(forward_s, 4),
        "overhead_fraction": round((wall_s - forward_s) / wall_s, 4) if wall_s > 0 else None,
        "examples_per_s": round(examples / wall_s, 2) if wall_s > 0 else None,
    }


def load_records(folder: Path) -> tuple[list[dict], list[tuple[str, str, float, float]], list[dict]]:
    """``(tests, forwards, events)`` from a timings folder.

    ``forwards`` are ``(owner, label, started_at, seconds)``: ``owner`` is the id of the pytest
    process the record belongs to (see :mod:`conformance.timing`).
    """
    tests: list[dict] = []
    events: list[dict] = []
    forwards: list[tuple[str, str, float, float]] = []
    for path in sorted(folder.iterdir()):
        kind, _, rest = path.stem.partition("-")
        owner = rest.split("-")[0]
        lines = path.read_text().splitlines()
        if kind == "forward":
            for line in lines:
                parts = line.split("\t")
                if len(parts) == 3:  # a line cut short by a killed process is dropped
                    forwards.append((owner, parts[0], float(parts[1]), float(parts[2])))
        elif kind == "tests":
            for line in lines:
                try:
                    payload = json.loads(line)
                except ValueError:
                    continue
                (tests if payload.get("event") == "test" else events).append(payload)
    return tests, forwards, events


def attribute(tests: list[dict], forwards: Iterable[tuple[str, str, float, float]]) -> tuple[dict, float]:
    """Forward seconds per test nodeid, and the seconds no test interval contains.

    A record belongs to the test that was running, at the record's start, in the pytest process
    that owns it (a pytest process runs one test at a time; its worker processes serve only it).
    """
    by_owner: dict[str, list[dict]] = defaultdict(list)
    for test in tests:
        by_owner[str(test["pid"])].append(test)
    for intervals in by_owner.values():
        intervals.sort(key=lambda t: t["start"])
    sums: dict[str, float] = defaultdict(float)
    unattributed = 0.0
    for owner, _label, started, seconds in forwards:
        for test in by_owner.get(owner, ()):
            if test["start"] <= started <= test["end"]:
                sums[test["nodeid"]] += seconds
                break
        else:
            unattributed += seconds
    return dict(sums), unattributed


def group_name(nodeid: str) -> str:
    """``test_file.py::test_name[param]``, without the folders."""
    path, _, rest = nodeid.partition("::")
    return f"{Path(path).name}::{rest}" if rest else Path(path).name


def analyse(wall_s: float, tests: list[dict], forwards: list[tuple[str, str, float, float]]) -> dict:
    """The run's figures, per label, per group (test) and per test file."""
    per_test, unattributed = attribute(tests, forwards)
    by_label: dict[str, float] = {label: 0.0 for label in timing.LABELS}
    for _owner, label, _started, seconds in forwards:
        by_label[label] = by_label.get(label, 0.0) + seconds
    forward_s = sum(v for k, v in by_label.items() if k != timing.PROTOCOL)  # protocol: inside the candidate's
    forwards = [f for f in forwards if f[1] != timing.PROTOCOL]
    groups: dict[str, dict] = {}
    files: dict[str, list] = defaultdict(lambda: [0, 0.0, 0.0])
    for test in tests:
        name = group_name(test["nodeid"])
        wall = test["end"] - test["start"]
        fwd = per_test.get(test["nodeid"], 0.0)
        groups[name] = dict(figures(test["examples"], wall, fwd), outcome=test.get("outcome", ""))
        totals = files[name.partition("::")[0]]
        totals[0] += test["examples"]
        totals[1] += wall
        totals[2] += fwd
    outcomes: dict[str, int] = defaultdict(int)
    for test in tests:
        outcomes[test.get("outcome", "")] += 1
    return {
        **figures(sum(t["examples"] for t in tests), wall_s, forward_s),
        "forward_by_label": {k: round(v, 4) for k, v in by_label.items()},
        **_protocol(by_label, sum(t["examples"] for t in tests)),
        "tests_wall_s": round(sum(t["end"] - t["start"] for t in tests), 4),
        "unattributed_forward_s": round(unattributed, 4),
        "outcomes": dict(outcomes),
        "files": {name: figures(*totals) for name, totals in sorted(files.items())},
        "groups": dict(sorted(groups.items())),
    }


def _protocol(by_label: dict[str, float], examples: int) -> dict:
    """A process port's protocol cost per example, beside the forward work (torch's and the oracle's
    calls) and the port's own calls; nothing for other ports."""
    seconds = by_label.get(timing.PROTOCOL)
    if not seconds or not examples:
        return {}
    work = by_label.get("reference", 0.0) + by_label.get("oracle", 0.0)
    return {"protocol_ms_per_example": round(1000 * seconds / examples, 4),
            "protocol_per_reference_forward": round(seconds / work, 4) if work else None}


# --------------------------------------------------------------------------- running pytest
def _load() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def _children_cpu() -> float:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on every platform
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _environment(folder: Path, extra_path: Optional[Path] = None) -> dict:
    env = dict(os.environ)
    env[timing.ENV_VAR] = str(folder)
    for name in (timing.OWNER_VAR, forkserver.ENV_VAR, "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    return env


def run_suite(impl: str, profile: str, seed: Optional[int], workers: int = 0, extra: Iterable[str] = (),
              cwd: Optional[Path] = None, extra_path: Optional[Path] = None, timeout: Optional[float] = None,
              empty: bool = False) -> dict:
    """Run the suite once in a fresh pytest process; its figures, exit status and timing events.

    ``empty=True`` selects no test: what is left is start-up and exit, the run's fixed cost.
    """
    args = [sys.executable, "-m", "pytest", "--pyargs", "conformance.suite", f"--lstm-impl={impl}",
            f"--lstm-profile={profile}", "-p", "conformance.timing", "-p", "no:cacheprovider", "-q",
            "--tb=line", "-W", "ignore::pytest.PytestAssertRewriteWarning", *extra]
    if seed is not None:
        args.append(f"--hypothesis-seed={seed}")
    if workers:
        args += ["-n", str(workers)]
    if empty:
        args += ["-k", _NOTHING]
    with tempfile.TemporaryDirectory(prefix="lstm-conformance-bench-") as folder:
        load_before = _load()
        cpu_before = _children_cpu()
        started_at = time.time()
        started = time.perf_counter()
        try:
            process = subprocess.run(args, cwd=cwd, env=_environment(Path(folder), extra_path),
                                     capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"pytest did not finish within {timeout:g} s: {' '.join(args[3:])}") from None
        wall = time.perf_counter() - started
        cpu = _children_cpu() - cpu_before
        tests, forwards, events = load_records(Path(folder))
    if process.returncode not in ((0, 1, 5) if empty else (0, 1)):  # 5: pytest selected no test
        tail = (process.stdout + process.stderr).strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"pytest exited with status {process.returncode}: {tail[0]}")
    result = analyse(wall, tests, forwards)
    # CPU seconds of the whole process tree (pytest, xdist workers, worker processes, forked children):
    # with the load average, it tells a slow machine from a busy one
    result.update(exit_code=process.returncode, load_before=load_before, load_after=_load(),
                  cpu_s=round(cpu, 3), command=" ".join(["pytest", *args[3:]]))
    if tests:  # before the first test: interpreter, imports, collection, workers starting
        result["startup_s"] = round(min(t["start"] for t in tests) - started_at, 3)
        result["shutdown_s"] = round(started_at + wall - max(t["end"] for t in tests), 3)
    failures = [e for e in events if e.get("event") == "first_failure"]
    if failures:
        first = min(failures, key=lambda e: e["time"])
        result["first_failure"] = {"nodeid": first["nodeid"], "seconds": round(first["time"] - started_at, 3)}
        failing = [t["first_failing_example"] for t in tests if t.get("first_failing_example")]
        if failing:
            result["first_failure"]["first_failing_example_seconds"] = round(min(failing) - started_at, 3)
    return result


def _catalogue_file(checkout: Path) -> Path:
    """``checkout``'s catalogue file; a one-line :class:`BenchError` naming it where it is missing."""
    listed = checkout / CATALOGUE_FILE
    if not listed.is_file():
        raise BenchError(f"--catalogue needs a source checkout of lstm-conformance: {listed} not found")
    return listed


def catalogue_ports(checkout: Path) -> dict[str, str]:
    """The broken ports of a source checkout's catalogue: name -> import path.

    Listed by an interpreter started in ``checkout``, so that this process imports nothing of the test
    tree; a folder that is not a checkout is a one-line :class:`BenchError` naming what is missing.
    """
    checkout = checkout.resolve()
    listed = _catalogue_file(checkout)
    code = ("import json\nfrom tests.ports.broken import CATALOGUE\n"
            "print(json.dumps({name: f'tests.ports.broken:{cls.__name__}' for name, cls in CATALOGUE.items()}))")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), env.get("PYTHONPATH", "")) if p)
    process = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, capture_output=True, text=True)
    if process.returncode != 0:
        tail = process.stderr.strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"cannot list the catalogue of {listed}: {tail[0]}")
    return dict(json.loads(process.stdout))


def catalogue(checkout: Path, profile: str, seed: Optional[int], log: Any = None) -> dict:
    """Time to the first reported failure for each broken port of ``checkout``'s tests/ports/broken.py."""
    checkout = checkout.resolve()
    impls = catalogue_ports(checkout)
    ports: dict[str, dict] = {}
    for name, impl in impls.items():
        # from an empty folder, as tests/test_catalogue.py runs it: no hypothesis database to replay
        with tempfile.TemporaryDirectory(prefix="lstm-conformance-catalogue-") as folder:
            try:
                run = run_suite(impl, profile, seed, extra=["-x"], cwd=Path(folder), extra_path=checkout, timeout=900)
            except BenchError as exc:  # this port could not be run: not flagged, and why
                run = {"wall_s": None, "load_before": None, "error": str(exc)}
        first = run.get("first_failure")
        entry = {"impl": impl, "flagged": bool(first), "wall_s": run["wall_s"], "load_before": run["load_before"],
                 "seconds_to_flag": first["seconds"] if first else None,
                 "first_failing_example_seconds": first.get("first_failing_example_seconds") if first else None,
                 "test": group_name(first["nodeid"]) if first else None}
        if "error" in run:
            entry["error"] = run["error"]
        ports[name] = entry
        if log is not None:
            shown = (f"{entry['seconds_to_flag']:.1f} s by {entry['test']}" if first
                     else f"NOT FLAGGED {run.get('error', '')}")
            print(f"  {name:<34} {shown}", file=log, flush=True)
    return summarise_catalogue(ports)


def summarise_catalogue(ports: dict[str, dict]) -> dict:
    """The median time to flag; a port never flagged counts as infinitely slow."""
    times = [p["seconds_to_flag"] if p["flagged"] else float("inf") for p in ports.values()]
    median = statistics.median(times) if times else None
    return {"median_seconds_to_flag": None if median is None or median == float("inf") else round(median, 3),
            "max_seconds_to_flag": max((t for t in times if t != float("inf")), default=None),
            "not_flagged": [name for name, p in ports.items() if not p["flagged"]],
            "ports": ports}


# --------------------------------------------------------------------------- the report
def table(report: dict, out: Any = sys.stdout) -> None:
    """The human-readable summary."""
    run = report["run"]
    width = max([len("whole run (end to end)"), *map(len, run["groups"]), *map(len, run["files"])])

    def line(name: str, f: dict) -> str:
        overhead = "-" if f["overhead_fraction"] is None else f"{f['overhead_fraction']:.2f}"
        rate = "-" if f["examples_per_s"] is None else f"{f['examples_per_s']:.0f}"
        return f"{name:<{width}} {f['examples']:>8} {f['wall_s']:>9.2f} {f['forward_s']:>9.2f} {overhead:>8} {rate:>8}"

    header = f"{'group':<{width}} {'examples':>8} {'wall_s':>9} {'forward_s':>9} {'overhead':>8} {'ex/s':>8}"
    print(f"lstm-conformance bench: {report['impl']}, profile {report['profile']}, seed {report['seed']}, "
          f"torch {report['torch']}, {report['cpus']} CPU(s), load {run['load_before']}", file=out)
    print(header, file=out)
    for name, f in sorted(run["groups"].items(), key=lambda kv: -kv[1]["wall_s"]):
        print(line(name, f), file=out)
    print("-" * len(header), file=out)
    for name, f in run["files"].items():
        print(line(name, f), file=out)
    print(line("whole run (end to end)", run), file=out)
    if "startup_s" in run:
        print(f"before the first test (start-up, collection): {run['startup_s']:.2f} s; "
              f"after the last: {run['shutdown_s']:.2f} s; CPU time of all processes: {run['cpu_s']:.1f} s",
              file=out)
    labels = ", ".join(f"{k} {v:.2f} s" for k, v in run["forward_by_label"].items())
    print(f"forward_s by call: {labels}; outcomes: {run['outcomes']}", file=out)
    if "protocol_ms_per_example" in run:
        print(f"process protocol: {run['protocol_ms_per_example']:.3f} ms per example, "
              f"{run['protocol_per_reference_forward']}x torch's and the oracle's forward time", file=out)
    if run.get("exit_code"):
        print("note: the suite failed on this implementation; the figures include hypothesis' shrinking", file=out)
    scaling = report.get("scaling")
    if scaling:
        if "error" in scaling:
            print(f"-n {scaling['workers']}: {scaling['error']}", file=out)
        else:
            print(f"-n {scaling['workers']}: wall {scaling['wall_s']:.2f} s vs {run['wall_s']:.2f} s: "
                  f"speed-up {scaling['speedup']:.2f}x; before its first test {scaling['startup_s']} s, "
                  f"CPU time {scaling['cpu_s']:.1f} s (load {scaling['load_before']})", file=out)
            if "fixed_s" in scaling:
                fixed = scaling["fixed_s"]
                print(f"  fixed cost (a run selecting no test): {fixed['plain']:.2f} s plain, {fixed['workers']:.2f} s "
                      f"with -n {scaling['workers']}: at most {scaling['speedup_ceiling']:.2f}x for this run", file=out)
    cat = report.get("catalogue")
    if cat:
        print(f"catalogue: median time to flag {cat['median_seconds_to_flag']} s over {len(cat['ports'])} ports, "
              f"max {cat['max_seconds_to_flag']} s; not flagged: {', '.join(cat['not_flagged']) or 'none'}", file=out)


# --------------------------------------------------------------------------- command line
def _seed(text: str) -> Optional[int]:
    """A seed of 0 or more, or ``random`` (None: hypothesis draws its own)."""
    if text == "random":
        return None
    try:
        return non_negative_int("--seed", text)
    except OptionError:
        raise argparse.ArgumentTypeError(f"must be a whole number of 0 or more, or 'random', got {text!r}") from None


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("impl", help="the implementation: a registered name (see `lstm-conformance list`) "
                                     "or an import path package.module:Class")
    parser.add_argument("--profile", choices=PROFILES, default="ci",
                        help="the suite's profile: dev, ci or thorough (default ci, whether or not CI is set, "
                             "so that figures compare)")
    parser.add_argument("--json", metavar="FILE", default=None,
                        help="also write the figures as JSON to FILE (default: only the table is printed)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="hypothesis seed, 0 or more, so that runs are comparable (default 0; 'random' "
                             "for none)")
    parser.add_argument("--workers", type=argparse_type(positive_int, "--workers"), default=2, metavar="N",
                        help="xdist workers for the scaling run, 1 or more (default 2)")
    parser.add_argument("--no-scaling", dest="scaling", action="store_false",
                        help="skip the run with --workers N (default: run it, after the plain run)")
    parser.add_argument("--catalogue", nargs="?", const=".", default=None, metavar="CHECKOUT",
                        help="also time each broken port of CHECKOUT/tests/ports/broken.py to its first failure; "
                             "CHECKOUT is a source checkout of this project, the current folder if not given "
                             "(slow; default: off)")
    parser.add_argument("-k", dest="keyword", default=None, metavar="EXPRESSION",
                        help="only the tests pytest -k EXPRESSION selects (default: every test)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to ``lstm-conformance``'s sub-commands."""
    parser = subparsers.add_parser("bench", help="time the suite on one implementation: overhead, scaling, "
                                                 "time to flag broken ports",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(func=main)
    return parser



def _check_json_path(path: str) -> bool:
    """Fail now, not after minutes of running, if FILE cannot be written; True if we created it."""
    existed = os.path.exists(path)
    problem = check_writable(path, "--json")
    if problem:
        raise BenchError(problem)
    return not existed


def main(args: argparse.Namespace) -> int:
    created = False
    try:
        if args.json:
            created = _check_json_path(args.json)
        if args.catalogue is not None:  # now, not after the runs before it
            _catalogue_file(Path(args.catalogue))
        try:
            candidate = resolve(args.impl, origin="command line")
        except ResolutionError as exc:
            raise BenchError(str(exc)) from None
        if args.workers < 1:
            raise BenchError(f"--workers must be at least 1, got {args.workers}")
        import torch

        extra = ["-k", args.keyword] if args.keyword else []
        print(f"bench: {candidate.name} ({candidate.path}), profile {args.profile}: running the suite ...",
              file=sys.stderr, flush=True)
        report: dict[str, Any] = {"impl": args.impl, "path": candidate.path, "profile": args.profile,
                                  "seed": args.seed, "torch": torch.__version__, "cpus": os.cpu_count()}
        run = run_suite(args.impl, args.profile, args.seed, extra=extra)
        report["run"] = run
        report.update({k: run[k] for k in ("examples", "wall_s", "forward_s", "overhead_fraction", "examples_per_s")})
        report["groups"] = run["groups"]
        report["scaling"] = None
        if args.scaling:
            print(f"bench: the same with -n {args.workers} ...", file=sys.stderr, flush=True)
            report["scaling"] = scaling(args, extra, run)
        report["catalogue"] = None
        if args.catalogue is not None:
            print("bench: the broken-port catalogue, -x, each until flagged ...", file=sys.stderr, flush=True)
            report["catalogue"] = catalogue(Path(args.catalogue), args.profile, args.seed, log=sys.stderr)
        table(report)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return 0
    except BenchError as exc:
        if created:
            with contextlib.suppress(OSError):
                os.remove(args.json)
        print(f"lstm-conformance bench: error: {exc}", file=sys.stderr)
        return 2


_NOTHING = "lstm_conformance_bench_selects_no_test"


def speedup_ceiling(plain_s: float, fixed_plain_s: float, fixed_workers_s: float, workers: int) -> float:
    """The speed-up of ``workers`` processes over a ``plain_s`` run if its tests' time split perfectly:
    each run's fixed cost (start-up and exit, measured by a run selecting no test) stays whole."""
    return plain_s / (fixed_workers_s + max(plain_s - fixed_plain_s, 0.0) / workers)


def scaling(args: argparse.Namespace, extra: list, serial: dict) -> dict:
    """The -n N run, against the plain (one-process) run; and what their fixed costs allow at most."""
    try:
        import xdist  # noqa: F401 - only whether pytest-xdist is installed
    except ImportError:
        return {"workers": args.workers, "error": "pytest-xdist is not installed"}
    run = run_suite(args.impl, args.profile, args.seed, workers=args.workers, extra=extra)
    fixed_plain = run_suite(args.impl, args.profile, args.seed, empty=True)["wall_s"]
    fixed_workers = run_suite(args.impl, args.profile, args.seed, workers=args.workers, empty=True)["wall_s"]
    return {"workers": args.workers, "baseline": "the plain run (one pytest process, no xdist)",
            "wall_s": run["wall_s"], "examples": run["examples"],
            "forward_s": run["forward_s"], "speedup": round(serial["wall_s"] / run["wall_s"], 3),
            "startup_s": run.get("startup_s"), "tests_wall_s": run["tests_wall_s"], "cpu_s": run["cpu_s"],
            "load_before": run["load_before"], "load_after": run["load_after"], "exit_code": run["exit_code"],
            "fixed_s": {"plain": fixed_plain, "workers": fixed_workers},
            "speedup_ceiling": round(speedup_ceiling(serial["wall_s"], fixed_plain, fixed_workers, args.workers), 3)}


def _standalone(argv: Optional[list[str]] = None) -> int:
    parser = OneLineParser(prog="python -m conformance.bench", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter, error_name="lstm-conformance bench")
    _add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_standalone())
