"""Expected failures: a port's known divergences, recorded without hiding new ones.

A file lists test-id prefixes, one per line, each with its reason after ``#``::

    # keras computes float64 models in float32 (keras-team/keras#23704)
    test_conformance.py::test_matches_torch[float64]   # float64 runs in float32: keras-team/keras#23704

Ids are matched from the test file name on (``test_conformance.py::...``), so the same file works
from the repository and from an installed package.  Matching tests are marked xfail (or skipped
with ``--lstm-skip-expected-failures``); an entry that matches no collected test is warned about.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = ["ExpectedFailure", "ExpectedFailuresError", "load", "file_for", "short_id"]


class ExpectedFailuresError(Exception):
    """The file is missing or malformed; the message is one line."""


@dataclass(frozen=True)
class ExpectedFailure:
    prefix: str
    reason: str
    where: str  # file:line, for warnings


def load(path: Path) -> list[ExpectedFailure]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ExpectedFailuresError(f"cannot read expected-failures file {path}: {exc.strerror}") from None
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        prefix, sep, reason = line.partition("#")
        if not sep or not reason.strip():
            raise ExpectedFailuresError(f"{path}:{number}: every entry needs a reason after '#': {line!r}")
        entries.append(ExpectedFailure(prefix.strip(), reason.strip(), f"{path}:{number}"))
    return entries


def file_for(target: Any) -> Optional[Path]:
    """The expected-failures file a port declares: ``expected_failures`` (adapters) or
    ``lstm_conformance_expected_failures`` (drop-ins), relative to the port's module."""
    import sys

    name = getattr(target, "expected_failures", None) or getattr(target, "lstm_conformance_expected_failures", None)
    if not name or not isinstance(name, str):
        return None
    module = sys.modules.get(getattr(target, "__module__", ""), None)
    base = Path(module.__file__).parent if module is not None and getattr(module, "__file__", None) else Path.cwd()
    return base / name


def short_id(nodeid: str) -> str:
    """``.../conformance/suite/test_conformance.py::test_x[y]`` -> ``test_conformance.py::test_x[y]``."""
    path, sep, rest = nodeid.partition("::")
    return f"{Path(path).name}{sep}{rest}"
