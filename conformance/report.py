"""The conformance report's data: one row per feature or axis value, with its status and examples run.

:func:`matrix` folds a run's :class:`TestResult` s (collected by :mod:`conformance.report_collect`)
into the rows :mod:`conformance.matrix_rows` names; :func:`document` makes the report
(``SCHEMA_VERSION``), which :mod:`conformance.report_render` writes as JSON or Markdown, or puts
beside other reports (it reads every schema in ``READABLE_SCHEMAS``).  A report is the data a CI job
or a port's README can show without rerunning the suite.

The JSON schema, the statuses and the rows: ``docs/cli.md``, "The report JSON".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .matrix_rows import order

__all__ = ["READABLE_SCHEMAS", "SCHEMA_VERSION", "STATUSES", "Row", "TestResult", "document", "failures", "matrix"]

SCHEMA_VERSION = 2
#: The report schemas ``lstm-conformance table`` reads.
READABLE_SCHEMAS = (1, 2)
STATUSES = ("passed", "failed", "unsupported", "expected failure", "not run")


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


def _fold(statuses: list[str]) -> str:
    for status in ("failed", "expected failure", "passed", "unsupported"):
        if status in statuses:
            return status
    return "not run"


def matrix(results: dict[str, TestResult]) -> list[Row]:
    """One row per feature, in the suite's order (focused value tests first, then errors)."""
    grouped: dict[str, list[TestResult]] = {}
    for result in results.values():
        grouped.setdefault(result.feature, []).append(result)
    rows = []
    for name in sorted(grouped, key=order):
        statuses = [r.status for r in grouped[name]]
        counts = {status: statuses.count(status) for status in STATUSES if status in statuses}
        rows.append(Row(name, _fold(statuses), sum(r.examples for r in grouped[name]), counts))
    return rows


def failures(results: dict[str, TestResult]) -> list[dict]:
    """Every conformance failure of the run, with its feature and test."""
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
    import torch  # only for its version: the CLI's other commands start without torch

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
