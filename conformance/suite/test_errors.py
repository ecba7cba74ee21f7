"""Errors and warnings: the implementation must fail where torch fails, and say why the same way.

Every invalid call runs in an isolated worker process (torch itself segfaults on some invalid
packed calls), so a crash or a hang is a failure of that case, never of the run.  The policy
(contract, incidental, reference-undefined) is in ``conformance.error_policy``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.candidates import Candidate
from conformance.runner import Runner
from conformance.output import NOTE, skip_unsupported
from conformance.bad_calls import (CALL_FAULTS, PACKED_CALL_FAULTS, bad_call_cases, bad_constructor_cases,
                                   bad_packing_calls, call_fault_requirements, fault_ids)
from conformance.verdict import Note


def _note(request: pytest.FixtureRequest, notes: list[Note]) -> None:
    for note in notes:
        request.node.user_properties.append((NOTE, note.to_data()))


@given(data=st.data())
def test_constructor_errors_match_torch(lstm_candidate: Candidate, lstm_runner: Runner, request: pytest.FixtureRequest,
                                        data: st.DataObject) -> None:
    """Bad constructor arguments raise (and warn) as nn.LSTM's constructor does."""
    if lstm_candidate.kind != "drop-in":
        pytest.skip("adapters are built from a validated LSTMConfig; constructor errors apply to drop-in modules")
    case = data.draw(bad_constructor_cases(lstm_candidate.capabilities), label="case")
    _note(request, lstm_runner.error(case))


@pytest.mark.parametrize("fault", list(CALL_FAULTS), ids=fault_ids(CALL_FAULTS))
@given(data=st.data())
def test_call_errors_match_torch(lstm_candidate: Candidate, lstm_runner: Runner, request: pytest.FixtureRequest,
                                 fault: str, data: st.DataObject) -> None:
    """Bad input, bad hx and sequence length 0 raise where torch raises."""
    _skip_unless_supported(request, lstm_candidate, call_fault_requirements(fault))
    case = data.draw(bad_call_cases(fault, lstm_candidate.capabilities), label="case")
    _note(request, lstm_runner.error(case))


@pytest.mark.parametrize("fault", PACKED_CALL_FAULTS, ids=fault_ids(PACKED_CALL_FAULTS))
@given(data=st.data())
def test_packed_call_errors_match_torch(lstm_candidate: Candidate, lstm_runner: Runner,
                                        request: pytest.FixtureRequest, fault: str, data: st.DataObject) -> None:
    """Packed input with a bad hx: torch has no Python-level checks here, and sometimes crashes."""
    _skip_unless_supported(request, lstm_candidate, call_fault_requirements(fault, packed=True))
    case = data.draw(bad_call_cases(fault, lstm_candidate.capabilities, packed=True), label="case")
    _note(request, lstm_runner.error(case))


def _skip_unless_supported(request: pytest.FixtureRequest, candidate: Candidate, features: set[str]) -> None:
    missing = candidate.capabilities.missing(features)
    if missing:
        skip_unsupported(request.node, candidate.name, missing)


PACKING_ATTRIBUTE = "lstm_conformance_packing"


@given(data=st.data())
def test_packing_errors_match_torch(lstm_candidate: Candidate, lstm_runner: Runner, request: pytest.FixtureRequest,
                                    data: st.DataObject) -> None:
    """A port's own pack_padded_sequence / pack_sequence reject bad lengths as torch's do."""
    functions = getattr(lstm_candidate.target, PACKING_ATTRIBUTE, None)
    if functions is None:
        pytest.skip(f"{lstm_candidate.name} provides no packing functions of its own "
                    f"(a port that does names them in a class attribute `{PACKING_ATTRIBUTE}`)")
    call = data.draw(bad_packing_calls(), label="packing call")
    _note(request, lstm_runner.packing(call, functions))
