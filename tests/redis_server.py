"""A throwaway redis-server on a free loopback port, for the tests of the shared example database.

Where ``redis-server`` (the Debian package) or the redis package (``lstm-conformance[redis]``) is
missing, the tests that need them skip with the reason; with ``LSTM_CONFORMANCE_REQUIRE_REDIS`` set
(as ``.ci/run`` sets it, having installed both) they fail instead, so that CI cannot pass them unseen.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

REQUIRE = "LSTM_CONFORMANCE_REQUIRE_REDIS"


class RedisServer:
    """One redis-server process: no persistence (``--save ''``, ``--appendonly no``), loopback only."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.process, self.port = folder, None, 0
        for _ in range(5):  # a free port can be taken between finding it and the server binding it
            self.port = _free_port()
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(folder), "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._ready():
                return
            self.stop()
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def _ready(self) -> bool:
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping())
            except redis.ConnectionError:
                time.sleep(0.05)
        return False

    def snapshot(self) -> dict[bytes, frozenset]:
        """Every key and its set of values (the example database's whole content)."""
        client = self.client()
        return {key: frozenset(client.smembers(key)) for key in client.scan_iter()}

    def kill(self) -> None:
        """Gone at once, as a server whose machine fails: SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def missing() -> str:
    """Why the tests with a real Redis cannot run here; empty where they can."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    if importlib.util.find_spec("redis") is None:
        return "the redis package is not installed (pip install 'lstm-conformance[redis]')"
    return ""


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test, stopped after it."""
    reason = missing()
    if reason:
        if os.environ.get(REQUIRE):
            pytest.fail(f"{reason}, and ${REQUIRE} is set", pytrace=False)
        pytest.skip(reason)
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()
