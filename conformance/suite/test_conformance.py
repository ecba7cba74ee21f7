"""Outputs and states of the implementation under test against torch.nn.LSTM.

One test per focus (see ``conformance.strategies.FOCI``): each makes a feature or a rare axis
value appear in every example, so a port missing it is skipped with the reason, and a port
getting it wrong fails with a shrunk case.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.candidates import Candidate
from conformance.runner import Runner
from conformance.output import skip_unsupported
from conformance.strategies import FOCI, STRESS, cases, focus_cases, focus_requirements


def _cases_for(request: pytest.FixtureRequest, candidate: Candidate, focus: str) -> st.SearchStrategy:
    features, dtype = focus_requirements(focus)
    missing = candidate.capabilities.missing(features, dtype)
    if missing:
        skip_unsupported(request.node, candidate.name, missing)
    return focus_cases(candidate.capabilities, focus)


@pytest.mark.parametrize("focus", list(FOCI))
@given(data=st.data())
def test_matches_torch(lstm_candidate: Candidate, lstm_runner: Runner, request: pytest.FixtureRequest, focus: str,
                       data: st.DataObject) -> None:
    """Output, h_n and c_n match torch's (shape, dtype, values within the tolerance policy)."""
    case = data.draw(_cases_for(request, lstm_candidate, focus), label="case")
    lstm_runner.forward(case)


@given(data=st.data())
def test_second_call_gives_the_same_result(lstm_candidate: Candidate, lstm_runner: Runner, data: st.DataObject) -> None:
    """Calling the same instance again, hx=None included, gives torch's result again."""
    case = data.draw(cases(lstm_candidate.capabilities), label="case")
    lstm_runner.forward(case, repeat=True)


@pytest.mark.stress
@given(data=st.data())
def test_stress_matches_torch(lstm_candidate: Candidate, lstm_runner: Runner, data: st.DataObject) -> None:
    """Large weights and long sequences, judged against torch's own (larger) error."""
    case = data.draw(cases(lstm_candidate.capabilities, **STRESS), label="case")
    lstm_runner.forward(case)
