"""The checks: run a case on torch and on the candidate, judge the difference, and diagnose a failure.

Each check raises :class:`~conformance.verdict.ConformanceFailure` (an AssertionError) that lists every
problem found with the case, its runnable code and mismatch statistics, and returns ``None`` when the
candidate conforms.  With ``diagnose=True`` a failure also carries where the candidate departs and a
likely bug (:mod:`conformance.localise`, :mod:`conformance.hints`).  These run wherever the case runs:
in the worker process (:mod:`conformance.service`), in-process with ``--lstm-isolation inline``, and in a
reproducer.  Invalid calls are checked by :func:`conformance.runner.check_error`, which needs the worker.
"""

from __future__ import annotations

from typing import Any

from .candidates import Candidate, CandidateError
from .case import Case, PackingCall
from .error_policy import judge_error, judge_warnings
from .forward import (after_switch, call_modes, compare_outcome, mask_statistics, mutations, parameters,
                      statistics_asked)
from .gradients import accumulation_problems, double_backward_problems, gradient_problems, unsupported_reason
from .hints import Evidence, GradientEvidence, recognise, recognise_gradients
from .invalid_calls import CallRecord, python_warnings, record_packing
from .localise import localise
from .outcome import StructureError
from .reference import Reference, copy_args, reference_for
from .verdict import ConformanceFailure, Note, Problem, Repeat, call_form

__all__ = ["EVAL_MODE", "INPUT_REQUIRES_GRAD", "check_double_backward", "check_forward", "check_gradient_accumulation",
           "check_gradients", "check_packing_error", "run_gradients"]


def check_forward(candidate: Candidate, case: Case, repeat: Repeat = False,
                  diagnose: bool = False) -> None:
    """Run ``case`` on torch and on ``candidate``; raise :class:`ConformanceFailure` on any difference.

    With ``repeat=True`` the candidate instance is called a second time with the same arguments
    and that result is judged too (a port must not carry state between calls).  ``repeat`` may also
    be a number of calls in the case's mode, after which the dropout masks recovered from every call
    are tested for their rate and independence (:func:`conformance.dropout.mask_statistics`); or a
    tuple of training modes, one per call on the same instance (``.train()``/``.eval()`` switched
    between calls), each call judged against torch in its mode.  With
    ``diagnose=True`` a failure also carries where the candidate departs and a likely bug
    (:mod:`conformance.localise`, :mod:`conformance.hints`); that runs more models, so the
    suite asks for it only for the failing example hypothesis finally reports.
    """
    calls = call_modes(case, repeat)
    ref = reference_for(case)
    in_mode = {case.call.training: (case, ref)}

    def mode(training: bool) -> tuple[Case, Reference]:
        if training not in in_mode:
            other = case.replace(training=training)
            in_mode[training] = (other, reference_for(other))
        return in_mode[training]

    first_case, first_expected = mode(calls[0])
    args_before = copy_args(first_expected.args)
    problems: list[Problem] = []
    built_warnings: list = []
    first: Any = None
    recovered: list = []
    try:
        instance = candidate.build(case.config, ref.model.state_dict(), warnings_out=built_warnings)
        if candidate.kind == "drop-in":  # constructed with nn.LSTM's arguments: it must warn as nn.LSTM does
            problems += judge_warnings(CallRecord(warnings=python_warnings(ref.warnings)),
                                       CallRecord(warnings=python_warnings(built_warnings)),
                                       candidate.capabilities.errors)
        params_before = parameters(instance)
        for index, training in enumerate(calls):
            this_case, this = mode(training)
            got = candidate.run(instance, this.args, training, case.call.packed, case.call.arguments)
            problems += after_switch(compare_outcome(this_case, this, got, call=index + 1, recovered=recovered),
                                     calls[:index], training)
            if index == 0:
                first = got if training == case.call.training else None
                problems += mutations(this, args_before, params_before, instance)
            if problems:
                break
        if not problems and statistics_asked(repeat):
            problems += mask_statistics(case, ref, recovered, len(calls))
    except CandidateError as exc:
        problems.append(Problem("raised", f"torch returned a result, but {exc}", rule="raised-on-valid"))
    except StructureError as exc:
        problems.append(Problem("structure", str(exc), rule="malformed"))
    if problems:
        if not diagnose:
            raise ConformanceFailure(candidate.name, case, problems, repeat=repeat)
        location, hint, on = _diagnose(candidate, case, ref, first, problems)
        raise ConformanceFailure(candidate.name, case, problems, location, hint, repeat=repeat, diagnosed_on=on)


def run_gradients(candidate: Candidate, case: Case, check: str = "gradients", diagnose: bool = False) -> None:
    """One of the gradient checks of :mod:`conformance.gradients` on ``case``, by its name in
    ``conformance.verdict.CHECKS``: ``"gradients"``, ``"gradients-accumulate"`` or ``"double-backward"``."""
    checks = {"gradients": check_gradients, "gradients-accumulate": check_gradient_accumulation,
              "double-backward": check_double_backward}
    if check not in checks:
        raise ValueError(f"unknown gradient check {check!r}; known: {sorted(checks)}")
    return checks[check](candidate, case, diagnose)


def check_gradients(candidate: Candidate, case: Case, diagnose: bool = False) -> None:
    """Run ``case`` forward and backward on torch and on ``candidate``; raise
    :class:`ConformanceFailure` where the candidate's gradients (or autograd status) differ.
    ``diagnose=True`` adds a likely bug (:func:`conformance.hints.recognise_gradients`); where the case's
    input does not require grad and no bug is recognised, the same case with an input that requires grad
    is tried too (the input gradient's time steps tell a gradient lost through time)."""
    reason = unsupported_reason(candidate)
    if reason is not None:
        raise ValueError(f"{candidate.name} declares no support for {reason}")
    problems, grads_seen, args = gradient_problems(candidate, case)
    if not problems:
        return
    if not grads_seen and not any(p.kind == "gradient" for p in problems):
        # the forward differs: the forward check's own failure (and diagnosis), so that it is one root cause
        # with the forward tests' failures; h0 and c0 as the forward tests pass them
        check_forward(candidate, case.replace(hx_requires_grad=False), diagnose=diagnose)
    hint, on = None, ""
    if diagnose and all(p.kind == "gradient" for p in problems):
        hint = _recognised(case, args, problems, grads_seen)
        if hint is None and not case.call.requires_grad:
            variant = case.replace(requires_grad=True)
            try:
                more, more_seen, more_args = gradient_problems(candidate, variant)
                hint = _recognised(variant, more_args, more, more_seen) if more else None
            except Exception:  # noqa: BLE001 - the variant is only a way to a better hint
                hint = None
            on = INPUT_REQUIRES_GRAD if hint is not None else ""
    raise ConformanceFailure(candidate.name, case, problems, hint=hint, check="gradients", diagnosed_on=on)


#: The variant a gradient failure may be diagnosed on (:func:`check_gradients`).
INPUT_REQUIRES_GRAD = "the same case with an input that requires grad"


def _recognised(case: Case, args: tuple, problems: list[Problem], grads_seen: list) -> Any:
    if not all(p.kind == "gradient" for p in problems):
        return None
    try:
        return recognise_gradients(GradientEvidence(case, args, problems, grads_seen))
    except Exception:  # noqa: BLE001 - a hint is a bonus
        return None


def check_double_backward(candidate: Candidate, case: Case, diagnose: bool = False) -> None:
    """The double backward (:func:`conformance.gradients.double_backward_problems`); a port whose forward
    or first gradients differ fails as those checks do."""
    problems = double_backward_problems(candidate, case)
    if problems:
        check_gradients(candidate, case, diagnose=diagnose)  # a forward or a first gradient that differs
        raise ConformanceFailure(candidate.name, case, problems, check="double-backward")


def check_gradient_accumulation(candidate: Candidate, case: Case, diagnose: bool = False) -> None:
    """``.grad`` accumulation (:func:`conformance.gradients.accumulation_problems`); a port whose forward or
    gradients already differ fails as those checks do."""
    problems = accumulation_problems(candidate, case)
    if problems:
        check_gradients(candidate, case, diagnose=diagnose)  # a forward or a gradient that differs: that failure
        raise ConformanceFailure(candidate.name, case, problems, check="gradients-accumulate")


EVAL_MODE = "the same case in eval mode"


def _diagnose(candidate: Candidate, case: Case, ref: Reference, got: Any,
              problems: list[Problem]) -> tuple[Any, Any, str]:
    """Localise and recognise: (location, hint, the variant they were found on).

    A case in training mode whose dropout masks are random is first tried in eval mode: if the
    candidate fails there too, its bug is not about dropout, and the deterministic case (where
    every recogniser applies) is diagnosed instead, so that a wrong gate order is not taken for a
    dropout rule.  A diagnosis never fails the failure itself.
    """
    if not case.deterministic:
        evaluated = case.replace(training=False)
        try:
            check_forward(candidate, evaluated, diagnose=False)
        except ConformanceFailure as failure:
            location, hint = _diagnose_here(candidate, evaluated, reference_for(evaluated), failure.problems)
            return location, hint, EVAL_MODE if location or hint else ""
        except Exception:  # noqa: BLE001 - the eval-mode variant is only a way to a better hint
            pass
    return (*_diagnose_here(candidate, case, ref, problems, got), "")


def _diagnose_here(candidate: Candidate, case: Case, ref: Reference, problems: list[Problem],
                   got: Any = None) -> tuple[Any, Any]:
    if got is None and all(p.kind == "values" for p in problems):
        try:  # the result to localise: the candidate's first call on this case
            instance = candidate.build(case.config, ref.model.state_dict(), warnings_out=[])
            got = candidate.run(instance, ref.args, case.call.training, case.call.packed, case.call.arguments)
        except Exception:  # noqa: BLE001 - no result, no localisation
            got = None
    location = departing_piece = None
    first_call = [p for p in problems if p.call == 1]
    if got is not None and first_call and all(p.kind == "values" for p in problems):
        try:
            location, departing_piece = localise(candidate, case, ref, got)
        except Exception:  # noqa: BLE001 - a diagnosis is a bonus, the failure stands without it
            location = departing_piece = None
    return location, recognise(Evidence(case, ref, got, problems, location, departing_piece, candidate))


def check_packing_error(candidate: Candidate, call: PackingCall, functions: Any) -> list[Note]:
    """A bad call of the port's own packing function (``functions``) against torch's."""
    import torch.nn.utils.rnn as torch_rnn

    reference = record_packing(call, torch_rnn, is_torch=True)
    got = record_packing(call, functions, is_torch=False)
    strictness = candidate.capabilities.errors
    verdict = judge_error(reference, got, strictness, call.fault, call=call_form(call))
    problems = verdict.problems + judge_warnings(reference, got, strictness)
    if problems:
        raise ConformanceFailure(candidate.name, call, problems)
    return verdict.notes
