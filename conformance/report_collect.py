"""Running the conformance suite in this process and collecting each test's result for the report.

:func:`run_suite` runs pytest on the suite with a :class:`Collector`, which turns each test's pytest
report into a :class:`~conformance.report.TestResult` (its status, examples run, conformance failures)
and gathers the run's notes.  :mod:`conformance.report` folds the results into the matrix.  What the
CLI runs: ``docs/cli.md``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .expected import short_id
from .matrix_rows import row_of
from .output import FAILURE, NOTE, STATUS
from .plugin import EXAMPLES
from .report import TestResult

__all__ = ["Collector", "run_suite"]


def _status(report: Any) -> tuple[str, str]:
    """A test's status in the report and the detail that goes with it, from its pytest report."""
    if hasattr(report, "wasxfail"):
        return ("expected failure", report.wasxfail) if report.skipped else ("passed", "expected failure did not occur")
    if report.skipped:
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
        self.results[test] = TestResult(test, row_of(test), status, int(examples), detail, failures)


def run_suite(implementation: str, pytest_args: list[str], collector: Collector) -> tuple[int, float]:
    """Run the conformance suite in this process; return (pytest's exit code, seconds)."""
    args = ["--pyargs", "conformance.suite", f"--lstm-impl={implementation}", "-p", "no:cacheprovider",
            "-W", "ignore::pytest.PytestAssertRewriteWarning", *pytest_args]
    started = time.perf_counter()
    code = pytest.main(args, plugins=[collector])
    return int(code), time.perf_counter() - started
