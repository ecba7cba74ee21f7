"""The pytest plugin: options, the suite's profiles, the resolved implementation, the header.

Registered through the ``pytest11`` entry point, so ``pytest --lstm-impl=...`` works from any
directory once the package is installed.  The conformance tests themselves live in
:mod:`conformance.suite`.

The entry point loads this module into every pytest session of the environment, so in a session
that neither selects the suite nor gives an ``--lstm-*`` option it only adds its options: no
hypothesis profile, marker, skip, torch import or implementation lookup.  Where the suite runs,
its profile becomes hypothesis settings on the suite's own test functions (never the session's
profile, which the user's own tests keep), and only the suite's tests are skipped as stress tier.
"""

from __future__ import annotations

import fnmatch
import gc
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import InvalidArgument

from . import database, expected, process_ports, service
from .candidates import Candidate
from .isolation import DEFAULT_TIMEOUT
from .output import NOTE, RunOutput
from .runner import Runner
from .verdict import Note
from .options import OptionError, positive_float, positive_int
from .registry import ENV_VAR, ResolutionError, resolve

#: The suite's profiles: examples per test.  Each is the hypothesis profile ``lstm-conformance-<name>``
#: (the session's hypothesis settings with these on top), applied to the suite's own tests only.
PROFILES: dict[str, int] = {"dev": 8, "ci": 30, "thorough": 300}
PROFILE_PREFIX = "lstm-conformance-"
# no "explain" phase: its "lines always and only run by failing test cases" point into the suite, not the port;
# no blob: its advice, to decorate the test with @reproduce_failure, is for a test the user does not own
_COMMON = dict(deadline=None, print_blob=False, suppress_health_check=[HealthCheck.too_slow],
               phases=[phase for phase in Phase if phase is not Phase.explain])
_SUITE = Path(__file__).resolve().parent / "suite"
_ISOLATION = ("process", "inline")
_OPTION_DEFAULTS = {"lstm_isolation": "process", "lstm_timeout": DEFAULT_TIMEOUT}  # the others: None or False
# The profiles this plugin registered under names given to --hypothesis-profile (see _let_hypothesis_load),
# by name: each session of a process registers its own, so that none keeps an earlier session's settings.
_ALIASES: dict[str, settings] = {}

_CANDIDATE = pytest.StashKey[Candidate]()
_DATABASE = pytest.StashKey[tuple]()  # the shared database's (Location, origin), where one is given
_SHARED = pytest.StashKey[database.Shared]()
_WORKER_DATABASE = "lstm_conformance_database"  # xdist workerinput key: the controller's shared database
_EXPECTED = pytest.StashKey[tuple]()
_PROFILE = pytest.StashKey[str]()  # the suite's profile, a key of PROFILES
_WHEN = pytest.StashKey[list]()  # expected-failure entries with case properties, per test
EXAMPLES = "lstm-conformance-examples"


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("lstm-conformance", "LSTM conformance against torch.nn.LSTM")
    group.addoption("--lstm-impl", default=None, metavar="IMPL",
                    help=f"implementation to check: a registered name (see `lstm-conformance list`) or an "
                         f"import path package.module:Class. Default: ${ENV_VAR}, else the bundled 'numpy'.")
    group.addoption("--lstm-stress", action="store_true", default=False,
                    help="also run the stress tier (large weights, long sequences)")
    group.addoption("--lstm-isolation", default="process", metavar="{process,inline}",
                    help="run each case in a worker process, so a crashing or hanging port fails that case "
                         "and the run goes on (default), or inline in the test process (faster to debug; "
                         "invalid calls are always isolated)")
    group.addoption("--lstm-expected-failures", default=None, metavar="FILE",
                    help="file of test-id prefixes with reasons (default: the file the implementation declares)")
    group.addoption("--lstm-skip-expected-failures", action="store_true", default=False,
                    help="skip expected failures instead of running them as xfail (faster)")
    group.addoption("--lstm-timeout", default=DEFAULT_TIMEOUT, metavar="SECONDS",
                    help=f"per-case time limit in seconds for isolated cases (default {DEFAULT_TIMEOUT:g}); a case "
                         "past it is retried once in a fresh worker with twice the limit before it fails as a "
                         "time-out")
    group.addoption("--lstm-profile", default=None, metavar="{" + ",".join(PROFILES) + "}",
                    help="the suite's profile: examples per test ("
                         + ", ".join(f"{name} {count}" for name, count in PROFILES.items()) + "), deadline off. "
                         "Default: --hypothesis-profile where it names one of these, else ci when $CI is "
                         "set, else dev. Applies to the suite's own tests only")
    group.addoption("--lstm-max-examples", default=None, metavar="N",
                    help="examples per test, overriding the profile's number")
    group.addoption("--lstm-all-reports", action="store_true", default=False,
                    help="show every failure in full, instead of the first of each root cause in full and the "
                         "others in one line each")
    group.addoption("--lstm-reproducers", default=None, metavar="DIR",
                    help="also save each failure's reproducer script into DIR (each failure carries it anyway)")
    group.addoption("--lstm-database", default=None, metavar="URL",
                    help="a shared example database for the suite's tests, beside the local one: a folder or "
                         f"redis://host:port/db (the redis extra). Failures found are saved there and replayed "
                         f"first by every run that reads it. Default: ${database.ENV_VAR}, else none")
    group.addoption("--lstm-database-read-only", action="store_true", default=False,
                    help="read the shared example database and write nothing to it (pull-request CI)")
    group.addoption("--lstm-validate-protocol", action="store_true", default=False,
                    help="for a process port: check every message, both ways, against the protocol's schema "
                         "(docs/process-protocol.schema.json)")


@pytest.hookimpl(tryfirst=True)  # before hypothesis' own plugin loads --hypothesis-profile
def pytest_configure(config: Any) -> None:
    if not _conformance_run(config):
        return
    _check_options(config)
    _tell_process_ports(config)
    config.addinivalue_line("markers", "stress: stress tier, run only with --lstm-stress")
    config.stash[_PROFILE] = _profile(config)
    _let_hypothesis_load(config.getoption("hypothesis_profile", None))
    output = RunOutput(config)
    config.pluginmanager.register(output, "lstm-conformance-output")
    if _DATABASE in config.stash:
        location = config.stash[_DATABASE][0]
        shared = config.stash[_SHARED] = database.Shared(location, config.getoption("lstm_database_read_only"),
                                                         output.warn)
        shared.check()  # at start: an unusable database is a warning now, not an error later
    if config.getoption("lstm_isolation") == "process":
        if _starts_the_worker_server(config):
            # one process imports torch for every worker of the run, while this one starts
            service.start_server()
        if _runs_suite_here(config):
            service.prestart()
    if not _is_xdist_controller(config):  # the controller runs no test; importing torch would delay its workers
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
        # torch, pytest and the port are loaded: ~10^5 objects that live as long as the run.  Frozen,
        # each full collection during the run and the last one at exit skip them.  Cyclic garbage among
        # them is not collected afterwards: a process embedding pytest.main() keeps it.
        gc.freeze()


def _conformance_run(config: Any) -> bool:
    """Whether this session is a conformance run: it selects the suite, or gives an ``--lstm-*`` option."""
    if _suite_selected(config):
        return True
    if any(str(arg).startswith("--lstm-") for arg in config.invocation_params.args):
        return True
    return any(value not in (None, False, _OPTION_DEFAULTS.get(name))
               for name, value in vars(config.option).items() if name.startswith("lstm_"))


def _check_options(config: Any) -> None:
    """Each option's value checked (and converted) once; a bad one is a one-line usage error."""
    option = config.option
    try:
        if option.lstm_impl is not None and not option.lstm_impl.strip():
            raise OptionError("--lstm-impl must name an implementation (a registered name or package.module:Class)")
        option.lstm_timeout = positive_float("--lstm-timeout", option.lstm_timeout)
        if option.lstm_max_examples is not None:
            option.lstm_max_examples = positive_int("--lstm-max-examples", option.lstm_max_examples)
        _choice("--lstm-isolation", option.lstm_isolation, _ISOLATION)
        if option.lstm_profile is not None:
            _choice("--lstm-profile", option.lstm_profile, PROFILES)
        folder = option.lstm_reproducers
        if folder is not None and (not folder.strip() or (Path(folder).exists() and not Path(folder).is_dir())):
            raise OptionError(f"--lstm-reproducers must be a folder (it is made if missing), got {folder!r}")
        _check_database(config)
    except OptionError as exc:
        raise pytest.UsageError(f"lstm-conformance: {exc}") from None


def _check_database(config: Any) -> None:
    """The shared database's location and origin, from --lstm-database, else the environment variable."""
    option = config.option
    url = option.lstm_database
    if url is None:  # an xdist worker, perhaps on another host: the controller's environment variable's value
        url = getattr(config, "workerinput", {}).get(_WORKER_DATABASE)
    found = database.given(url, "--lstm-database", option.lstm_database_read_only,
                           config.getoption("hypothesis_seed", None), "--hypothesis-seed")
    if found is not None:
        config.stash[_DATABASE] = found


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: each worker gets the controller's shared database, which an environment variable may have
    named (a worker on another host does not have the controller's environment)."""
    if _DATABASE in node.config.stash:
        node.workerinput[_WORKER_DATABASE] = node.config.stash[_DATABASE][0].url
def _tell_process_ports(config: Any) -> None:
    """The per-case limit and the validating mode, for a process port's sessions in every process of the
    run (the worker processes take this process's environment)."""
    os.environ[process_ports.TIMEOUT_ENV] = str(config.getoption("lstm_timeout"))
    if config.getoption("lstm_validate_protocol"):
        os.environ[process_ports.VALIDATE_ENV] = "1"


def _choice(option: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise OptionError(f"{option} must be one of {', '.join(choices)}, got {value!r}")


def _profile(config: Any) -> str:
    """The suite's profile: --lstm-profile; else --hypothesis-profile where it names one; else ci
    where $CI is set; else dev."""
    given = config.getoption("lstm_profile")
    if given:
        return given
    named = config.getoption("hypothesis_profile", None)
    if named in PROFILES:
        return named
    return "ci" if os.environ.get("CI") else "dev"


def _let_hypothesis_load(name: Any) -> None:
    """Let ``--hypothesis-profile=dev`` (or thorough) select the suite's profile without an error.

    Hypothesis' plugin loads that name as the session's profile, and hypothesis itself registers
    only ``default`` and ``ci``.  Where no one registered the name, it is registered here as the
    session's settings unchanged: it selects the suite's profile and leaves everything else as it was.
    A profile of that name the user registered is left alone."""
    if name not in PROFILES:
        return
    try:
        registered = settings.get_profile(name)
    except InvalidArgument:
        registered = None
    if registered is not None and registered is not _ALIASES.get(name):
        return  # hypothesis' own (ci) or the user's
    _ALIASES[name] = settings(settings.default)
    settings.register_profile(name, _ALIASES[name])


def _suite_settings(config: Any) -> settings:
    """The settings the suite's tests run with: the session's hypothesis settings as they are now
    (the user's profile, --hypothesis-verbosity, ...) with the suite's profile on top."""
    session = settings.default
    for name, examples in PROFILES.items():
        settings.register_profile(PROFILE_PREFIX + name, parent=session, max_examples=examples, **_COMMON)
    chosen = settings.get_profile(PROFILE_PREFIX + config.stash[_PROFILE])
    changes: dict[str, Any] = {}
    if config.getoption("hypothesis_seed", None) is not None and chosen.derandomize:
        changes["derandomize"] = False  # hypothesis' ci profile derandomizes: the user's seed must count
    if config.getoption("lstm_max_examples") is not None:
        changes["max_examples"] = config.getoption("lstm_max_examples")
    shared = config.stash.get(_SHARED, None)
    if shared is not None:  # beside the session's own database, which keeps this machine's failures
        changes["database"] = database.combined(chosen.database, shared)
        if not shared.read_only:
            # a run that writes to a shared database is a campaign: each run explores its own examples,
            # even under CI, whose hypothesis profile would have every run draw the same ones
            changes["derandomize"] = False
    return settings(chosen, **changes) if changes else chosen


def _examples_per_test(config: Any) -> int:
    return config.getoption("lstm_max_examples") or PROFILES[config.stash[_PROFILE]]


def _is_xdist_controller(config: Any) -> bool:
    """Whether this process hands the tests to xdist workers (-n, or --tx with --dist)."""
    distributed = config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))
    return getattr(config, "workerinput", None) is None and distributed


def _has_local_workers(config: Any) -> bool:
    """Whether some of the xdist workers run on this machine (popen), where the worker server serves them;
    a worker on another host (--tx socket= or ssh=) starts its own worker processes."""
    import execnet

    # a spec may be counted: --tx 3*popen
    specs = [spec.partition("*")[2] if spec.partition("*")[0].isdigit() else spec for spec in config.getoption("tx")]
    return any(execnet.XSpec(spec).popen for spec in specs)


def _runs_suite_here(config: Any) -> bool:
    """Whether this process runs conformance tests: not an xdist controller, and the suite is collected."""
    if _is_xdist_controller(config):
        return False  # its workers run the tests, each with its own worker process
    if config.getoption("collectonly", False):
        return False
    return _suite_selected(config)


def _starts_the_worker_server(config: Any) -> bool:
    """A plain pytest process running the suite, or the xdist controller of local workers (they share the
    server)."""
    if getattr(config, "workerinput", None) is not None or config.getoption("collectonly", False):
        return False
    if _is_xdist_controller(config) and not _has_local_workers(config):
        return False
    return _suite_selected(config)


def _suite_selected(config: Any) -> bool:
    """Whether the command line selects the conformance suite (or a folder pytest collects it from)."""
    here = Path(config.invocation_params.dir)
    for arg in config.args:
        target = str(arg).split("::")[0]
        if config.getoption("pyargs", False) and target.split(".")[0] == "conformance":
            return True
        path = (here / target).resolve()
        if path == _SUITE or _SUITE in path.parents or (path in _SUITE.parents and _recurses_into(config, path)):
            return True
    return False


def _recurses_into(config: Any, top: Path) -> bool:
    """Whether collecting ``top`` reaches the suite: no folder on the way is one pytest does not enter
    (``norecursedirs``, or a virtual environment, where an installed suite lives)."""
    patterns = config.getini("norecursedirs")
    in_venvs = config.getoption("collect_in_virtualenv", False)
    folder = top
    for part in _SUITE.relative_to(top).parts[:-1]:
        folder = folder / part
        if any(fnmatch.fnmatch(part, pattern) for pattern in patterns):
            return False
        if not in_venvs and (folder / "pyvenv.cfg").is_file():
            return False
    return True


def pytest_report_header(config: Any) -> list[str]:
    candidate = config.stash.get(_CANDIDATE, None)
    if candidate is None:
        return []
    path, entries = config.stash.get(_EXPECTED, ("", []))
    known = [f"lstm-conformance: {len(entries)} expected failure(s) from {path}"] if entries else []
    return [f"lstm-conformance: checking {candidate.name} = {candidate.path} ({candidate.kind}), "
            f"from {candidate.origin}", *known,
            f"lstm-conformance: reference torch {_torch_version()}, profile '{config.stash[_PROFILE]}' "
            f"({_examples_per_test(config)} examples per test; the suite's tests only)", *_database_header(config)]


def _database_header(config: Any) -> list[str]:
    shared = config.stash.get(_SHARED, None)
    if shared is None:
        return []
    use = "read-only" if shared.read_only else "read and written; each run draws its own examples"
    if settings.default is not None and settings.default.database is not None:
        state = "beside the local database" if shared.usable else "unusable: the local database only"
    else:
        state = "alone (the session's hypothesis profile has no database)" if shared.usable else \
            "unusable, and the session's hypothesis profile has no database: none at all"
    return [f"lstm-conformance: shared example database {shared.location} ({use}), from {config.stash[_DATABASE][1]}, "
            f"{state}; the suite's tests only"]


def _torch_version() -> str:
    """torch's version, without importing torch where nothing else did (the xdist controller)."""
    if "torch" in sys.modules:
        return sys.modules["torch"].__version__
    from importlib import metadata

    return metadata.version("torch")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: Any) -> Any:
    """Count the examples a test ran; a test whose every example is an expected failure xfails."""
    runner = getattr(item, "funcargs", {}).get("lstm_runner")
    if not isinstance(runner, Runner):
        return (yield)
    before = runner.calls
    runner.expected, runner.expected_seen = item.stash.get(_WHEN, []), []
    try:
        result = yield
    finally:
        item.user_properties.append((EXAMPLES, runner.calls - before))
        runner.expected = []
    seen, ran = runner.expected_seen, runner.calls - before
    if seen and len(seen) >= ran:  # every example failed, each as an entry with `when` expects
        pytest.xfail(f"expected failure: {seen[0]} ({len(seen)} example(s))")
    if seen:  # the feature works; some examples hit a divergence recorded elsewhere
        item.user_properties.append((NOTE, Note("expected failure", f"{seen[0]} ({len(seen)} of {ran} examples)",
                                                "").to_data()))
    return result


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselect, so entries for deselected tests are not "stale"
def pytest_collection_modifyitems(config: Any, items: list) -> None:
    if _PROFILE not in config.stash:
        return  # not a conformance run
    suite_items = [item for item in items if _in_suite(item)]
    if not suite_items:
        return
    chosen = _suite_settings(config)
    for item in suite_items:
        test: Any = getattr(item, "obj", None)
        if getattr(test, "is_hypothesis_test", False):
            # The attribute where hypothesis keeps the settings a test runs with: what @settings sets, and
            # what hypothesis' own pytest plugin replaces for parametrized tests.  Set by every session,
            # since the suite's modules outlive a session in a process that runs pytest.main more than once.
            getattr(test, "__func__", test)._hypothesis_internal_use_settings = chosen
    if not config.getoption("lstm_stress"):
        skip = pytest.mark.skip(reason="stress tier: run with --lstm-stress")
        for item in suite_items:
            if item.get_closest_marker("stress") is not None:
                item.add_marker(skip)
    _mark_expected_failures(config, suite_items)


def _in_suite(item: Any) -> bool:
    """Whether a collected test is one of the conformance suite's own."""
    path = getattr(item, "path", None)
    return path is not None and _SUITE in Path(path).resolve().parents


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
    candidate = request.config.stash.get(_CANDIDATE, None)
    if candidate is None:
        pytest.fail("lstm-conformance: this session is not a conformance run: select the suite "
                    "(--pyargs conformance.suite) or give --lstm-impl", pytrace=False)
    return candidate


@pytest.fixture(scope="session")
def lstm_runner(request: Any, lstm_candidate: Candidate) -> Runner:
    """Runs cases on the implementation under test, isolated as --lstm-isolation says."""
    config = request.config
    return Runner(lstm_candidate, config.getoption("lstm_isolation") == "process", config.getoption("lstm_timeout"))
