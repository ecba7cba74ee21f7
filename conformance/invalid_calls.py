"""Invalid calls made and recorded: what torch, a candidate or a packing function did with a bad call.

:func:`record_reference` runs a bad call on the live torch and records where it raised; the class of
that answer (contract, incidental or reference-undefined) is read from torch's traceback, so the policy
(:mod:`conformance.error_policy`, ``docs/errors.md``) follows torch's versions instead of a hand-kept
list of messages.
"""

from __future__ import annotations

import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import hazards
from .candidates import Candidate
from .case import Case, PackingCall
from .outcome import StructureError
from .reference import copy_args, invoke
from .timing import timed

__all__ = ["CONTRACT", "INCIDENTAL", "UNDEFINED", "CallRecord", "Prepared", "Raised", "prepare", "python_warnings",
           "record_candidate", "record_packing", "record_reference", "torch_origin"]

CONTRACT, INCIDENTAL, UNDEFINED = "contract", "incidental", "reference-undefined"


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
    not_run: str = ""  # why the call was not made (torch on an ``conformance.hazards.UNSTABLE_PACKED_FAULTS`` case)
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

    def may_corrupt_heap(self) -> bool:
        """Whether torch's call could corrupt its heap (:func:`conformance.hazards.may_corrupt_heap`);
        never where building alone decided torch's answer."""
        return self.record is None and hazards.may_corrupt_heap(self.case, self.args)


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


def record_reference(case: Case, prepared: Optional[Prepared] = None) -> CallRecord:
    """Run torch on a (possibly invalid) case, recording what it raised or returned.

    Where torch raises from a kernel, the call is made once more on its native kernels (oneDNN off): if
    torch returns a result there, the record says so (``other_kernels``), and the call is
    reference-undefined (see the module docstring).  Measured on every fault of the bad-call catalogue:
    a c0 of another dtype than the weights and packed data with a row more than ``batch_sizes`` count
    are refused by oneDNN and run by the native kernels.  A call that may corrupt torch's heap
    (:meth:`Prepared.may_corrupt_heap`) is made once: it runs in a forked child that must not outlive it."""
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
        other = _on_native_kernels(prepared) if raised.origin == INCIDENTAL and not prepared.may_corrupt_heap() else ""
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
