"""The shared example database: its URL, the wrapper that keeps it from failing a run, the options, the
header, and campaigns against a real Redis (a failure one run finds, replayed first by the next)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Iterable

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase, InMemoryExampleDatabase

from conformance import cli, database
from conformance.database import KEY_PREFIX, Location, Shared
from conformance.options import OptionError

from .conftest import REPO, run_pytest
from .redis_server import RedisServer, _free_port

#: A drop-in whose bug needs two bidirectional layers: the simplest case (one layer) passes.
BROKEN = "--lstm-impl=tests.ports.broken:HnDirectionMajor"
BIDIRECTIONAL = ("-k", "test_matches_torch and bidirectional")
CASE = re.compile(r"^What differs .* on case: (Case\(.*\))$", re.M)


# ------------------------------------------------------------------ the location

@pytest.mark.parametrize("url, kind", [
    ("shared-examples", "folder"), ("/mnt/team/examples", "folder"), ("data:v1", "folder"),
    ("redis://127.0.0.1:6379/0", "redis"), ("redis://cache.example.org", "redis"),
    ("rediss://nightly:secret@cache.example.org:6380/3", "redis"), ("REDIS://host/2", "redis"),
])
def test_a_location_is_a_folder_or_a_redis_url(url: str, kind: str) -> None:
    location = database.parse("--lstm-database", url)
    assert (location.url, location.kind) == (url, kind)


@pytest.mark.parametrize("url, message", [
    ("", "--lstm-database must be a folder or redis://host:port/db, got ''"),
    ("   ", "--lstm-database must be a folder or redis://host:port/db, got '   '"),
    ("http://cache.example.org/0", "unknown scheme 'http://' in 'http://cache.example.org/0'"),
    ("s3://bucket/examples", "unknown scheme 's3://'"),
    ("redis://:6379/0", "'redis://:6379/0' names no host"),
    ("redis://host:port/0", "the port in 'redis://host:port/0' is not a number"),
    ("redis://host:99999/0", "is not a number from 0 to 65535"),
    ("redis://host:6379/first", "the database in 'redis://host:6379/first' must be a number"),
    ("redis://host:6379/0?timeout=1", "has a query or fragment"),
    ("redis://user:hunter2@host:6379/x", "'redis://user:***@host:6379/x' must be a number"),
])
def test_a_bad_location_is_a_one_line_error(url: str, message: str) -> None:
    with pytest.raises(OptionError) as raised:
        database.parse("--lstm-database", url)
    assert message in str(raised.value) and "\n" not in str(raised.value), str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file\n")
    with pytest.raises(OptionError, match="is a file"):
        database.parse("--lstm-database", str(tmp_path / "notes.txt"))


def test_redis_without_the_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a))
    with pytest.raises(OptionError) as raised:
        database.parse("--lstm-database", "redis://127.0.0.1:6379/0")
    assert str(raised.value) == ("--lstm-database redis://127.0.0.1:6379/0 needs the redis package: "
                                 "pip install 'lstm-conformance[redis]'")


def test_a_password_is_never_shown() -> None:
    location = Location("rediss://nightly:s3cret@cache.example.org:6380/3", "redis")
    assert str(location) == "rediss://nightly:***@cache.example.org:6380/3"
    assert str(Location("redis://:s3cret@host/0", "redis")) == "redis://:***@host/0"
    warned: list[str] = []
    Shared(_Broken(location.url), False, warned.append).check()
    assert warned and "s3cret" not in warned[0] and "nightly:***@" in warned[0]


@pytest.mark.parametrize("read_only, seed, env, message", [
    (True, None, None, "--lstm-database-read-only needs a shared database: --lstm-database URL or "
                       "$LSTM_CONFORMANCE_DATABASE"),
    (False, 3, "shared", "--hypothesis-seed turns hypothesis' example database off, so the shared database "
                         "($LSTM_CONFORMANCE_DATABASE) would be neither read nor written"),
    (False, None, "ftp://x", "$LSTM_CONFORMANCE_DATABASE must be a folder or redis://host:port/db: unknown scheme"),
])
def test_what_a_run_asks_for_is_checked_once(monkeypatch: pytest.MonkeyPatch, read_only: bool, seed: int | None,
                                             env: str | None, message: str) -> None:
    if env is None:
        monkeypatch.delenv(database.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(database.ENV_VAR, env)
    with pytest.raises(OptionError) as raised:
        database.given(None, "--lstm-database", read_only, seed, "--hypothesis-seed")
    assert message in str(raised.value), str(raised.value)


def test_the_option_wins_over_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(database.ENV_VAR, "from-the-environment")
    assert database.given("given", "--lstm-database", False, None, "--hypothesis-seed") == \
        (Location("given", "folder"), "--lstm-database")
    assert database.given(None, "--lstm-database", True, None, "--hypothesis-seed") == \
        (Location("from-the-environment", "folder"), "$LSTM_CONFORMANCE_DATABASE")
    monkeypatch.setenv(database.ENV_VAR, "")
    assert database.given(None, "--lstm-database", False, None, "--hypothesis-seed") is None


# ------------------------------------------------------------------ the wrapper

class _Dying(InMemoryExampleDatabase):
    """An in-memory database that raises ConnectionError from its ``fail_after``-th operation on."""

    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self.operations, self.fail_after = 0, fail_after

    def _count(self) -> None:
        self.operations += 1
        if self.operations > self.fail_after:
            raise ConnectionError("Error 111 connecting to 10.0.0.7:6379. Connection refused.")

    def fetch(self, key: bytes) -> Iterable[bytes]:
        self._count()
        for value in super().fetch(key):
            yield value
            self._count()  # a connection lost halfway through the answer

    def save(self, key: bytes, value: bytes) -> None:
        self._count()
        super().save(key, value)

    def delete(self, key: bytes, value: bytes) -> None:
        self._count()
        super().delete(key, value)


class _Broken(Location):
    """A location whose database is a :class:`_Dying` one (``fail_after`` operations, 0 at start)."""

    def __init__(self, url: str = "redis://10.0.0.7:6379/0", fail_after: int = 0, check_fails: bool = True) -> None:
        super().__init__(url, "redis")
        object.__setattr__(self, "db", _Dying(fail_after))
        object.__setattr__(self, "check_fails", check_fails)

    def open(self, read_only: bool):
        def check() -> None:
            if self.check_fails:
                raise ConnectionError("Error 111 connecting to 10.0.0.7:6379. Connection refused.")

        return self.db, check


def test_unusable_at_start_is_one_warning_and_then_nothing_is_tried() -> None:
    warned: list[str] = []
    location = _Broken()
    shared = Shared(location, False, warned.append)
    assert shared.check() is False and not shared.usable
    shared.save(b"k", b"v")
    assert list(shared.fetch(b"k")) == []
    shared.move(b"k", b"k2", b"v")
    shared.delete(b"k", b"v")
    assert location.db.operations == 0  # nothing reached it after the check
    assert warned == ["lstm-conformance: warning: the shared example database redis://10.0.0.7:6379/0 is unusable "
                      "(ConnectionError: Error 111 connecting to 10.0.0.7:6379. Connection refused.); the run goes "
                      "on without it"]


def test_the_first_failing_write_is_one_warning_and_the_local_database_goes_on() -> None:
    warned: list[str] = []
    location = _Broken(fail_after=2, check_fails=False)
    shared = Shared(location, False, warned.append)
    local = InMemoryExampleDatabase()
    both = database.combined(local, shared)
    assert shared.check() and not warned
    both.save(b"k", b"one")
    both.save(b"k", b"two")
    both.save(b"k", b"three")  # the shared database fails here
    both.save(b"k", b"four")
    both.delete(b"k", b"one")
    assert sorted(both.fetch(b"k")) == [b"four", b"three", b"two"]  # the local database has everything
    assert sorted(location.db.data[b"k"]) == [b"one", b"two"]  # the shared one what it took before it failed
    assert len(warned) == 1 and "failed on writing an example (ConnectionError: Error 111" in warned[0], warned


def test_a_read_that_fails_halfway_keeps_what_it_read_and_warns_once() -> None:
    warned: list[str] = []
    location = _Broken(fail_after=1, check_fails=False)
    location.db.data[b"k"] = {b"a", b"b", b"c"}
    shared = Shared(location, True, warned.append)
    assert len(list(shared.fetch(b"k"))) == 1  # the first value, then the connection was lost
    assert list(shared.fetch(b"k")) == []
    assert len(warned) == 1 and "failed on reading examples" in warned[0], warned


def test_read_only_writes_nothing_to_the_shared_database(tmp_path: Path) -> None:
    folder = DirectoryBasedExampleDatabase(tmp_path / "shared")
    folder.save(b"k", b"from the nightly campaign")
    shared = Shared(Location(str(tmp_path / "shared"), "folder"), True, pytest.fail)
    assert shared.check()
    shared.save(b"k", b"from a pull request")
    shared.delete(b"k", b"from the nightly campaign")
    shared.move(b"k", b"k2", b"from the nightly campaign")
    assert list(folder.fetch(b"k")) == [b"from the nightly campaign"] and list(folder.fetch(b"k2")) == []
    assert list(shared.fetch(b"k")) == [b"from the nightly campaign"]


def test_a_folder_that_cannot_be_made_is_a_warning_at_start(tmp_path: Path) -> None:
    (tmp_path / "mount").write_text("a file where the mount point should be\n")
    warned: list[str] = []
    shared = Shared(database.parse("--lstm-database", str(tmp_path / "mount" / "examples")), False, warned.append)
    assert shared.check() is False
    assert warned == [f"lstm-conformance: warning: the shared example database {tmp_path}/mount/examples is unusable "
                      f"(NotADirectoryError: {tmp_path}/mount is not a folder); the run goes on without it"]


def test_a_folder_to_read_must_be_there(tmp_path: Path) -> None:
    warned: list[str] = []
    missing = tmp_path / "not-mounted" / "examples"
    assert Shared(database.parse("--lstm-database", str(missing)), False, warned.append).check() and not warned
    assert not Shared(database.parse("--lstm-database", str(missing)), True, warned.append).check()
    assert warned == [f"lstm-conformance: warning: the shared example database {missing} is unusable "
                      f"(FileNotFoundError: {missing} is not there to read); the run goes on without it"]


def test_a_failure_found_while_the_shared_database_dies_is_reported_and_saved_locally() -> None:
    """Hypothesis itself, on a combined database whose shared half dies after two operations."""
    warned: list[str] = []
    local = InMemoryExampleDatabase()
    location = _Broken(fail_after=2, check_fails=False)
    shared = Shared(location, False, warned.append)

    @settings(database=database.combined(local, shared), max_examples=200)
    @given(st.integers(0, 1000))
    def property_with_a_bug(number: int) -> None:
        assert number < 500, "the bug"

    with pytest.raises(AssertionError, match="the bug"):  # the test's own failure, not the database's
        property_with_a_bug()
    saved = [value for values in local.data.values() for value in values]
    assert saved, "the local database kept nothing"
    assert len(warned) == 1 and "failed on" in warned[0], warned
    with pytest.raises(AssertionError, match="the bug"):  # and the local database replays it
        property_with_a_bug()


# ------------------------------------------------------------------ on a real Redis

def test_on_redis_a_writer_saves_under_the_suites_prefix_and_a_reader_only_reads(redis_server: RedisServer) -> None:
    writer = Shared(database.parse("--lstm-database", redis_server.url), False, pytest.fail)
    assert writer.check()
    writer.save(b"key", b"example")
    writer.move(b"key", b"other", b"example")
    writer.save(b"key", b"second")
    assert redis_server.snapshot() == {KEY_PREFIX + b"key": frozenset({b"second"}),
                                       KEY_PREFIX + b"other": frozenset({b"example"})}
    before = redis_server.snapshot()
    client = redis_server.client()
    client.config_resetstat()
    reader = Shared(database.parse("--lstm-database", redis_server.url), True, pytest.fail)
    assert reader.check() and list(reader.fetch(b"key")) == [b"second"]
    reader.save(b"key", b"from a pull request")
    reader.delete(b"key", b"second")
    reader.move(b"other", b"key", b"example")
    assert redis_server.snapshot() == before
    assert _write_commands(client) == set() and "smembers" in _commands(client)


def _commands(client) -> set[str]:
    """The commands the server ran since its statistics were reset (``config resetstat`` itself left out)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_") for name in stats} - {"config|resetstat", "info", "command|info"}


def _write_commands(client) -> set[str]:
    """Those of them that change something, as Redis itself flags them (``COMMAND INFO``): a write, or a
    command sent on to replicas (PUBLISH)."""
    writes = set()
    for name in _commands(client):
        top = name.split("|")[0]
        flags = client.execute_command("COMMAND", "INFO", top)[top]["flags"]
        if {"write", "may_replicate"} & set(flags):
            writes.add(name)
    return writes


def test_on_redis_a_server_that_goes_away_is_one_warning(redis_server: RedisServer) -> None:
    warned: list[str] = []
    shared = Shared(database.parse("--lstm-database", redis_server.url), False, warned.append)
    assert shared.check()
    shared.save(b"key", b"example")
    redis_server.kill()
    started = time.perf_counter()
    shared.save(b"key", b"after")
    shared.save(b"key", b"and after")
    assert list(shared.fetch(b"key")) == []
    assert time.perf_counter() - started < 5  # refused at once, then never tried again
    assert len(warned) == 1 and "failed on writing an example (ConnectionError" in warned[0], warned
    assert redis_server.url in warned[0]


# ------------------------------------------------------------------ the plugin and the command line

@pytest.mark.slow
@pytest.mark.parametrize("args, env, message", [
    (["--lstm-database="], None, "--lstm-database must be a folder or redis://host:port/db, got ''"),
    (["--lstm-database=memcached://127.0.0.1:11211"], None,
     "--lstm-database must be a folder or redis://host:port/db: unknown scheme 'memcached://'"),
    (["--lstm-database-read-only"], None, "--lstm-database-read-only needs a shared database"),
    (["--lstm-database=shared", "--hypothesis-seed=3"], None, "--hypothesis-seed turns hypothesis' example database off"),
    ([], "redis://cache:port/0", "$LSTM_CONFORMANCE_DATABASE: the port in 'redis://cache:port/0' is not a number"),
])
def test_a_bad_database_option_is_a_one_line_usage_error(suite_runner, args: list[str], env: str | None,
                                                         message: str) -> None:
    result = suite_runner("--lstm-impl=torch", *args, env={database.ENV_VAR: env})
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"lstm-conformance: {message}" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_unreachable_database_is_one_warning_and_the_run_goes_on(suite_runner) -> None:
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"  # nothing listens there
    result = suite_runner("--lstm-impl=torch", "-k", "test_matches_torch and any and not many_layers",
                          "--lstm-max-examples=2", f"--lstm-database={url}", "-n", "2", env={"CI": None})
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("lstm-conformance: warning:")]
    assert warnings == [f"lstm-conformance: warning: the shared example database {url} is unusable (ConnectionError: "
                        f"Error 111 connecting to 127.0.0.1:{port}. Connection refused.); "
                        "the run goes on without it"], result.stdout
    assert (f"lstm-conformance: shared example database {url} (read and written; each run draws its own examples), "
            "from --lstm-database, unusable: the local database only; the suite's tests only") in result.stdout


MINE = '''
import json, os

from hypothesis import given, settings, strategies as st


@given(st.integers())
def test_my_own_property(number):
    with open(os.environ["MINE_TO"], "w") as out:
        json.dump(repr(settings.default.database), out)  # inside the test: the database it runs with
    assert number < 1000
'''


@pytest.mark.slow
def test_the_shared_database_is_the_suites_alone(tmp_path: Path) -> None:
    """A session that runs the suite and a project's own hypothesis test: the project's test keeps the
    session's database; the suite's failure goes to both the local and the shared database."""
    project, shared = tmp_path / "project", tmp_path / "shared"
    project.mkdir()
    (project / "test_mine.py").write_text(MINE)
    mine = tmp_path / "mine.json"
    result = run_pytest(["--pyargs", "conformance.suite", "test_mine.py", BROKEN,
                         "-k", "(test_matches_torch and bidirectional) or my_own",
                         "--lstm-max-examples=30", f"--lstm-database={shared}"], cwd=project,
                        env={"MINE_TO": str(mine), "CI": None, "PYTHONPATH": f"{REPO}:{project}"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"2 failed", result.stdout.splitlines()[-1]), result.stdout[-3000:]
    assert json.loads(mine.read_text()) == repr(DirectoryBasedExampleDatabase(project / ".hypothesis" / "examples"))
    assert (f"lstm-conformance: shared example database {shared} (read and written; each run draws its own "
            "examples), from --lstm-database, beside the local database; the suite's tests only") in result.stdout
    keys = set(DirectoryBasedExampleDatabase(shared).fetch(DirectoryBasedExampleDatabase._metakeys_name))
    local = set(DirectoryBasedExampleDatabase(project / ".hypothesis" / "examples").fetch(
        DirectoryBasedExampleDatabase._metakeys_name))
    assert keys and keys < local, (keys, local)  # the suite's keys; the project's test's only in the local one


def test_the_command_line_passes_the_database_on(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(cli, "_resolve", lambda impl: seen.append(impl))
    monkeypatch.delenv(database.ENV_VAR, raising=False)
    args = cli._parser().parse_args(["check", "numpy", "--database", "redis://cache:6379/1", "--database-read-only"])
    assert cli._run(args, "checking") is None and seen == ["numpy"]  # checked, then on to resolving the port
    out = cli._pytest_args(args)
    assert "--lstm-database=redis://cache:6379/1" in out and "--lstm-database-read-only" in out
    plain = cli._pytest_args(cli._parser().parse_args(["report", "numpy", "--json", "x.json"]))
    assert not any(arg.startswith("--lstm-database") for arg in plain)


@pytest.mark.parametrize("argv, message", [
    (["--database", "ftp://host/x"], "lstm-conformance: error: --database must be a folder or redis://host:port/db: "
                                     "unknown scheme 'ftp://'"),
    (["--database-read-only"], "lstm-conformance: error: --database-read-only needs a shared database"),
    (["--database", "shared", "--seed", "4"], "lstm-conformance: error: --seed turns hypothesis' example database off"),
])
def test_the_command_line_checks_the_database_first(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                    argv: list[str], message: str) -> None:
    monkeypatch.delenv(database.ENV_VAR, raising=False)
    monkeypatch.setattr(cli, "_resolve", pytest.fail)  # nothing is resolved, nothing runs
    assert cli.main(["check", "numpy", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0].startswith(message) and len(captured.err.splitlines()) == 1, captured.err
    assert not captured.out


# ------------------------------------------------------------------ campaigns on a real Redis

def _failing_case(result) -> str:
    found = CASE.findall(result.stdout)
    assert found, result.stdout[-3000:] + result.stderr[-3000:]
    return found[0]


@pytest.mark.slow
def test_a_failure_one_run_finds_is_replayed_first_by_the_next_which_writes_nothing(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """The nightly campaign (random examples, writing) finds a failure; pull-request CI (derandomized,
    read-only, one example) fails on that same minimal case at once, and leaves Redis as it was."""
    nightly, pull_request, control = (tmp_path / name for name in ("nightly", "pull-request", "control"))
    for folder in (nightly, pull_request, control):
        folder.mkdir()
    shared = f"--lstm-database={redis_server.url}"
    found = run_pytest(["--pyargs", "conformance.suite", BROKEN, *BIDIRECTIONAL, "--lstm-max-examples=30", shared],
                       cwd=nightly, env={"CI": None})
    assert found.returncode == 1, found.stdout[-3000:]
    case = _failing_case(found)
    written = redis_server.snapshot()
    assert written and all(key.startswith(KEY_PREFIX) for key in written), written
    client = redis_server.client()
    client.config_resetstat()

    pr = ["--pyargs", "conformance.suite", BROKEN, *BIDIRECTIONAL, "--lstm-max-examples=1", "-s",
          "--hypothesis-verbosity=verbose"]
    started = time.perf_counter()
    replayed = run_pytest([*pr, shared, "--lstm-database-read-only"], cwd=pull_request, env={"CI": "true"})
    took = time.perf_counter() - started
    assert replayed.returncode == 1, replayed.stdout[-3000:]
    assert _failing_case(replayed) == case
    draws = re.findall(r"^Draw 1 \(case\): (.*)$", replayed.stdout, re.M)
    assert draws and draws[0] == case, draws  # the nightly's case is the first one tried
    assert (f"lstm-conformance: shared example database {redis_server.url} (read-only), from --lstm-database, "
            "alone (the session's hypothesis profile has no database); the suite's tests only") in replayed.stdout
    assert redis_server.snapshot() == written  # exactly what the nightly run wrote
    assert _write_commands(client) == set() and "smembers" in _commands(client), _commands(client)

    # the same pull-request run without the shared database: its one example does not show the bug
    alone = run_pytest(pr, cwd=control, env={"CI": "true"})
    assert alone.returncode == 0, alone.stdout[-3000:]
    assert case not in re.findall(r"^Draw 1 \(case\): (.*)$", alone.stdout, re.M)
    assert took < 120


KILLER = '''
import json, os, signal


def pytest_runtest_setup(item):
    if item.name == os.environ["KILL_BEFORE"]:
        import redis

        with open(os.environ["KILL_NOTE"], "w") as note:  # what the run had written before the server went away
            json.dump(redis.Redis.from_url(os.environ["KILL_URL"]).dbsize(), note)
        os.kill(int(os.environ["KILL_PID"]), signal.SIGKILL)
'''


@pytest.mark.slow
def test_a_database_that_goes_away_mid_run_loses_no_result(redis_server: RedisServer, tmp_path: Path) -> None:
    """Two failing tests; the server is killed after the first: both are reported, one warning says the
    shared database failed, and the second's failure is in the local database."""
    (tmp_path / "redis_killer.py").write_text(KILLER)
    note = tmp_path / "written.json"
    second = "test_matches_torch[bidirectional]"
    env = {"CI": None, "PYTHONPATH": f"{REPO}:{tmp_path}", "KILL_BEFORE": second, "KILL_NOTE": str(note),
           "KILL_URL": redis_server.url, "KILL_PID": str(redis_server.process.pid)}
    result = run_pytest(["--pyargs", "conformance.suite", BROKEN, "-k", "test_matches_torch and (multi_layer or "
                         "bidirectional) and not noncontiguous", "-p", "redis_killer", "--lstm-max-examples=30", "--lstm-all-reports",
                         f"--lstm-database={redis_server.url}"], cwd=tmp_path, env=env)
    assert redis_server.process.wait(timeout=30) == -9  # it did go away, killed before the second test
    assert json.loads(note.read_text()) > 0  # once the first test's failure had been written to it
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "INTERNALERROR" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert re.search(r"\b2 failed\b", result.stdout.splitlines()[-1]), result.stdout[-3000:]
    cases = CASE.findall(result.stdout)  # every failure in full: the first test's, then the second's
    assert len(cases) == 2, result.stdout[-3000:]
    warnings = [line for line in result.stdout.splitlines() if line.startswith("lstm-conformance: warning:")]
    assert len(warnings) == 1 and f"the shared example database {redis_server.url} failed on" in warnings[0] \
        and warnings[0].endswith("the run goes on without it"), result.stdout[-3000:]

    # the failure found after the server went away is in the local database: replayed as the first example
    again = run_pytest(["--pyargs", "conformance.suite", BROKEN, "-k", "test_matches_torch and bidirectional",
                        "--lstm-max-examples=1", "-s", "--hypothesis-verbosity=verbose"], cwd=tmp_path, env={"CI": None})
    assert again.returncode == 1, again.stdout[-3000:]
    assert re.findall(r"^Draw 1 \(case\): (.*)$", again.stdout, re.M)[0] == cases[1]
