"""Judging one forward call of a candidate against torch: structure, shapes, dtypes, values, mutation of
the caller's tensors, and (in training mode) the dropout masks.

:func:`conformance.checks.check_forward` runs the calls and adds the diagnosis; the tolerance each value
is judged with is :mod:`conformance.compare`'s (``docs/tolerance.md``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import numpy as np

from . import dropout
from .case import Case
from .compare import Tolerance, case_scale, cell_magnitude, compare_values, held_in, tolerance
from .dtypes import to_numpy
from .outcome import Outcome
from .reference import Reference
from .verdict import Problem

__all__ = ["compare_outcome", "judged", "mask_statistics", "call_modes", "mutations", "parameters", "after_switch",
           "statistics_asked"]


def _changed(before: Any, after: Any) -> bool:
    import torch

    if isinstance(before, torch.Tensor):
        after = after.detach()  # NaN where the caller had NaN is unchanged
        return before.shape != after.shape or not bool(((before == after) | (before.isnan() & after.isnan())).all())
    if isinstance(before, (tuple, list)):
        return any(_changed(b, a) for b, a in zip(before, after))
    return False


def mutations(ref: Reference, args_before: tuple, params_before: dict, instance: Any) -> list[Problem]:
    problems = []
    names = [("input", "input"), ("hx", "hx (h0, c0)")][:len(args_before)]
    for (tensor, name), before, after in zip(names, args_before, ref.args):
        if _changed(before, after):
            problems.append(Problem("mutated", f"the call modified the caller's {name} in place", tensor=tensor))
    after_params = parameters(instance)
    changed = sorted(k for k, v in params_before.items() if k in after_params and _array_changed(v, after_params[k]))
    if changed:
        problems.append(Problem("mutated", f"the call modified the module's parameters: {', '.join(changed)}",
                                tensor="parameters"))
    return problems


def parameters(instance: Any) -> dict:
    """The weights an instance holds: a module's state_dict, or the arrays an adapter was given."""
    state = getattr(instance, "state_dict", None)
    if callable(state):
        try:
            return {k: to_numpy(v).copy() for k, v in state().items()}
        except Exception:  # noqa: BLE001 - a port's state_dict that fails: no weights to report
            return {}
    weights = getattr(instance, "weights", None)
    return {k: np.array(v, copy=True) for k, v in weights.items()} if isinstance(weights, dict) else {}


def _array_changed(before: np.ndarray, after: np.ndarray) -> bool:
    return before.shape != after.shape or not np.array_equal(before, after)


def compare_outcome(case: Case, ref: Reference, got: Outcome, call: int = 1,
             recovered: Optional[list] = None) -> list[Problem]:
    """Structure, shapes, dtypes and values of one outcome against torch (``call``: which call).

    In training mode with random dropout masks, layer 0's states are compared as they are (no mask
    reaches them), and the rest is judged by recovering the masks (:func:`conformance.dropout.recover`);
    the recovery is appended to ``recovered`` when it is given.
    """
    torch_out = ref.torch
    problems: list[Problem] = []
    if torch_out.packed and not np.array_equal(np.asarray(got.batch_sizes), np.asarray(torch_out.batch_sizes)):
        problems.append(Problem("structure", f"packed output batch_sizes {np.asarray(got.batch_sizes).tolist()} "
                                             f"!= torch's {np.asarray(torch_out.batch_sizes).tolist()}",
                                tensor="batch_sizes", call=call, rule="batch-sizes"))
        return problems
    comparable = {}
    for name, mine in got.parts().items():
        theirs = torch_out.parts()[name]
        if mine.shape != theirs.shape:
            problems.append(Problem("shape", f"has shape {tuple(mine.shape)}; torch gives {tuple(theirs.shape)}",
                                    tensor=name, call=call))
        elif mine.dtype != theirs.dtype:
            problems.append(Problem("dtype", f"has dtype {mine.dtype}; torch gives {theirs.dtype}",
                                    tensor=name, call=call))
        else:
            comparable[name] = mine
    directions = case.config.num_directions
    for name, mine in comparable.items():
        region = ""
        if case.deterministic:
            sel: Any = slice(None)
        elif name == "output":
            continue  # a random dropout mask reaches the output: judged by recovering the masks, below
        else:
            sel, region = slice(0, directions), "layer 0"  # layer 0's states are computed before any dropout
        theirs, truth, tol = judged(case, ref, name, sel)
        mismatch = compare_values(name, mine[sel], truth, tol, reference=theirs)
        if mismatch is not None:
            problems.append(Problem("values", mismatch=mismatch, tensor=name, call=call, region=region))
    if not case.deterministic and not problems:
        recovery = dropout.recover(case, ref, got, call=call)
        if recovery is not None:
            problems += recovery.problems
            if recovered is not None:
                recovered.append(recovery)
    return problems


def judged(case: Case, ref: Reference, name: str,
           sel: Any = slice(None)) -> tuple[np.ndarray, np.ndarray, Tolerance]:
    """What one result (``name``: output, h_n or c_n; ``sel`` of its rows) of a port is judged against:
    torch's result, the oracle as the case's dtype holds it, and the tolerance (:mod:`conformance.compare`)."""
    # a case beyond unit scale: its own scale and its sensitivity to rounding (conformance.compare)
    perturbed = None if ref.perturbed is None else ref.perturbed.parts()[name][sel]
    scale = 1.0 if perturbed is None else case_scale(ref)
    cell = cell_magnitude([ref.args[1][1].detach().double() if len(ref.args) > 1 else None,
                           ref.oracle.c_n])
    theirs = ref.torch.parts()[name][sel]
    truth = held_in(ref.oracle.parts()[name][sel], case.config.dtype)
    return theirs, truth, tolerance(case.config.dtype, theirs, truth, scale, perturbed, cell)


def call_modes(case: Case, repeat: Any) -> tuple[bool, ...]:
    """The training mode of each call ``repeat`` asks for (see :func:`check_forward`)."""
    if isinstance(repeat, bool):
        return (case.call.training,) * (2 if repeat else 1)
    if isinstance(repeat, int):
        if repeat < 1:
            raise ValueError(f"repeat must be at least 1 call, got {repeat}")
        return (case.call.training,) * repeat
    modes = tuple(repeat)
    if not modes or not all(isinstance(m, bool) for m in modes):
        raise ValueError(f"repeat must be a bool, a number of calls or a non-empty tuple of bools, got {repeat!r}")
    return modes


def after_switch(problems: list[Problem], earlier: tuple[bool, ...], training: bool) -> list[Problem]:
    """Problems of a call made after the instance was called in the other mode say so (rule and region)."""
    if not earlier or all(mode == training for mode in earlier):
        return problems
    if training:
        rule, where = "train-after-eval", "training mode, after a call in eval mode"
    else:
        rule, where = "eval-after-train", "eval mode, after a call in training mode"
    return [replace(p, rule=p.rule if training and p.rule else rule,
                    region=f"{p.region}; {where}" if p.region else where) for p in problems]


def statistics_asked(repeat: Any) -> bool:
    return isinstance(repeat, int) and not isinstance(repeat, bool)


def mask_statistics(case: Case, ref: Reference, recovered: list, calls: int) -> list[Problem]:
    """The statistics of the masks recovered from ``calls`` calls in training mode on ``case``."""
    if case.deterministic or not case.call.training:
        return []
    if len(recovered) != calls or not all(r.complete for r in recovered):
        raise ValueError(f"the dropout statistics need every mask recovered, on a case small enough: {case!r}")
    if dropout.separation(case, ref) <= 1.0:  # else a recovered mask could be one of several that fit
        raise ValueError(f"the dropout statistics need a case whose masks are told apart: {case!r}")
    return dropout.mask_statistics([r.masks for r in recovered], case.config.dropout)
