"""Gradients of the implementation under test against torch.nn.LSTM's (``conformance.gradients``).

One test per gradient focus, a subset of the forward foci (``conformance.strategies.FOCI``) that puts
every axis a backward pass gets wrong in every example: packed and unsorted input, both directions,
projections, unbatched and batch-first layouts, stacked layers, long sequences, given initial states,
zero values, and training mode (p = 0 and p = 1 compared like eval; 0 < p < 1 under the mask the port
drew where it is recovered, else on what no mask reaches).  The accumulation test (a torch module's
``.grad``) draws as ``initial_state`` does, in eval mode; the double-backward test draws as ``any`` does,
without a random dropout mask.  h0 and c0 require grad in some examples and not in others, as the input
does.  A port that declares no gradients (an adapter without ``Capabilities(gradients=True)``) is skipped
with the reason, as is a drop-in that declares no double backward from that test.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.adapters import Capabilities
from conformance.candidates import Candidate
from conformance.case import Case
from conformance.runner import Runner
from conformance.gradients import double_backward_reason, unsupported_reason
from conformance.output import skip_unsupported
from conformance.strategies import FOCI, MAX_COST, case_cost, cases, focus_requirements

#: The forward foci the gradients are checked on, each with what it changes in the forward focus's
#: strategy: a long sequence's gradient is checked on one or two unidirectional layers (the steps
#: are what it is about, and each layer and direction adds a backward pass through all of them).
#: Training mode with p = 0 is drawn by ``any``.  Half-precision gradients are judged at unit scale only:
#: beyond it (weights x4 over stacked layers) a correct port's rounding of every intermediate in half
#: precision moves a gradient far more than torch's own error or the oracle on data moved by rounding's
#: size shows (``conformance.compare``, "Half precision").
GRADIENT_FOCI: dict[str, dict] = {
    "any": {}, "multi_layer": {}, "batch_first": {}, "bidirectional": {}, "proj_size": {}, "initial_state": {},
    "unbatched": {}, "packed_unsorted": {}, "zero_values": {},
    "long_sequence": {"layer_count": st.integers(1, 2), "batch": st.integers(1, 4)},
    "train_dropout_1_is_deterministic": {}, "train_dropout_masks_recovered": {},
    "train_dropout_keeps_layer_0_states": {},
    "float16": {"values": "plain", "weight_scale": st.just(1.0)},
    "bfloat16": {"values": "plain", "weight_scale": st.just(1.0)},
}
#: The most a gradient example may cost (``case_cost`` of its forward): each example runs three forwards
#: and three backwards, each backward costlier than its forward, so a third of the forward cap keeps the
#: slowest gradient example near the slowest forward example.
GRADIENT_MAX_COST = MAX_COST // 3
#: The most a double-backward example may cost: its backward builds a graph of the backward pass and
#: differentiates it again, about twice a first-order example's work.
DOUBLE_BACKWARD_MAX_COST = GRADIENT_MAX_COST // 2


@lru_cache(maxsize=None)
def _gradient_cases(capabilities: Capabilities, focus: str, cost: int = GRADIENT_MAX_COST) -> st.SearchStrategy[Case]:
    spec = {**FOCI[focus], **GRADIENT_FOCI[focus]}
    if focus == "long_sequence":  # unidirectional: see GRADIENT_FOCI
        capabilities = capabilities.without("bidirectional")
    return cases(capabilities, **spec).filter(lambda c: case_cost(c.config, c.call.seq_len, c.call.batch) <= cost)


def _needs_gradients(request: pytest.FixtureRequest, candidate: Candidate) -> None:
    reason = unsupported_reason(candidate)
    if reason is None:
        return
    if not candidate.gradients:  # declared absent: unsupported, with the reason
        skip_unsupported(request.node, candidate.name, [reason])
    pytest.skip(f"{candidate.name} declares gradients, but the suite does not check {reason}")


def _with_state_grad(case: Case, data: st.DataObject, capabilities: Capabilities) -> Case:
    """The case with h0 and c0 requiring grad or not (drawn), where it passes them and the port declares
    ``requires_grad``."""
    if not case.call.with_hx or "requires_grad" not in capabilities.features:
        return case
    return case.replace(hx_requires_grad=data.draw(st.booleans(), label="hx_requires_grad"))


@pytest.mark.parametrize("focus", list(GRADIENT_FOCI))
@given(data=st.data())
def test_gradients_match_torch(lstm_candidate: Candidate, lstm_runner: Runner, request: pytest.FixtureRequest,
                               focus: str, data: st.DataObject) -> None:
    """The results' autograd status, and the gradients of a loss on output, h_n and c_n (and on a subset
    of them) with respect to the input, h0, c0 and every parameter, match torch's."""
    _needs_gradients(request, lstm_candidate)
    features, dtype = focus_requirements(focus)
    missing = lstm_candidate.capabilities.missing(features, dtype)
    if missing:
        skip_unsupported(request.node, lstm_candidate.name, missing)
    case = data.draw(_gradient_cases(lstm_candidate.capabilities, focus), label="case")
    lstm_runner.gradients(_with_state_grad(case, data, lstm_candidate.capabilities))


@given(data=st.data())
def test_gradients_accumulate_over_calls(lstm_candidate: Candidate, lstm_runner: Runner,
                                         request: pytest.FixtureRequest, data: st.DataObject) -> None:
    """backward() adds to the .grad the caller's tensors and the parameters already hold, and a second
    call and backward on the same instance adds the same gradients again."""
    _needs_gradients(request, lstm_candidate)
    if lstm_candidate.kind != "drop-in":
        pytest.skip(f"{lstm_candidate.name} is an adapter: accumulating in .grad is a torch module's behaviour")
    case = data.draw(_gradient_cases(lstm_candidate.capabilities, "initial_state"), label="case")
    case = case.replace(training=False) if not case.deterministic else case
    lstm_runner.gradients(_with_state_grad(case, data, lstm_candidate.capabilities), check="gradients-accumulate")


@given(data=st.data())
def test_double_backward_matches_torch(lstm_candidate: Candidate, lstm_runner: Runner,
                                       request: pytest.FixtureRequest, data: st.DataObject) -> None:
    """The gradient of <v, a loss's gradient> (a Hessian-vector product, as a gradient penalty takes) with
    respect to the input, h0, c0 and every parameter matches torch's."""
    _needs_gradients(request, lstm_candidate)
    reason = double_backward_reason(lstm_candidate)
    if reason is not None:
        skip_unsupported(request.node, lstm_candidate.name, [reason])
    case = data.draw(_gradient_cases(lstm_candidate.capabilities, "any", DOUBLE_BACKWARD_MAX_COST), label="case")
    case = case.replace(training=False) if not case.deterministic else case
    lstm_runner.gradients(_with_state_grad(case, data, lstm_candidate.capabilities), check="double-backward")
