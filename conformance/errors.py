"""Error and warning conformance: what torch does with a bad call, and how a port must answer.

:func:`record_reference` runs a bad call on the live torch and records where it raised; the class of
that answer (contract, incidental or reference-undefined) is read from torch's traceback, so the policy
follows torch's versions instead of a hand-kept list of messages.  The candidate's answer is then
judged by its class and by the strictness its capabilities declare (``exact``, ``type``, ``raises``).

The policy (the classes, what a port must do in each, warnings, notes) is ``docs/errors.md``.
"""

from __future__ import annotations

import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .candidates import Candidate
from .case import Case, PackingCall
from .outcome import StructureError
from .reference import copy_args, invoke
from .timing import timed
from .verdict import Note, Problem

__all__ = ["NOT_RUN_UNSTABLE", "UNSTABLE_PACKED_FAULTS", "CallRecord", "Prepared", "Raised", "judge_error",
           "judge_warnings", "may_corrupt_heap", "prepare", "python_warnings", "record_candidate", "record_packing",
           "record_reference", "unstable"]

CONTRACT, INCIDENTAL, UNDEFINED = "contract", "incidental", "reference-undefined"

#: Invalid packed calls on which torch reads or writes out of bounds (pytorch/pytorch#173946 and the
#: like): what it does depends on the heap around the states, so it returns a result, raises or
#: crashes, and two processes given the same case can answer differently (measured: torch's call and
#: a drop-in that *is* torch, forked side by side, disagreed on "c0 has one dimension too many").
#: Each fault here was seen crashing torch (SIGSEGV, SIGABRT or ``free(): invalid next size``) in
#: 120 calls; they are reference-undefined whatever one run of torch did.  No hand-built packed
#: structure (``strategies.PACKED_STRUCTURE_FAULTS``) is here: torch answers each the same way every time.
UNSTABLE_PACKED_FAULTS = frozenset({"h0 has one layer too many", "c0 has one layer too few", "c0 has one dimension too many",
                                    "h0 has one batch element too few", "c0 has one batch element too many",
                                    "hx in batch_first layout"})


def unstable(case: Case) -> bool:
    """Whether torch's answer to this invalid call varies run to run (``UNSTABLE_PACKED_FAULTS``)."""
    return case.call.packed and case.fault is not None and case.fault.name in UNSTABLE_PACKED_FAULTS


#: torch's record on an ``unstable`` case: its call would decide nothing (any answer of the candidate
#: passes) and costs a forked child, so it is not made; the candidate's call still is.
NOT_RUN_UNSTABLE = ("its answer to this call varies run to run: it indexes the states out of bounds, "
                    "pytorch/pytorch#173946")


def _torch_dir() -> str:
    import torch

    return str(Path(torch.__file__).parent)


@dataclass(frozen=True)
class Raised:
    """An exception, reduced to what is compared: type, its bases, message, and where it came from."""

    type_name: str
    bases: tuple[str, ...]
    message: str
    origin: str  # CONTRACT, INCIDENTAL, or "candidate"
    stage: str  # "construct" or "forward"

    def describe(self) -> str:
        return f"{self.type_name}: {self.message}"


def _type_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _raised(exc: BaseException, stage: str, origin: str) -> Raised:
    bases = tuple(_type_name(c) for c in type(exc).__mro__ if c not in (object, BaseException))
    return Raised(_type_name(type(exc)), bases, str(exc), origin, stage)


def torch_origin(exc: BaseException) -> str:
    """CONTRACT when the innermost frame is a ``raise`` statement in torch's Python code."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return INCIDENTAL
    last = frames[-1]
    in_torch = last.filename.startswith(_torch_dir())
    return CONTRACT if in_torch and (last.line or "").lstrip().startswith("raise") else INCIDENTAL


def python_warnings(caught: list) -> tuple[tuple[str, str], ...]:
    """(category, message) of the warnings raised from Python code, not relayed from C++."""
    return tuple((w.category.__name__, str(w.message)) for w in caught
                 if "Triggered internally at" not in str(w.message))


@dataclass
class CallRecord:
    """What one implementation did with a call: raised, returned, or crashed; and its warnings."""

    raised: Optional[Raised] = None
    returned: str = ""
    warnings: tuple[tuple[str, str], ...] = ()
    crashed: str = ""
    not_run: str = ""  # why the call was not made (torch on an ``UNSTABLE_PACKED_FAULTS`` case)
    other_kernels: str = ""  # torch's answer on its native kernels, where it returned there and raised here

    def describe(self) -> str:
        if self.crashed:
            return self.crashed
        if self.not_run:
            return f"was not run ({self.not_run})"
        if self.raised and self.other_kernels:
            return f"raised {self.raised.describe()}, and {self.other_kernels}"
        return f"raised {self.raised.describe()}" if self.raised else f"returned {self.returned}"


@dataclass
class Prepared:
    """An invalid case built once, for torch's call and the candidate's (half the builds).

    ``record`` is set when building alone decides torch's answer: a constructor fault (the
    module was built, or its constructor raised).  ``args`` stay untouched: each call gets clones.
    """

    case: Case
    model: Any = None
    args: tuple = ()
    warnings: tuple[tuple[str, str], ...] = ()
    record: Optional[CallRecord] = None
    failure: Optional[Exception] = None  # what building raised, for the candidate's record too


def prepare(case: Case) -> Prepared:
    """Build torch's module and call arguments for ``case`` (see :class:`Prepared`)."""
    caught: list = []
    try:
        model, args = case.build(warnings_out=caught)
    except Exception as exc:  # noqa: BLE001 - torch's own answer to the bad call, whatever it raises
        return Prepared(case, record=CallRecord(raised=_raised(exc, "construct", torch_origin(exc)),
                                                warnings=python_warnings(caught)), failure=exc)
    if case.fault is not None and case.fault.stage == "construct":
        return Prepared(case, record=CallRecord(returned="a module", warnings=python_warnings(caught)))
    return Prepared(case, model, args, python_warnings(caught))


def may_corrupt_heap(prepared: Prepared) -> bool:
    """Whether torch's call could corrupt its own heap and crash later, blaming another case.

    Only packed input skips torch's Python checks, and its C++ code indexes the states unchecked:
    h0 and c0 with different numbers of layers (pytorch/pytorch#173946) or a batch other than the
    input's (measured here: ``free(): invalid next size``, hangs) write out of bounds.  So a packed
    call runs unforked only when hx is absent or two 3-D tensors of the input's batch with as many
    layers each; anything else runs in a forked child of its own.

    Fewer than two states never reach that code: torch's Python indexes ``hx[1]`` (``IndexError``)
    or, for sorted input, its C++ checks the count first ("lstm expects two hidden states").  With
    more than two, only the first two can reach it (the extra one is dropped, or rejected by that
    check), so they decide.  Measured: 2000 such calls unforked, no crash, the same records as forked.

    A packed structure built by hand whose parts do not fit together (``PACKED_STRUCTURE_FAULTS``:
    batch_sizes that miscount the data's rows, increase, end with 0 or are int32; sorted_indices that are
    no permutation) is decided by the same rule, through its ``batch_sizes[0]``: the kernel takes each
    step's rows and states with bounds-checked slices, and indexes hx by sorted_indices checked too.
    Measured on each fault: forked, torch never crashed and answered each case the same way twice;
    unforked in one process, the same records as forked, and torch still right on a valid call after.
    """
    if not prepared.case.call.packed or prepared.record is not None or len(prepared.args) < 2:
        return False
    import torch

    hx = prepared.args[1]
    if not isinstance(hx, (tuple, list)):
        return True
    if len(hx) < 2:
        return False
    h0, c0 = hx[0], hx[1]
    if not (isinstance(h0, torch.Tensor) and isinstance(c0, torch.Tensor)):
        return True
    batch = int(prepared.args[0].batch_sizes[0]) if len(prepared.args[0].batch_sizes) else 0
    return h0.dim() != 3 or c0.dim() != 3 or h0.shape[0] != c0.shape[0] or not h0.shape[1] == c0.shape[1] == batch


def record_reference(case: Case, prepared: Optional[Prepared] = None) -> CallRecord:
    """Run torch on a (possibly invalid) case, recording what it raised or returned.

    Where torch raises from a kernel, the call is made once more on its native kernels (oneDNN off): if
    torch returns a result there, the record says so (``other_kernels``), and the call is
    reference-undefined (see the module docstring).  Measured on every fault of the bad-call catalogue:
    a c0 of another dtype than the weights and packed data with a row more than ``batch_sizes`` count
    are refused by oneDNN and run by the native kernels.  A call that may corrupt torch's heap
    (:func:`may_corrupt_heap`) is made once: it runs in a forked child that must not outlive it."""
    prepared = prepared if prepared is not None else prepare(case)
    if prepared.record is not None:
        return prepared.record
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with timed("reference"):  # lstm-conformance bench: torch's forward on an invalid call
                invoke(prepared.model, copy_args(prepared.args), case.call.arguments)
    except Exception as exc:  # noqa: BLE001 - torch's own answer to the bad call, whatever it raises
        raised = _raised(exc, "forward", torch_origin(exc))
        other = _on_native_kernels(prepared) if raised.origin == INCIDENTAL and not may_corrupt_heap(prepared) else ""
        return CallRecord(raised=raised, warnings=prepared.warnings, other_kernels=other)
    return CallRecord(returned="a result", warnings=prepared.warnings + python_warnings(caught))


def _on_native_kernels(prepared: Prepared) -> str:
    """"" where torch raises on its native kernels too (oneDNN off), or ran there already; else what it did."""
    import torch

    if not torch.backends.mkldnn.enabled:
        return ""

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.backends.mkldnn.flags(enabled=False), timed("reference"):
                invoke(prepared.model, copy_args(prepared.args), prepared.case.call.arguments)
    except Exception:  # noqa: BLE001 - any error on the native kernels is an answer too
        return ""
    return "returned a result on its native kernels (oneDNN off)"


def record_candidate(candidate: Candidate, case: Case, prepared: Optional[Prepared] = None) -> CallRecord:
    """Run the candidate on the case, recording what it raised or returned."""
    stage = "construct"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if case.fault is not None and case.fault.stage == "construct":
                candidate.construct(case.config)
                return CallRecord(returned="a module", warnings=python_warnings(caught))
            if prepared is None:
                with warnings.catch_warnings():
                    prepared = prepare(case)
            if prepared.failure is not None:
                raise prepared.failure
            instance = candidate.construct(case.config, prepared.model.state_dict())
            stage = "forward"
            result = candidate.call(instance, copy_args(prepared.args), case.call.training, case.call.arguments)
        except Exception as exc:  # noqa: BLE001 - whatever the port raises is its answer
            return CallRecord(raised=_raised(exc, stage, "candidate"), warnings=python_warnings(caught))
    try:
        candidate.outcome(result, case.call.packed)
        returned = "a result"
    except StructureError as exc:
        returned = f"a malformed result ({exc})"
    return CallRecord(returned=returned, warnings=python_warnings(caught))


def record_packing(call: PackingCall, functions: Any, is_torch: bool) -> CallRecord:
    """Run a packing call with ``functions`` (torch.nn.utils.rnn, or a port's own)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call.run(functions)
        except Exception as exc:  # noqa: BLE001 - whatever torch or the port raises is its answer
            origin = torch_origin(exc) if is_torch else "candidate"
            return CallRecord(raised=_raised(exc, "forward", origin), warnings=python_warnings(caught))
    return CallRecord(returned="a packed sequence", warnings=python_warnings(caught))


@dataclass
class ErrorVerdict:
    """Problems (failures) and notes (information) for one invalid call."""

    error_class: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


def judge_error(reference: CallRecord, got: CallRecord, strictness: str, what: str = "",
                unstable: bool = False, call: str = "") -> ErrorVerdict:
    """Apply the error policy (module docstring) to torch's record and the candidate's.

    ``what`` names the call (a fault's name) and ``call`` its form ("dense", "packed", ...) in
    the notes; ``unstable`` marks a call on which torch's own answer varies
    (``UNSTABLE_PACKED_FAULTS``): reference-undefined.
    """
    ref = reference.raised
    error_class = UNDEFINED if reference.crashed or ref is None or unstable or reference.other_kernels else ref.origin
    verdict = ErrorVerdict(error_class)
    if error_class == UNDEFINED or ref is None:  # (ref is None: undefined)
        # torch accepted a call its documentation rules out, or crashed: its own heap may be
        # corrupted (pytorch/pytorch#173946), so no behaviour of the candidate is wrong here.
        verdict.notes.append(Note(UNDEFINED, what, call, reference.describe(), got.describe()))
        return verdict
    if got.crashed:
        verdict.problems.append(Problem("crashed", f"the candidate {got.crashed}; torch {reference.describe()}",
                                        rule="crashed-where-torch-raises"))
        return verdict
    mine = got.raised
    if mine is None:
        missing = "a missing check" if error_class == CONTRACT else "torch rejects this call"
        verdict.problems.append(Problem("error", f"torch raises {ref.describe()} ({error_class} error), but the "
                                                 f"candidate returned {got.returned}: {missing}",
                                        rule="missing-check"))
        return verdict
    if mine.stage != ref.stage:
        verdict.problems.append(Problem("error", f"torch raises while {_doing(ref.stage)}: {ref.describe()}; "
                                                 f"the candidate raised while {_doing(mine.stage)}: {mine.describe()}",
                                        rule="wrong-stage"))
        return verdict
    same_type = ref.type_name in mine.bases
    if error_class == CONTRACT and strictness in ("exact", "type") and not same_type:
        verdict.problems.append(Problem("error", f"wrong exception type: torch raises {ref.describe()}; "
                                                 f"the candidate raised {mine.describe()}", rule="wrong-type"))
    elif error_class == CONTRACT and strictness == "exact" and mine.message != ref.message:
        verdict.problems.append(Problem("error", f"wrong message: torch raises {ref.type_name} with\n"
                                                 f"  {ref.message!r}\nthe candidate raised {mine.type_name} with\n"
                                                 f"  {mine.message!r}", rule="wrong-message"))
    elif (not same_type or mine.message != ref.message) and error_class == INCIDENTAL:
        verdict.notes.append(Note("incidental error differs", what, call, ref.describe(), mine.describe()))
    return verdict


def _doing(stage: str) -> str:
    return "being constructed" if stage == "construct" else "being called"


def judge_warnings(reference: CallRecord, got: CallRecord, strictness: str) -> list[Problem]:
    """Warnings torch emits from Python must appear from the candidate too (by strictness)."""
    if strictness == "raises" or got.crashed:
        return []
    problems = []
    for category, message in reference.warnings:
        if strictness == "exact":
            found = (category, message) in got.warnings
        else:
            found = any(c == category for c, _ in got.warnings)
        if not found:
            emitted = "; ".join(f"{c}: {m}" for c, m in got.warnings) or "none"
            problems.append(Problem("warning", f"torch warns {category}: {message}\n"
                                               f"the candidate did not (its warnings: {emitted})",
                                    rule="missing-warning"))
    return problems
