"""The conformance matrix: one row per feature or axis value, with its status and examples run.

:func:`run_suite` runs the pytest suite on one implementation and collects every test's result;
:func:`matrix` folds the results into rows; :func:`document` makes the report (``SCHEMA_VERSION``),
:func:`to_json` and :func:`to_markdown` write it; :func:`port_table` puts several reports side by side
(it reads every schema in ``READABLE_SCHEMAS``).  A report is the data a CI job or a port's README can
show without rerunning the suite.

The JSON schema, the statuses and the rows: ``docs/cli.md``, "The report JSON".
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = ["READABLE_SCHEMAS", "SCHEMA_VERSION", "STATUSES", "Collector", "Row", "TestResult", "matrix", "run_suite",
           "to_json", "to_markdown"]

SCHEMA_VERSION = 2
#: The report schemas ``lstm-conformance table`` reads.
READABLE_SCHEMAS = (1, 2)
STATUSES = ("passed", "failed", "unsupported", "expected failure", "not run")

#: Error tests are many (one per fault); the matrix folds each test function into one row.
_ERROR_ROWS = {
    "test_constructor_errors_match_torch": "errors: constructor arguments",
    "test_call_errors_match_torch": "errors: forward call",
    "test_packed_call_errors_match_torch": "errors: packed call",
    "test_packing_errors_match_torch": "errors: packing functions",
}
_OTHER_ROWS = {
    "test_second_call_gives_the_same_result": "repeated calls",
    "test_stress_matches_torch": "stress (large weights, long sequences)",
    "test_gradients_match_torch": "gradients",
    "test_gradients_accumulate_over_calls": "gradients accumulate in .grad",
    "test_double_backward_matches_torch": "double backward (Hessian-vector products)",
}


@dataclass
class TestResult:
    """One test's result, as the collector saw it."""

    test: str  # short id: test_conformance.py::test_matches_torch[batch_first]
    feature: str
    status: str
    examples: int = 0
    detail: str = ""
    failures: list[dict] = field(default_factory=list)  # {"summary", "reproducer"} per conformance failure


@dataclass(frozen=True)
class Row:
    name: str
    status: str  # the most telling of its tests' statuses: failed, expected failure, passed, ...
    examples: int
    tests: dict[str, int] = field(default_factory=dict)  # how many of its tests ended in each status

    def cell(self) -> str:
        """The status, with the counts where the row folds tests that ended differently."""
        if len(self.tests) <= 1:
            return self.status
        return ", ".join(f"{status} {self.tests[status]}" for status in STATUSES if status in self.tests)


def feature_of(test_id: str) -> str:
    """The matrix row of a test: its focus for value tests, a group for error tests."""
    name = test_id.partition("::")[2]
    function, _, param = name.partition("[")
    if function == "test_matches_torch":
        return param.rstrip("]")
    return _ERROR_ROWS.get(function) or _OTHER_ROWS.get(function) or function


def _status(report: Any) -> tuple[str, str]:
    if hasattr(report, "wasxfail"):
        return ("expected failure", report.wasxfail) if report.skipped else ("passed", "expected failure did not occur")
    if report.skipped:
        from .output import STATUS

        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        declared = [v for k, v in report.user_properties if k == STATUS]  # "unsupported", "expected failure"
        return (declared[-1] if declared else "not run"), reason.removeprefix("Skipped: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        return "failed", (crash.message if crash is not None else str(report.longrepr)).splitlines()[0]
    return "passed", ""


class Collector:
    """A pytest plugin object that records each test's result (works under pytest-xdist too)."""

    def __init__(self) -> None:
        self.results: dict[str, TestResult] = {}
        self.notes: dict[str, set[str]] = {}  # kind -> the distinct notes of that kind

    def pytest_runtest_logreport(self, report: Any) -> None:
        from .expected import short_id
        from .output import FAILURE, NOTE
        from .plugin import EXAMPLES

        if report.when == "call":
            for key, note in report.user_properties:
                if key == NOTE:
                    self.notes.setdefault(note["kind"], set()).add(json.dumps(note, sort_keys=True))
        if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
            return
        test = short_id(report.nodeid)
        status, detail = _status(report)
        examples = sum(v for k, v in report.user_properties if k == EXAMPLES)
        failures = [v for k, v in report.user_properties if k == FAILURE] if status == "failed" else []
        self.results[test] = TestResult(test, feature_of(test), status, int(examples), detail, failures)


def run_suite(implementation: str, pytest_args: list[str], collector: Collector) -> tuple[int, float]:
    """Run the conformance suite in this process; return (pytest's exit code, seconds)."""
    import pytest

    args = ["--pyargs", "conformance.suite", f"--lstm-impl={implementation}", "-p", "no:cacheprovider",
            "-W", "ignore::pytest.PytestAssertRewriteWarning", *pytest_args]
    started = time.perf_counter()
    code = pytest.main(args, plugins=[collector])
    return int(code), time.perf_counter() - started


def _fold(statuses: list[str]) -> str:
    for status in ("failed", "expected failure", "passed", "unsupported"):
        if status in statuses:
            return status
    return "not run"


def _order(feature: str) -> tuple[int, int]:
    from .strategies import FOCI

    known = [*FOCI, *_OTHER_ROWS.values(), *_ERROR_ROWS.values()]
    return (0, known.index(feature)) if feature in known else (1, 0)


def matrix(results: dict[str, TestResult]) -> list[Row]:
    """One row per feature, in the suite's order (focused value tests first, then errors)."""
    grouped: dict[str, list[TestResult]] = {}
    for result in results.values():
        grouped.setdefault(result.feature, []).append(result)
    rows = []
    for name in sorted(grouped, key=_order):
        statuses = [r.status for r in grouped[name]]
        counts = {status: statuses.count(status) for status in STATUSES if status in statuses}
        rows.append(Row(name, _fold(statuses), sum(r.examples for r in grouped[name]), counts))
    return rows


def failures(results: dict[str, TestResult]) -> list[dict]:
    out = []
    for result in results.values():
        if result.status != "failed":
            continue
        found = result.failures or [{"summary": result.detail, "reproducer": None}]
        out += [{"feature": result.feature, "test": result.test, **f} for f in found]
    return out


def document(implementation: str, candidate: Any, profile: str, results: dict[str, TestResult],
             seed: Optional[int] = None, duration_s: Optional[float] = None,
             notes: Optional[dict[str, int]] = None) -> dict:
    """The report as the JSON schema above describes it; ``seed`` None: no seed was given;
    ``notes``: how many distinct notes of each kind the run made."""
    import torch

    return {
        "schema": SCHEMA_VERSION,
        "implementation": implementation,
        "path": getattr(candidate, "path", ""),
        "kind": getattr(candidate, "kind", ""),
        "torch_version": torch.__version__,
        "profile": profile,
        "seed": seed,
        "duration_s": None if duration_s is None else round(duration_s, 2),
        "notes": dict(sorted((notes or {}).items())),
        "features": [asdict(row) for row in matrix(results)],
        "failures": failures(results),
        "tests": [{k: v for k, v in asdict(r).items() if k != "failures"} for r in results.values()],
    }


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2) + "\n"


def _profile(doc: dict) -> str:
    return doc["profile"] if "profile" in doc else doc["hypothesis_profile"]  # schema 1: hypothesis_profile


def to_markdown(doc: dict) -> str:
    seed = "no seed given" if doc["seed"] is None else f"seed {doc['seed']}"
    took = "" if doc["duration_s"] is None else f", {doc['duration_s']:.1f} s"
    lines = [f"# Conformance of `{doc['implementation']}` to torch.nn.LSTM", "",
             f"torch {doc['torch_version']}, profile `{doc['profile']}`, {seed}{took}, "
             f"{doc['kind']} `{doc['path']}`.", ""]
    if doc.get("notes"):
        counts = ", ".join(f"{kind} {count}" for kind, count in doc["notes"].items())
        lines += [f"Notes (information, not failures): {counts}.", ""]
    lines += ["| feature | status | examples |", "|---|---|---|"]
    lines += [f"| {row['name']} | {Row(**row).cell()} | {row['examples']} |" for row in doc["features"]]
    if doc["failures"]:
        lines += ["", "## Failures", ""]
        for failure in doc["failures"]:
            lines += [f"### {failure['feature']}: `{failure['test']}`", "", failure["summary"], ""]
            if failure["reproducer"]:
                lines += ["```python", failure["reproducer"].rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


_MARKS = {"passed": "passed", "failed": "**failed**", "unsupported": "unsupported",
          "expected failure": "expected failure", "not run": "not run"}


def port_table(docs: list[dict]) -> str:
    """A Markdown table, feature x implementation, from several reports' JSON documents."""
    names = [doc["implementation"] for doc in docs]
    features: list[str] = []
    for doc in docs:
        features += [row["name"] for row in doc["features"] if row["name"] not in features]
    status = [{row["name"]: Row(**row).cell() for row in doc["features"]} for doc in docs]
    lines = ["| feature | " + " | ".join(f"`{name}`" for name in names) + " |",
             "|---|" + "---|" * len(names)]
    for feature in sorted(features, key=_order):
        cells = [_MARKS.get(s.get(feature, "not run"), s.get(feature, "not run")) for s in status]
        cells = [cell.replace("failed ", "**failed** ") for cell in cells]
        lines.append(f"| {feature} | " + " | ".join(cells) + " |")
    versions = sorted({doc["torch_version"] for doc in docs})
    profiles = sorted({_profile(doc) for doc in docs})
    lines += ["", f"torch {', '.join(versions)}; hypothesis profile {', '.join(profiles)}; "
                  "made by `lstm-conformance table` from `lstm-conformance report --json` files."]
    return "\n".join(lines) + "\n"


def check_writable(path: Optional[str], option: str = "") -> Optional[str]:
    """A one-line reason why ``path`` (given as ``option``, e.g. ``--json``) cannot be written, or None."""
    if path is None:
        return None
    target, named = Path(path), f"{option} {path}" if option else path
    if target.is_dir():
        return f"cannot write {named}: it is a folder"
    if not target.parent.is_dir():
        return f"cannot write {named}: folder {target.parent} does not exist"
    try:
        with open(target, "a"):
            pass
    except OSError as exc:
        return f"cannot write {named}: {exc.strerror}"
    return None
