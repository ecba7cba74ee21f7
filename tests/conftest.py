"""Shared helpers for the suite's own tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import forkserver

from .redis_server import redis_server  # noqa: F401 - a fixture: a throwaway redis-server for one test

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    import torch

    # These tests call torch in-process on small cases, as the suite's test processes do; the plugin
    # sets one intra-op thread only in conformance runs, so this session sets it for itself.
    torch.set_num_threads(1)


def run_pytest(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run pytest in a fresh interpreter, as a user would, with the repository importable.

    An ``env`` value of ``None`` removes that variable."""
    environ = dict(os.environ, PYTHONPATH=str(REPO))
    environ.pop("PYTEST_XDIST_WORKER", None)
    environ.pop(forkserver.ENV_VAR, None)  # the run under test starts its own worker server
    environ.pop("LSTM_CONFORMANCE_IMPL", None)
    for key, value in (env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def suite_runner(tmp_path: Path):
    """Run the conformance suite from an empty folder (no stale hypothesis database)."""

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return run_pytest(["--pyargs", "conformance.suite", *args], cwd=tmp_path, env=env)

    return run
