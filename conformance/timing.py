"""Where a run's time goes: the forward calls (the work) against everything else (the overhead).

Off unless the environment variable ``LSTM_CONFORMANCE_TIMINGS`` names a folder; then

* :func:`timed` records how long each wrapped forward call took (``reference``: torch's module
  call, ``oracle``: the float64 evaluation, ``candidate``: the implementation's call).  Every
  process (the pytest process, each xdist worker, each conformance worker process and the forked
  children of those) appends its records to a file of its own in that folder, one write per record,
  so nothing is lost when a worker is killed or a forked child leaves with ``os._exit``.
* loaded as a pytest plugin (``pytest -p conformance.timing``), it records each test's start and end,
  how many hypothesis examples it ran, and when the first failure was seen.

:mod:`conformance.bench` reads the folder and attributes each forward record to the test that was
running in the pytest process that owns the record's process (its conformance worker's records
carry the pytest process's id, inherited through ``LSTM_CONFORMANCE_TIMINGS_OWNER``).

With the variable unset, :func:`timed` returns one shared do-nothing context manager: the cost is a
function call, and no hook below does anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Iterator, Optional

__all__ = ["ENV_VAR", "OWNER_VAR", "ENABLED", "timed", "record", "LABELS", "PROTOCOL"]

ENV_VAR = "LSTM_CONFORMANCE_TIMINGS"
OWNER_VAR = "LSTM_CONFORMANCE_TIMINGS_OWNER"
#: What :func:`timed` wraps: torch's call, the float64 oracle's call, the candidate's call.
LABELS = ("reference", "oracle", "candidate")
#: A process port's requests, less the time the port says it spent in its own code: the process
#: protocol's cost (encoding, pipes, decoding), part of the candidate's calls and its construction,
#: recorded beside them (not a forward call of its own).
PROTOCOL = "protocol"

_DIR = os.environ.get(ENV_VAR) or ""
ENABLED = bool(_DIR)
_NULL = contextlib.nullcontext()


class _Sink:
    """This process's record file, reopened after a fork (each process writes its own file)."""

    def __init__(self) -> None:
        self.pid = -1
        self.fd = -1

    def write(self, kind: str, line: str) -> None:
        pid = os.getpid()
        if pid != self.pid:  # first record, or a forked child writing through its parent's sink
            owner = os.environ.get(OWNER_VAR) or str(pid)
            path = os.path.join(_DIR, f"{kind}-{owner}-{pid}.tsv")
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self.pid = pid
        os.write(self.fd, line.encode())


_FORWARD = _Sink()


@contextlib.contextmanager
def _timed(label: str) -> Iterator[None]:
    started_at = time.time()
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        _FORWARD.write("forward", f"{label}\t{started_at:.6f}\t{elapsed:.9f}\n")


def timed(label: str) -> Any:
    """A context manager timing one forward call under ``label`` (a no-op unless timings are on)."""
    return _timed(label) if ENABLED else _NULL


def record(label: str, started_at: float, elapsed: float) -> None:
    """Record a forward call timed elsewhere (``started_at``: ``time.time()``, ``elapsed``: seconds)."""
    if ENABLED:
        _FORWARD.write("forward", f"{label}\t{started_at:.6f}\t{elapsed:.9f}\n")


# ----------------------------------------------------------------------------- the pytest side
_TESTS = _Sink()


def _event(payload: dict) -> None:
    _TESTS.write("tests", json.dumps(payload) + "\n")


class _Recorder:
    """Each test's interval, example count and outcome; the first failure's time."""

    def __init__(self) -> None:
        self.current: Optional[dict] = None
        self.failed_seen = False

    # hypothesis' documented extension point: ``test.hypothesis.inner_test`` runs one example
    def _count_examples(self, item: Any) -> None:
        handle = getattr(getattr(item, "obj", None), "hypothesis", None)
        inner = getattr(handle, "inner_test", None)
        if handle is None or inner is None or getattr(inner, "_lstm_conformance_counted", False):
            return
        recorder = self

        def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                result = inner(*args, **kwargs)
            except BaseException as exc:
                recorder._example(exc)
                raise
            recorder._example(None)
            return result

        counted._lstm_conformance_counted = True  # type: ignore[attr-defined]  # a mark read back above
        handle.inner_test = counted

    def _example(self, exc: Optional[BaseException]) -> None:
        import pytest

        test = self.current
        if test is None:
            return
        if exc is not None and isinstance(exc, pytest.skip.Exception):
            return  # a test that skips itself ran no example
        test["examples"] += 1
        if exc is not None and isinstance(exc, AssertionError) and test.get("first_failing_example") is None:
            test["first_failing_example"] = time.time()

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> Iterator[None]:
        self._count_examples(item)
        self.current = {"event": "test", "nodeid": item.nodeid, "pid": os.getpid(), "start": time.time(),
                        "examples": 0, "outcome": "passed"}
        try:
            yield
        finally:
            test, self.current = self.current, None
            test["end"] = time.time()
            _event(test)

    def pytest_runtest_logreport(self, report: Any) -> None:
        if self.current is None or report.nodeid != self.current["nodeid"]:
            return
        if report.failed:
            self.current["outcome"] = "failed"
            if not self.failed_seen:
                self.failed_seen = True
                _event({"event": "first_failure", "nodeid": report.nodeid, "pid": os.getpid(), "time": time.time()})
        elif report.skipped and self.current["outcome"] == "passed":
            self.current["outcome"] = "skipped"


def pytest_configure(config: Any) -> None:
    if not ENABLED:
        return
    # the conformance worker processes this pytest process starts inherit it: their records are ours
    os.environ[OWNER_VAR] = str(os.getpid())
    _event({"event": "session", "pid": os.getpid(), "start": time.time(),
            "xdist_worker": os.environ.get("PYTEST_XDIST_WORKER", "")})
    import pytest

    # a hook wrapper around each test; marked here so that the worker processes never import pytest
    pytest.hookimpl(hookwrapper=True)(_Recorder.pytest_runtest_protocol)
    config.pluginmanager.register(_Recorder(), "lstm-conformance-timing")
