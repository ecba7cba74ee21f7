"""The pytest plugin: options, hypothesis profiles, the resolved implementation, the header.

Registered through the ``pytest11`` entry point, so ``pytest --lstm-impl=...`` works from any
directory once the package is installed.  The conformance tests themselves live in
:mod:`conformance.suite`.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from .candidates import Candidate
from .registry import ENV_VAR, ResolutionError, resolve

_COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=8, **_COMMON)
settings.register_profile("ci", max_examples=30, **_COMMON)
settings.register_profile("thorough", max_examples=300, **_COMMON)

_CANDIDATE = pytest.StashKey[Candidate]()
_PROFILE = pytest.StashKey[str]()


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("lstm-conformance", "LSTM conformance against torch.nn.LSTM")
    group.addoption("--lstm-impl", default=None, metavar="IMPL",
                    help=f"implementation to check: a registered name (see `lstm-conformance list`) or an "
                         f"import path package.module:Class. Default: ${ENV_VAR}, else the bundled 'numpy'.")
    group.addoption("--lstm-stress", action="store_true", default=False,
                    help="also run the stress tier (large weights, long sequences)")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "stress: stress tier, run only with --lstm-stress")
    profile = config.getoption("hypothesis_profile", None)
    if not profile:
        profile = "ci" if os.environ.get("CI") else "dev"
        settings.load_profile(profile)
    config.stash[_PROFILE] = profile
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)  # one intra-op thread per worker: n workers must not fight over n cores
    spec = config.getoption("lstm_impl")
    try:
        config.stash[_CANDIDATE] = resolve(spec, origin="--lstm-impl" if spec else None)
    except ResolutionError as exc:
        raise pytest.UsageError(f"lstm-conformance: {exc}") from None


def pytest_report_header(config: Any) -> list[str]:
    import torch

    candidate = config.stash.get(_CANDIDATE, None)
    if candidate is None:
        return []
    return [f"lstm-conformance: checking {candidate.name} = {candidate.path} ({candidate.kind}), "
            f"from {candidate.origin}",
            f"lstm-conformance: reference torch {torch.__version__}, hypothesis profile '{config.stash[_PROFILE]}'"]


def pytest_collection_modifyitems(config: Any, items: list) -> None:
    if config.getoption("lstm_stress"):
        return
    skip = pytest.mark.skip(reason="stress tier: run with --lstm-stress")
    for item in items:
        if "stress" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lstm_candidate(request: Any) -> Candidate:
    """The implementation under test, as resolved from --lstm-impl / $LSTM_CONFORMANCE_IMPL."""
    return request.config.stash[_CANDIDATE]
