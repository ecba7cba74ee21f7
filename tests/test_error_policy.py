"""The error policy's classes, on records made by hand (the suite's runs exercise the rest)."""

from __future__ import annotations

from conformance.error_policy import judge_error
from conformance.invalid_calls import INCIDENTAL, UNDEFINED, CallRecord, Raised

TORCH_INCIDENTAL = CallRecord(raised=Raised("RuntimeError", ("RuntimeError",),
                                            "Expected more hidden states in stacked_rnn", INCIDENTAL, "forward"))
RETURNED = CallRecord(returned="a result")


def test_returning_where_torch_raises_an_incidental_error_fails() -> None:
    verdict = judge_error(TORCH_INCIDENTAL, RETURNED, "exact", "h0 has one layer too many")
    assert verdict.error_class == INCIDENTAL and [p.kind for p in verdict.problems] == ["error"]


def test_a_call_torch_answers_differently_each_run_is_reference_undefined() -> None:
    verdict = judge_error(TORCH_INCIDENTAL, RETURNED, "exact", "h0 has one layer too many", unstable=True)
    assert verdict.error_class == UNDEFINED and not verdict.problems
    assert [(n.kind, n.what) for n in verdict.notes] == [(UNDEFINED, "h0 has one layer too many")]
