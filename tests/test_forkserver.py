"""The worker server: one import of torch per run, workers forked from it, nothing left behind.

A server forks the process that starts it, which must have a single thread: so each test starts it
in a fresh interpreter (this pytest process may be an xdist worker, with execnet's threads).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conformance import forkserver

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the worker server is Linux only")

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, os, time
from conformance import forkserver
from conformance.arrays import LSTMConfig
from conformance.case import Call, Case
from conformance.isolation import Worker
from conformance.process_messages import Answered, Ping
from conformance.service import SERVICE, CheckForward, RecordInvalidCall

def shown(result):  # a result as JSON: its kind, and the answer or what happened
    detail = result.value if isinstance(result, Answered) else result.what
    return [type(result).__name__, detail if isinstance(detail, (str, type(None))) else type(detail).__name__]

def parent(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])

forkserver.start(SERVICE)
server = forkserver._STARTED[0]
worker, out, pids = Worker(SERVICE), {}, []
os.environ["LSTM_CONFORMANCE_TEST_MARK"] = "set after the server started"
out["ping"] = shown(worker.call(Ping()))
records = worker.call(RecordInvalidCall("tests.test_forkserver:SaysTheMark", Case(LSTMConfig(3, 4), Call(2, 2)))).value
out["environment"] = records.candidate.raised.message
out["kind"] = type(worker.process).__name__
pids.append(worker.process.pid)
out["parent_is_the_server"] = parent(worker.process.pid) == server
case = Case(LSTMConfig(3, 4), Call(2, 2))
out["crash"] = shown(worker.call(CheckForward("tests.ports.misbehaving:SegfaultsOnBatches", case)))
started = time.perf_counter()
out["after_the_crash"] = shown(worker.call(CheckForward("torch", case)))
out["replacement_s"] = time.perf_counter() - started
pids.append(worker.process.pid)
out["hang"] = shown(worker.call(CheckForward("tests.ports.misbehaving:HangsOnInputSizeSeven",
                                             Case(LSTMConfig(7, 4), Call(2, 2))), timeout=1))
out["after_the_hang"] = shown(worker.call(Ping()))
pids.append(worker.process.pid)
out["pids"], out["server"] = pids, server
os.kill(server, 9)
os.waitpid(server, 0)
fresh = Worker(SERVICE)
out["without_a_server"] = [shown(fresh.call(Ping())), type(fresh.process).__name__]
fresh.stop()
print(json.dumps(out))
"""


class SaysTheMark(torch.nn.LSTM):
    """A port that raises with what its process's environment holds."""

    def __init__(self, *args, **kwargs) -> None:
        raise KeyError(os.environ.get("LSTM_CONFORMANCE_TEST_MARK", "not set"))


def _gone(pid: int) -> bool:
    """No such process, or one that has ended and waits to be reaped (state Z)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_served_workers_fail_and_are_replaced_like_started_ones() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop(forkserver.ENV_VAR, None)
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["ping"] == ["Answered", "pong"] and out["kind"] == "ServedWorker" and out["parent_is_the_server"]
    assert out["environment"] == "'set after the server started'"  # the pytest process's environment, not the server's
    assert out["crash"] == ["Crashed", "was killed by signal 11 (SIGSEGV)"]  # the server's report of its child
    assert out["after_the_crash"] == ["Answered", "Passed"]
    assert out["replacement_s"] < 1.0  # a fork, where starting python and importing torch takes seconds
    assert out["hang"] == ["TimedOut", "did not finish within 1 s, nor within 2 s on a retry in a fresh worker"]
    assert out["after_the_hang"] == ["Answered", "pong"]
    assert len(set(out["pids"])) == 3
    assert out["without_a_server"] == [["Answered", "pong"], "Popen"]  # a server that died: workers are started again
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in [out["server"], *out["pids"]]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in [out["server"], *out["pids"]])  # the server and its workers end with the run


PORT = """
import os
from torch import nn

class RecordsItsProcess(nn.LSTM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        with open(os.environ["RECORD_TO"], "a") as record:
            record.write(f"{os.getpid()} {os.getppid()}\\n")
"""


@pytest.mark.slow
def test_both_xdist_workers_get_their_workers_from_one_server(suite_runner, tmp_path) -> None:
    (tmp_path / "records_its_process.py").write_text(PORT)
    record = tmp_path / "record.txt"
    result = suite_runner("--lstm-impl=records_its_process:RecordsItsProcess", "-n", "2", "--lstm-max-examples=3",
                          "-k", "test_matches_torch",
                          env={"RECORD_TO": str(record), "PYTHONPATH": f"{REPO}:{tmp_path}"})
    assert result.returncode == 0, result.stdout[-3000:]
    rows = [line.split() for line in record.read_text().splitlines()]
    workers, parents = {row[0] for row in rows}, {row[1] for row in rows}
    # one worker per xdist worker, both forked by one server (started workers would have one parent each)
    assert len(workers) == 2 and len(parents) == 1, rows


@pytest.mark.slow
def test_a_server_socket_that_takes_the_connection_but_forks_no_worker_is_not_a_crash(tmp_path, monkeypatch) -> None:
    """A server killed while a child still held its socket: connecting works, no worker comes. The call
    goes to a worker started as a subprocess instead, and answers; it is not a crash of the call."""
    import socket
    import threading

    from conformance.isolation import Worker
    from conformance.process_messages import Answered, Ping
    from conformance.service import SERVICE

    path = str(tmp_path / "workers")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)

    def hang_up() -> None:  # take each connection, then close it without forking anything
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    monkeypatch.setattr(forkserver, "_STARTED", [os.getpid(), str(tmp_path), path, SERVICE])
    monkeypatch.setattr(forkserver, "_UNUSABLE", [])
    worker = Worker(SERVICE)
    try:
        assert worker.call(Ping(), timeout=120) == Answered("pong")
        assert type(worker.process).__name__ == "Popen"
    finally:
        worker.stop()
        listener.close()


def test_a_server_address_is_only_taken_from_the_parent(monkeypatch) -> None:
    monkeypatch.setattr(forkserver, "_STARTED", [])
    monkeypatch.setenv(forkserver.ENV_VAR, f"{os.getppid()}:some.service:/tmp/some/socket")
    assert forkserver.address("some.service") == "/tmp/some/socket"  # an xdist worker, spawned by the controller
    assert forkserver.address("another.service") is None  # a server preloads one service
    monkeypatch.setenv(forkserver.ENV_VAR, f"{os.getpid() + 100000}:some.service:/tmp/some/socket")
    assert forkserver.address("some.service") is None  # a pytest started further down (a test's subprocess) starts its own
    monkeypatch.setenv(forkserver.ENV_VAR, "garbage")
    assert forkserver.address("some.service") is None


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] not in ("Z", "X"):  # fields[3]: the session id
                members.append(int(entry))
    return members


def _session_listing(sid: int) -> str:
    """``ps``'s view of a session's processes, and where each waits in the kernel (for a run that hangs)."""
    listing = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,time,wchan:24,args", "-s", str(sid)],
                             capture_output=True, text=True).stdout
    if shutil.which("py-spy"):
        for pid in _session_members(sid):
            listing += subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True,
                                      timeout=60).stdout
    return listing


def _stop_a_run(tmp_path: Path, signum: int) -> tuple[int, str, str]:
    """Start a ``-n 2`` run in a session of its own, send ``signum`` to its process group once the first
    tests have passed (workers busy in the middle of the run), and wait for it: (exit code, stdout,
    stderr)."""
    temp = tmp_path / "tmp"  # where the run's worker server makes its socket's folder
    temp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(temp))
    for name in (forkserver.ENV_VAR, "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as stdout_file, open(err, "w") as stderr_file:
        process = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs",
                                    "conformance.suite", "--lstm-impl=torch", "--hypothesis-profile=thorough", "-n", "2",
                                    "-q"], cwd=tmp_path, env=env, stdout=stdout_file, stderr=stderr_file,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not re.search(r"^\.", out.read_text(), re.MULTILINE) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, out.read_text()[-2000:]
        os.killpg(process.pid, signum)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the run did not end within 60 s of the signal; its processes:\n"
                                 f"{_session_listing(process.pid)}\nstdout: {out.read_text()[-2000:]}\n"
                                 f"stderr: {err.read_text()[-2000:]}") from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
    deadline = time.monotonic() + 10
    while _session_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _session_members(process.pid)  # no process of the run is left
    assert not list(temp.glob("lstm-conformance-*"))  # nor the server's folder
    return process.returncode, out.read_text(), err.read_text()


@pytest.mark.slow
def test_ctrl_c_stops_the_run_and_every_worker_quietly(tmp_path) -> None:
    """Ctrl-C reaches the whole process group: pytest stops the run; no worker prints a traceback of its
    own, and none is left running."""
    code, stdout, stderr = _stop_a_run(tmp_path, signal.SIGINT)  # as a terminal sends it
    assert code == 2, stdout[-2000:] + stderr[-2000:]  # pytest's "interrupted"
    assert "KeyboardInterrupt" in stdout
    assert "Traceback" not in stderr, stderr[-3000:]


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_the_run_quietly(tmp_path) -> None:
    """As a CI runner stops a job (``kill -- -PGID``): every process ends, none with a traceback."""
    code, stdout, stderr = _stop_a_run(tmp_path, signal.SIGTERM)
    assert code == -signal.SIGTERM, stdout[-2000:] + stderr[-2000:]  # pytest ends as any program does on SIGTERM
    for text in (stdout, stderr):
        assert "Traceback" not in text and "_Stopping" not in text, text[-3000:]


SIGTERMS = """
import json, os, signal, time
from conformance import forkserver
from conformance.isolation import Worker
from conformance.process_messages import Ping
from conformance.service import SERVICE

forkserver.start(SERVICE)
server, folder = forkserver._STARTED[:2]
workers = [Worker(SERVICE), Worker(SERVICE)]
out = {"pings": [worker.call(Ping(), timeout=120).value for worker in workers]}
out["workers"] = [worker.process.pid for worker in workers]
status, deadline = None, time.monotonic() + 10
while status is None and time.monotonic() < deadline:
    os.kill(server, signal.SIGTERM)  # again and again, while it ends its workers too
    time.sleep(0.0005)
    done, code = os.waitpid(server, os.WNOHANG)
    status = os.waitstatus_to_exitcode(code) if done else None
out["status"], out["folder_left"] = status, os.path.exists(folder)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_server_ends_quietly_on_sigterm_however_often_it_comes() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop(forkserver.ENV_VAR, None)
    result = subprocess.run([sys.executable, "-c", SIGTERMS], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["pings"] == ["pong"] * 2
    assert out["status"] == 0 and not out["folder_left"], out
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert all(_gone(pid) for pid in out["workers"])
