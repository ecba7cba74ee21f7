"""One run spread over hosts: pytest-xdist's execnet transport, on two loopback socket servers.

Each "host" is execnet's own socket server (``execnet/script/socketserver.py``), started with this
environment's Python, where the suite is installed, as it must be on every real host.  The controller
hands the tests to them with ``--tx socket=HOST:PORT --dist load``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import execnet
import pytest

from conformance import database, forkserver

from .conftest import REPO, run_pytest

SERVER = Path(execnet.__file__).resolve().parent / "script" / "socketserver.py"
LISTENING = re.compile(r"Entering Accept loop \('127\.0\.0\.1', (\d+)\)")

#: Loaded by the controller and by each worker: what each process was and did.
PROBE = '''
import json, os

import pytest

RAN, REPORTED, DATABASES = [], [], set()


def pytest_runtest_call(item):
    RAN.append(item.nodeid)
    settings = getattr(getattr(item, "obj", None), "_hypothesis_internal_use_settings", None)
    if settings is not None:
        DATABASES.add(repr(settings.database))


def pytest_runtest_logreport(report):  # in the controller: the reports the workers sent
    if report.when == "call":
        REPORTED.append(report.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    from conformance import forkserver, service

    worker = getattr(session.config, "workerinput", {}).get("workerid")
    with open(os.path.join(os.environ["PROBE_DIR"], f"{worker or 'controller'}.json"), "w") as out:
        json.dump({"pid": os.getpid(), "ran": RAN, "reported": REPORTED, "databases": sorted(DATABASES),
                   "server": bool(forkserver._STARTED), "served_by": forkserver.address(service.SERVICE),
                   "isolation": type(service._WORKER.process).__name__}, out)
'''


class _Host:
    """execnet's socket server on a free loopback port; its output (the worker's terminal) to a file."""

    def __init__(self, folder: Path, env: dict) -> None:
        folder.mkdir()
        self.log = folder / "server.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-u", str(SERVER), "127.0.0.1:0"], cwd=folder, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (found := LISTENING.search(self.log.read_text())):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"execnet's socket server did not start: {self.log.read_text()}")
            time.sleep(0.05)
        self.port = int(found.group(1))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[_Host]]:
    """Two hosts, with an environment of their own: nothing of this run's (no worker server's address,
    no shared database, no implementation), as on another machine."""
    env = {key: value for key, value in os.environ.items()
           if key not in (forkserver.ENV_VAR, database.ENV_VAR, "LSTM_CONFORMANCE_IMPL", "PYTEST_XDIST_WORKER",
                          "PYTEST_ADDOPTS")}
    env.update(PYTHONPATH=f"{REPO}:{tmp_path}", PROBE_DIR=str(tmp_path / "probes"))
    started: list[_Host] = []
    try:
        for name in ("host-a", "host-b"):
            started.append(_Host(tmp_path / name, env))
        yield started
    finally:
        for host in started:
            host.stop()


@pytest.mark.slow
def test_one_run_over_two_hosts_with_the_controllers_shared_database(hosts: list[_Host], tmp_path: Path) -> None:
    (tmp_path / "hosts_probe.py").write_text(PROBE)
    probes, controller, shared = tmp_path / "probes", tmp_path / "controller", tmp_path / "shared"
    probes.mkdir()
    controller.mkdir()
    tx = [arg for host in hosts for arg in ("--tx", f"socket=127.0.0.1:{host.port}")]
    result = run_pytest([*tx, "--dist", "load", "--pyargs", "conformance.suite", "--lstm-impl=torch", "-p", "hosts_probe",
                         "-k", "test_matches_torch and (any or batch_first or bidirectional or packed) and not many",
                         "--lstm-max-examples=2"], cwd=controller,
                        env={"PROBE_DIR": str(probes), "PYTHONPATH": f"{REPO}:{tmp_path}", "CI": None,
                             database.ENV_VAR: str(shared)},  # the hosts do not have this variable
                        timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "created: 2/2 workers" in result.stdout, result.stdout[-3000:]
    found = {path.stem: json.loads(path.read_text()) for path in probes.glob("*.json")}
    assert set(found) == {"controller", "gw0", "gw1"}, found

    # the controller hands the tests out: it runs none, and starts no worker server (no worker of its machine
    # could use it)
    assert found["controller"]["ran"] == [] and not found["controller"]["server"], found["controller"]

    # each host ran tests, in its own process, its cases in a `python -m conformance.worker` of its own
    workers = [found["gw0"], found["gw1"]]
    assert {worker["pid"] for worker in workers} == {host.process.pid for host in hosts}, workers
    assert all(worker["ran"] for worker in workers), workers
    ran = [test for worker in workers for test in worker["ran"]]
    assert sorted(ran) == sorted(found["controller"]["reported"]) and len(set(ran)) == len(ran) >= 4, found
    assert all(worker["served_by"] is None and worker["isolation"] == "Popen" for worker in workers), workers
    # and the suite's tests there used the database the controller's environment named
    assert all(worker["databases"] and all(f"Shared({str(shared)!r}, read_only=False)" in db
                                           for db in worker["databases"]) for worker in workers), workers
