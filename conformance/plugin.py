"""The pytest plugin: options, hypothesis profiles, the resolved implementation, the header.

Registered through the ``pytest11`` entry point, so ``pytest --lstm-impl=...`` works from any
directory once the package is installed.  The conformance tests themselves live in
:mod:`conformance.suite`.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from . import expected, reproduce
from .candidates import Candidate
from .checks import Runner
from .verdict import ConformanceFailure
from . import forkserver, isolation
from .isolation import DEFAULT_TIMEOUT
from .registry import ENV_VAR, ResolutionError, resolve

# no "explain" phase: its "lines always and only run by failing test cases" point into the suite, not the port
_COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow],
               phases=[phase for phase in Phase if phase is not Phase.explain])
settings.register_profile("dev", max_examples=8, **_COMMON)
settings.register_profile("ci", max_examples=30, **_COMMON)
settings.register_profile("thorough", max_examples=300, **_COMMON)

_CANDIDATE = pytest.StashKey[Candidate]()
_EXPECTED = pytest.StashKey[tuple]()
_PROFILE = pytest.StashKey[str]()
_WHEN = pytest.StashKey[list]()  # expected-failure entries with case properties, per test
NOTE = "lstm-conformance-note"
EXAMPLES = "lstm-conformance-examples"
FAILURE = "lstm-conformance-failure"


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("lstm-conformance", "LSTM conformance against torch.nn.LSTM")
    group.addoption("--lstm-impl", default=None, metavar="IMPL",
                    help=f"implementation to check: a registered name (see `lstm-conformance list`) or an "
                         f"import path package.module:Class. Default: ${ENV_VAR}, else the bundled 'numpy'.")
    group.addoption("--lstm-stress", action="store_true", default=False,
                    help="also run the stress tier (large weights, long sequences)")
    group.addoption("--lstm-isolation", choices=["process", "inline"], default="process",
                    help="run each case in a worker process, so a crashing or hanging port fails that case "
                         "and the run goes on (default), or inline in the test process (faster to debug; "
                         "invalid calls are always isolated)")
    group.addoption("--lstm-expected-failures", default=None, metavar="FILE",
                    help="file of test-id prefixes with reasons (default: the file the implementation declares)")
    group.addoption("--lstm-skip-expected-failures", action="store_true", default=False,
                    help="skip expected failures instead of running them as xfail (faster)")
    group.addoption("--lstm-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                    help=f"per-case time limit for isolated cases (default {DEFAULT_TIMEOUT:g})")
    group.addoption("--lstm-max-examples", type=int, default=None, metavar="N",
                    help="examples per test, overriding the hypothesis profile's number")
    group.addoption("--lstm-reproducers", default=None, metavar="DIR",
                    help="also save each failure's reproducer script into DIR (each failure carries it anyway)")


@pytest.hookimpl(trylast=True)  # after hypothesis' own plugin has loaded --hypothesis-profile
def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "stress: stress tier, run only with --lstm-stress")
    profile = config.getoption("hypothesis_profile", None)
    if not profile:
        profile = "ci" if os.environ.get("CI") else "dev"
        settings.load_profile(profile)
    changes: dict[str, Any] = {}
    if config.getoption("hypothesis_seed", None) is not None and settings.default.derandomize:
        changes["derandomize"] = False  # hypothesis derandomizes when CI is set: the user's seed must count
    if config.getoption("lstm_max_examples"):
        changes["max_examples"] = config.getoption("lstm_max_examples")
    if changes:
        settings.register_profile(f"{profile}-as-asked", parent=settings.default, **changes)
        settings.load_profile(f"{profile}-as-asked")
    config.stash[_PROFILE] = profile
    config.pluginmanager.register(_Notes(), "lstm-conformance-notes")
    if config.getoption("lstm_isolation") == "process":
        if _starts_the_worker_server(config):
            # issue 6 (speed): one process imports torch for every worker of the run, while this one starts
            forkserver.start()
        if _runs_suite_here(config):
            isolation.prestart()
    if not _is_xdist_controller(config):  # issue 6: the controller runs no test; importing torch would delay its workers
        import torch

        # One intra-op thread: the calls are small, two threads on two cores are slower and erratic
        # (OpenMP oversubscription), and xdist workers must not fight over the cores.
        torch.set_num_threads(1)
    spec = config.getoption("lstm_impl")
    try:
        candidate = config.stash[_CANDIDATE] = resolve(spec, origin="--lstm-impl" if spec else None)
        given = config.getoption("lstm_expected_failures")
        path = Path(given) if given else expected.file_for(candidate.target)
        config.stash[_EXPECTED] = (str(path), expected.load(path)) if path else ("", [])
    except (ResolutionError, expected.ExpectedFailuresError) as exc:
        raise pytest.UsageError(f"lstm-conformance: {exc}") from None
    if _suite_selected(config):
        # issue 6 (speed): torch, pytest and the port are loaded: ~10^5 objects that live as long as the
        # run.  Frozen, each full collection during the run and the last one at exit skip them: measured
        # 0.5 s less per run, 0.35 s less at the exit of each process (plain and every xdist worker).
        # Cyclic garbage among them is not collected afterwards: a process embedding pytest.main() keeps it.
        gc.freeze()


def _is_xdist_controller(config: Any) -> bool:
    return getattr(config, "workerinput", None) is None and bool(config.getoption("numprocesses", None))


def _runs_suite_here(config: Any) -> bool:
    """Whether this process runs conformance tests: not an xdist controller, and the suite is collected."""
    if _is_xdist_controller(config):
        return False  # its workers run the tests, each with its own worker process
    if config.getoption("collectonly", False):
        return False
    return _suite_selected(config)


def _starts_the_worker_server(config: Any) -> bool:
    """A plain pytest process running the suite, or the xdist controller (its workers share the server)."""
    if getattr(config, "workerinput", None) is not None or config.getoption("collectonly", False):
        return False
    return _suite_selected(config)


def _suite_selected(config: Any) -> bool:
    """Whether the command line selects the conformance suite (or a folder holding it)."""
    suite = Path(__file__).resolve().parent / "suite"
    here = Path(config.invocation_params.dir)
    for arg in config.args:
        target = str(arg).split("::")[0]
        if config.getoption("pyargs", False) and target.split(".")[0] == "conformance":
            return True
        path = (here / target).resolve()
        if path == suite or suite in path.parents or path in suite.parents:
            return True
    return False


def pytest_report_header(config: Any) -> list[str]:
    candidate = config.stash.get(_CANDIDATE, None)
    if candidate is None:
        return []
    path, entries = config.stash.get(_EXPECTED, ("", []))
    known = [f"lstm-conformance: {len(entries)} expected failure(s) from {path}"] if entries else []
    return [f"lstm-conformance: checking {candidate.name} = {candidate.path} ({candidate.kind}), "
            f"from {candidate.origin}", *known,
            f"lstm-conformance: reference torch {_torch_version()}, hypothesis profile '{config.stash[_PROFILE]}'"]


def _torch_version() -> str:
    """torch's version, without importing torch where nothing else did (the xdist controller)."""
    if "torch" in sys.modules:
        return sys.modules["torch"].__version__
    from importlib import metadata

    return metadata.version("torch")


class _Notes:
    """Collects notes (information that is not a failure) and prints them after the run."""

    def __init__(self) -> None:
        self.notes: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call":
            for key, value in getattr(report, "user_properties", ()):
                if key == NOTE:
                    self.notes.setdefault(value, report.nodeid)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.notes:
            return
        terminalreporter.section("lstm-conformance notes (information, not failures)")
        by_kind: dict[str, list[str]] = {}
        for note in self.notes:
            kind, _, text = note.partition(":")
            by_kind.setdefault(kind, []).append(text.strip())
        for kind, texts in sorted(by_kind.items()):
            terminalreporter.write_line(f"{kind}: {len(texts)} case(s), e.g.")
            for text in texts[:3]:
                terminalreporter.write_line(f"  {text}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: Any) -> Any:
    """Count the examples a test ran, and attach a reproducer to each conformance failure."""
    runner = getattr(item, "funcargs", {}).get("lstm_runner")
    if not isinstance(runner, Runner):
        return (yield)
    before = runner.calls
    runner.expected, runner.expected_seen = item.stash.get(_WHEN, []), []
    try:
        result = yield
    except BaseException as exc:
        candidate = item.config.stash.get(_CANDIDATE, None)
        for failure in _conformance_failures(exc) if candidate is not None else []:
            _attach_reproducer(item, candidate, failure)
        raise
    finally:
        item.user_properties.append((EXAMPLES, runner.calls - before))
        runner.expected = []
    seen, ran = runner.expected_seen, runner.calls - before
    if seen and len(seen) >= ran:  # every example failed, each as an entry with `when` expects
        pytest.xfail(f"expected failure: {seen[0]} ({len(seen)} example(s))")
    if seen:  # the feature works; some examples hit a divergence recorded elsewhere
        item.user_properties.append((NOTE, f"expected failure: {seen[0]} ({len(seen)} of {ran} examples)"))
    return result


def _conformance_failures(exc: BaseException) -> list[ConformanceFailure]:
    if isinstance(exc, ConformanceFailure):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):  # hypothesis reports several distinct bugs as a group
        return [f for inner in exc.exceptions for f in _conformance_failures(inner)]
    return []


def _attach_reproducer(item: Any, candidate: Candidate, failure: ConformanceFailure) -> None:
    test_id = expected.short_id(item.nodeid)
    source = reproduce.script(candidate.name, failure, test_id, repeat=failure.repeat)
    saved = ""
    folder = item.config.getoption("lstm_reproducers")
    if folder:
        path = Path(folder) / (re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id.removesuffix("]")) + ".py")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
            saved = f" (saved as {path})"
        except OSError as exc:
            saved = f" (could not be saved: {exc.strerror} for {path})"
    failure.add_note(f"\nReproducer{saved}: save it as repro.py and run `python repro.py` from this folder; "
                     f"it exits 1 while this divergence persists and 0 once it is fixed.\n\n{source}")
    item.user_properties.append((FAILURE, {"summary": failure.summary(), "reproducer": source}))


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselect, so entries for deselected tests are not "stale"
def pytest_collection_modifyitems(config: Any, items: list) -> None:
    if not config.getoption("lstm_stress"):
        skip = pytest.mark.skip(reason="stress tier: run with --lstm-stress")
        for item in items:
            if "stress" in item.keywords:
                item.add_marker(skip)
    _mark_expected_failures(config, items)


def _mark_expected_failures(config: Any, items: list) -> None:
    """xfail (or skip) the tests an expected-failures file lists; warn about entries matching nothing."""
    path, entries = config.stash.get(_EXPECTED, ("", []))
    if not entries:
        return
    skip = config.getoption("lstm_skip_expected_failures")
    suite_items = [item for item in items if "lstm_candidate" in getattr(item, "fixturenames", ())]
    for entry in entries:
        matched = [item for item in suite_items if expected.short_id(item.nodeid).startswith(entry.prefix)]
        for item in matched:
            if entry.when:  # only the examples with those properties are expected to fail
                item.stash.setdefault(_WHEN, []).append(entry)
                continue
            reason = f"expected failure: {entry.reason}"
            item.add_marker(pytest.mark.skip(reason=reason) if skip else pytest.mark.xfail(reason=reason, strict=False))
        if not matched and suite_items:
            warnings.warn(pytest.PytestWarning(f"lstm-conformance: expected failure {entry.prefix!r} ({entry.where}) "
                                               "matches no collected test"))


@pytest.fixture(scope="session")
def lstm_candidate(request: Any) -> Candidate:
    """The implementation under test, as resolved from --lstm-impl / $LSTM_CONFORMANCE_IMPL."""
    return request.config.stash[_CANDIDATE]


@pytest.fixture(scope="session")
def lstm_runner(request: Any, lstm_candidate: Candidate) -> Runner:
    """Runs cases on the implementation under test, isolated as --lstm-isolation says."""
    config = request.config
    return Runner(lstm_candidate, config.getoption("lstm_isolation") == "process", config.getoption("lstm_timeout"))
