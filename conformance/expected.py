"""Expected failures: a port's known divergences, recorded without hiding new ones.

:func:`load` reads a file of test-id prefixes, each with its reason and optionally a ``when``
condition on the case's properties (:class:`ExpectedFailure`); :func:`file_for` finds the file a port
declares; the plugin marks matching tests xfail, so a known divergence passes the run and any other
still fails it.

The file format, the conditions and what a run does with them: ``docs/expected-failures.md``.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from .arrays import LSTMConfig
from .case import Call

__all__ = ["ExpectedFailure", "ExpectedFailuresError", "load", "file_for", "short_id"]


class ExpectedFailuresError(Exception):
    """The file is missing or malformed; the message is one line."""


@dataclass(frozen=True)
class ExpectedFailure:
    prefix: str
    reason: str
    where: str  # file:line, for warnings
    when: tuple[tuple[str, str, Any], ...] = ()  # (property, operator, value); empty: every failure

    def covers(self, case: Any) -> bool:
        """Does this entry expect a failure of ``case`` (a Case)?"""
        config, call = getattr(case, "config", None), getattr(case, "call", None)
        if config is None or call is None:
            return False
        for key, op, value in self.when:
            have: Any = getattr(config, key) if hasattr(config, key) else getattr(call, key, _MISSING)
            try:
                if have is _MISSING or not _OPERATORS[op](have, value):
                    return False
            except TypeError:  # None < 2, say: the property does not apply
                return False
        return True


_OPERATORS = {"=": operator.eq, "==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le,
              ">": operator.gt, "<": operator.lt}
_MISSING = object()


def _properties() -> set[str]:
    return ({f.name for f in fields(LSTMConfig)} | {f.name for f in fields(Call)} |
            {name for name in dir(Call) if isinstance(getattr(Call, name), property)})


def _parse_when(text: str, where: str) -> tuple[tuple[str, str, Any], ...]:
    import ast

    known = _properties()
    conditions = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\w+)\s*(==|!=|>=|<=|=|>|<)\s*(\S.*?)\s*", item)
        if not match or match.group(1) not in known:
            raise ExpectedFailuresError(f"{where}: 'when' takes conditions such as dtype=float64 or num_layers>=2 "
                                        f"on {', '.join(sorted(known))}; got {item.strip()!r}")
        key, op, raw = match.groups()
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        conditions.append((key, op, value))
    return tuple(conditions)


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
        prefix, has_when, condition = prefix.partition(" when ")
        when = _parse_when(condition, f"{path}:{number}") if has_when else ()
        entries.append(ExpectedFailure(prefix.strip(), reason.strip(), f"{path}:{number}", when))
    return entries


def file_for(target: Any) -> Optional[Path]:
    """The expected-failures file a port declares: ``lstm_conformance_expected_failures``, relative to the
    port's module."""
    import sys

    name = getattr(target, "lstm_conformance_expected_failures", None)
    if not name or not isinstance(name, str):
        return None
    module = sys.modules.get(getattr(target, "__module__", ""), None)
    file = getattr(module, "__file__", None) if module is not None else None
    base = Path(file).parent if file else Path.cwd()
    return base / name


def short_id(nodeid: str) -> str:
    """``.../conformance/suite/test_conformance.py::test_x[y]`` -> ``test_conformance.py::test_x[y]``."""
    path, sep, rest = nodeid.partition("::")
    return f"{Path(path).name}{sep}{rest}"
