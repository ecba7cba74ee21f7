"""Training-mode dropout: how masks are drawn over many calls, and .train()/.eval() on one instance.

Each call's result is judged on its own by every test (in training mode, by recovering the dropout
masks: ``conformance.dropout``).  These tests judge what one call cannot show: the statistics of the
masks recovered from many calls, and one instance switched between training and eval mode.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.candidates import Candidate
from conformance.runner import Runner
from conformance.dropout import STATISTICS_CALLS, SWITCH_MODES, statistics_case
from conformance.output import skip_unsupported
from conformance.strategies import focus_cases


def _needs_dropout(request: pytest.FixtureRequest, candidate: Candidate) -> None:
    missing = candidate.capabilities.missing({"dropout", "multi_layer"})
    if missing:
        skip_unsupported(request.node, candidate.name, missing)


def test_dropout_masks_are_independent_at_rate_p(lstm_candidate: Candidate, lstm_runner: Runner,
                                                 request: pytest.FixtureRequest) -> None:
    """Many calls (``STATISTICS_CALLS``) in training mode on one small case: the masks recovered from them
    drop elements at rate p, and differ between calls, batch elements, time steps and features as
    independent draws do (exact binomial tests, each with false-alarm rate ``FALSE_ALARM``)."""
    _needs_dropout(request, lstm_candidate)
    dtype = "float32" if "float32" in lstm_candidate.capabilities.dtypes else "float64"
    lstm_runner.forward(statistics_case(dtype), repeat=STATISTICS_CALLS)


@given(data=st.data())
def test_train_and_eval_switched_on_one_instance(lstm_candidate: Candidate, lstm_runner: Runner,
                                                 request: pytest.FixtureRequest, data: st.DataObject) -> None:
    """One instance called in eval, eval, training and eval mode in turn matches torch in each mode."""
    _needs_dropout(request, lstm_candidate)
    case = data.draw(focus_cases(lstm_candidate.capabilities, "train_dropout_masks_recovered"), label="case")
    lstm_runner.forward(case, repeat=SWITCH_MODES)
