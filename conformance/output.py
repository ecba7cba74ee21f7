"""What a conformance run shows in pytest: one report per root cause, and notes counted by kind.

Two halves, because under pytest-xdist the tests run in worker processes and the terminal is in
the controller:

* where a test runs, a conformance failure becomes data (:meth:`ConformanceFailure.to_data`,
  plus the test's id and a reproducer script) in the report's ``user_properties``, and the
  report's text becomes the suite's own rendering (no traceback into the suite, no advice about
  decorating a test function the user does not own);
* where reports are shown, failures with the same root cause (the same likely bug, or the same
  first problem) are grouped: the first is shown in full, the others in one line each that points
  to it, and a closing section lists every root cause with its tests.  Notes (information that is
  not a failure) are counted per kind; ``-v`` lists examples.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from . import render, reproduce
from .expected import short_id
from .verdict import ConformanceFailure

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # hypothesis' and pytest's dependency before Python 3.11

__all__ = ["FAILURE", "NOTE", "STATUS", "WARNING", "RunOutput", "conformance_failures", "skip_unsupported"]

FAILURE = "lstm-conformance-failure"  # user_properties key: a failure's data (one entry per failure)
NOTE = "lstm-conformance-note"  # user_properties key: a note's data
STATUS = "lstm-conformance-status"  # user_properties key: why a test did not run ("unsupported", ...)
WARNING = "lstm-conformance-warning"  # user_properties key: a one-line warning about the run (the shared database)
EXAMPLES_SHOWN = 3


def conformance_failures(exc: BaseException) -> list[ConformanceFailure]:
    """The conformance failures an exception carries (hypothesis groups distinct ones)."""
    if isinstance(exc, ConformanceFailure):
        return [exc]
    if _is_flaky(exc):
        return []  # hypothesis' own report says why the test is unreliable; keep it whole
    if isinstance(exc, BaseExceptionGroup):
        return [f for inner in exc.exceptions for f in conformance_failures(inner)]
    return []


def skip_unsupported(node: Any, candidate_name: str, missing: list[str]) -> None:
    """Skip a test whose features the candidate declares it lacks, recording the status as data."""
    node.user_properties.append((STATUS, "unsupported"))
    pytest.skip(f"{candidate_name} declares no support for {', '.join(missing)}")


def _is_flaky(exc: BaseException) -> bool:
    try:
        from hypothesis.errors import Flaky
    except ImportError:  # pragma: no cover - every supported hypothesis has it
        return False
    return isinstance(exc, Flaky)


def _properties(report: Any, key: str) -> list[Any]:
    return [entry[1] for entry in getattr(report, "user_properties", ()) if entry[0] == key]


@dataclass(frozen=True)
class _Crash:
    """What pytest's one-line summaries read from a report (``reprcrash``)."""

    message: str
    path: str = ""
    lineno: int = 0

    def __str__(self) -> str:
        return self.message


@dataclass
class _Group:
    """Failing tests with one root cause; the first one's data is shown in full."""

    key: str
    first: dict
    tests: list[str] = field(default_factory=list)


def _brief_name(test: str, first: str) -> str:
    """``[param]`` for a test of the same function as ``first``, else the function and param."""
    name, leader = test.partition("::")[2] or test, first.partition("::")[2] or first
    function, bracket, param = name.partition("[")
    if bracket and function == leader.partition("[")[0]:
        return f"[{param}"
    return name


class _FirstOfGroup:
    """The report text of a group's first failure; the list of the others is read when printed."""

    def __init__(self, text: str, data: dict, group: Optional[_Group]) -> None:
        """``group``: the failure's group, whose other tests are listed; None lists none."""
        self.text, self.group = text, group
        self.reprcrash = _Crash(render.headline(data))

    def _others(self) -> str:
        if self.group is None or len(self.group.tests) < 2:
            return ""
        others = self.group.tests[1:]
        names = [_brief_name(t, self.group.tests[0]) for t in others]
        count = f"{len(others)} more test{'s' if len(others) > 1 else ''} fail{'' if len(others) > 1 else 's'}"
        return "\n\n" + render.test_list(names, prefix=f"{count} the same way: ")

    def __str__(self) -> str:
        return self.text + self._others()

    def toterminal(self, writer: Any) -> None:
        for line in str(self).splitlines():
            writer.line(line)


class _SameAs:
    """The report text of a failure whose root cause was shown in full for another test."""

    def __init__(self, data: dict, group: _Group) -> None:
        first = group.tests[0].partition("::")[2]
        self.text = (f"fails the same way as {first} (shown in full above): {render.headline(data)}; "
                     f"its case: {data['case']}")
        self.reprcrash = _Crash(f"same as {first}: {render.headline(data)}")

    def __str__(self) -> str:
        return self.text

    def toterminal(self, writer: Any) -> None:
        writer.line(self.text)


class RunOutput:
    """The pytest plugin object that turns conformance failures and notes into what a run shows.

    Registered only in sessions that run the conformance suite; it leaves every other test's
    report as pytest made it.
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.groups: dict[str, _Group] = {}
        self.notes: dict[str, dict[tuple, dict]] = {}  # kind -> distinct notes (first seen kept)
        self.all_failed: Optional[list] = None  # every failed report, while the followers are hidden
        self.pending: list[str] = []  # warnings not yet shown (or, in an xdist worker, not yet sent)
        self.shown: set[str] = set()

    def warn(self, message: str) -> None:
        """Show a one-line warning about the run: at start where given before the tests, else with the
        report of the test during which it was given (which carries it from an xdist worker)."""
        self.pending.append(message)

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionstart(self, session: Any) -> Any:
        result = yield  # the terminal's header first
        if not _in_xdist_worker(self.config):
            self._show(self.pending)
            self.pending = []
        return result

    def _show(self, messages: list[str]) -> None:
        """Each distinct warning once, where the terminal is (not in an xdist worker, which sends them)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if _in_xdist_worker(self.config):
            return
        for message in messages:
            if message not in self.shown and reporter is not None:
                reporter.write_line(message, yellow=True)
            self.shown.add(message)

    # ------------------------------------------------------------ where the test runs

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: Any, call: Any) -> Any:
        report = yield
        report.user_properties.extend((WARNING, message) for message in self.pending)
        self.pending = []
        if report.when != "call" or not report.failed or call.excinfo is None:
            return report
        failures = conformance_failures(call.excinfo.value)
        if not failures:
            return report
        test = short_id(item.nodeid)
        datas = [self._failure_data(test, failure) for failure in failures]
        for data in datas:
            report.user_properties.append((FAILURE, data))
        report.longrepr = _failure_text(datas)
        return report

    def _failure_data(self, test: str, failure: ConformanceFailure) -> dict:
        data = failure.to_data()
        data["test"] = test
        data["summary"] = render.summary(data)
        data["reproducer"] = reproduce.script(failure.candidate_name, failure, test, repeat=failure.repeat)
        data["reproducer_saved"] = self._save(test, data["reproducer"])
        data["reproducer_command"] = reproduce.command(failure.candidate_name, failure.case, repeat=failure.repeat,
                                                       check=getattr(failure, "check", "forward"))
        return data

    def _save(self, test: str, source: str) -> str:
        """Save a reproducer into --lstm-reproducers DIR; where it went, or why it could not."""
        folder = self.config.getoption("lstm_reproducers", None)
        if not folder:
            return ""
        path = Path(folder) / (re.sub(r"[^A-Za-z0-9_.-]+", "_", test.removesuffix("]")) + ".py")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        except OSError as exc:
            return f"could not be saved: {exc.strerror} for {path}"
        return f"saved as {path}"

    # ------------------------------------------------------------ where reports are shown

    def pytest_runtest_logreport(self, report: Any) -> None:
        self._show(_properties(report, WARNING))
        if report.when != "call":
            return
        for note in _properties(report, NOTE):
            self._add_note(note)
        datas = _properties(report, FAILURE)
        if not report.failed or not datas:
            return
        first = datas[0]
        group = self.groups.setdefault(first["root_cause"], _Group(first["root_cause"], first))
        group.tests.append(first["test"])
        if len(group.tests) == 1:
            report.longrepr = _FirstOfGroup(str(report.longrepr), first, group)
        elif self._ungrouped():
            report.longrepr = _FirstOfGroup(str(report.longrepr), first, None)
        else:
            report.longrepr = _SameAs(first, group)

    def _ungrouped(self) -> bool:
        return bool(self.config.getoption("lstm_all_reports", False))

    def _add_note(self, note: dict) -> None:
        key = tuple(sorted((k, str(v)) for k, v in note.items()))
        self.notes.setdefault(note.get("kind", "note"), {}).setdefault(key, note)

    def pytest_sessionfinish(self, session: Any) -> None:
        """Hide the followers from pytest's FAILURES section, which is written before the plugins'
        summaries run: a follower is listed by name under its group's first report, and keeps its
        one ``FAILED`` line in the short summary, written after them (see pytest_terminal_summary)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self._ungrouped() or "failed" not in reporter.stats:
            return
        self.all_failed = list(reporter.stats["failed"])
        reporter.stats["failed"] = [r for r in self.all_failed if not isinstance(getattr(r, "longrepr", None), _SameAs)]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.all_failed is not None:  # every failure back for the short summary and the counts
            terminalreporter.stats["failed"] = self.all_failed
        self._summarise_failures(terminalreporter)
        self._summarise_notes(terminalreporter)

    def _summarise_failures(self, writer: Any) -> None:
        if not self.groups:
            return
        tests = sum(len(group.tests) for group in self.groups.values())
        causes = len(self.groups)
        writer.section(f"lstm-conformance: {tests} failing test{'s' if tests != 1 else ''}, "
                       f"{causes} root cause{'s' if causes != 1 else ''}", red=True)
        for group in sorted(self.groups.values(), key=lambda g: -len(g.tests)):
            count = len(group.tests)
            more = f", and {count - 1} more failing the same way" if count > 1 else ""
            writer.write_line(f"- {render.headline(group.first)}: {group.tests[0].partition('::')[2]} in full{more}")

    def _summarise_notes(self, writer: Any) -> None:
        if not self.notes:
            return
        writer.section("lstm-conformance notes (information, not failures)")
        verbose = self.config.getoption("verbose", 0) > 0
        for kind, notes in sorted(self.notes.items()):
            calls: dict[str, int] = {}
            for note in notes.values():
                if note.get("call"):
                    calls[note["call"]] = calls.get(note["call"], 0) + 1
            by_call = ", ".join(f"{name} {count}" for name, count in sorted(calls.items()))
            writer.write_line(f"{kind}: {len(notes)}" + (f" ({by_call} calls)" if by_call else "")
                              + ("" if verbose else "; -v lists examples"))
            if verbose:
                for note in list(notes.values())[:EXAMPLES_SHOWN]:
                    writer.write_line(f"  {render.note(note)}")


def _in_xdist_worker(config: Any) -> bool:
    return getattr(config, "workerinput", None) is not None


def _failure_text(datas: list[dict]) -> str:
    """A test's report: its first failure in full, with its reproducer; others in this test in one line."""
    first = datas[0]
    saved = f"; {first['reproducer_saved']}" if first.get("reproducer_saved") else \
        "; --lstm-reproducers DIR saves it as a script"
    reproducer = (f"Reproducer, from this folder (exit 1 while this divergence persists, 0 once it is fixed, "
                  f"2 if it cannot run{saved}):\n\n    {first['reproducer_command']}")
    text = render.failure(first, first["test"].partition("::")[2], reproducer)
    others = [f"- {render.summary(data)}" for data in datas[1:]]
    if others:
        text += f"\n\nThis test also found {len(others)} other distinct failure(s):\n" + "\n".join(others)
    return text
