"""The tolerance policy, in one place, and mismatch statistics in the style of assert_close.

Every value a port returns is judged here against the float64 evaluation of the same weights and
inputs (the *oracle*, :mod:`conformance.reference`), with an allowance per tensor built from a floor per
dtype, torch's own error and the case's sensitivity to rounding (:func:`tolerance`, and for gradients
:func:`gradient_tolerance`); NaN and infinities by position (:func:`within`).  Judging against the
oracle rather than torch's float32 result is what lets a port more accurate than torch pass.

The policy, with each figure and the measurement behind it, is ``docs/tolerance.md``: its sections
Policy, Beyond unit scale, Special values, Gradients and Half precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import numpy as np

from . import dtypes

__all__ = ["GROWTH", "HALF_GROWTH", "Mismatch", "Tolerance", "case_scale", "cell_magnitude", "compare_values",
           "floor", "gradient_scale", "gradient_tolerance", "growth", "held_in", "perturbation", "tolerance",
           "value_scale", "within"]

EPS = {name: dtypes.eps(name) for name in dtypes.DTYPES}
#: The smallest absolute tolerance: 16 times the dtype's smallest normal number, except float16, whose
#: smallest normal number (6.1e-5) is already within a few hundred eps of 1.
TINY = {name: (1 if name == "float16" else 16) * dtypes.smallest_normal(name) for name in dtypes.DTYPES}
GROWTH = 8.0
HALF_GROWTH = 4.0
#: The floor of a half-precision dtype, in its eps.
HALF_FLOOR = 2


def floor(dtype: str) -> float:
    """The smallest absolute and relative tolerance for a dtype (see the module docstring)."""
    if dtype == "float64":
        return math.sqrt(EPS["float32"] * EPS["float64"])
    if dtype in dtypes.HALF:
        return HALF_FLOOR * EPS[dtype]
    return 16 * EPS["float32"]


def growth(dtype: str) -> float:
    """How many times torch's own error (and the case's sensitivity) a port may be off."""
    return HALF_GROWTH if dtype in dtypes.HALF else GROWTH


def perturbation(dtype: str) -> float:
    """How far the sensitivity measurement moves each input and weight, relative: 16 eps of the dtype,
    the floor of a half-precision one (16 eps of bfloat16 would be an eighth of each value)."""
    return floor(dtype) if dtype in dtypes.HALF else 16 * EPS[dtype]


def held_in(oracle: np.ndarray, dtype: str) -> np.ndarray:
    """The oracle as the dtype can hold it: a finite value past the dtype's range becomes the infinity
    rounding to the dtype gives (float16 overflows past 65504); every other value is kept as it is."""
    o = np.asarray(oracle, dtype=np.float64)
    if dtype == "float64":
        return o
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = o.astype(dtypes.numpy_dtype(dtype)).astype(np.float64)
    return np.where(np.isinf(rounded) & np.isfinite(o), rounded, o)


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    torch_error: float
    sensitivity: float = 0.0  # how far rounding may move this case's result (0: not measured, at unit scale)


def value_scale(arrays: Iterable[np.ndarray]) -> float:
    """``min(1, 10 * the largest finite magnitude)`` among ``arrays`` (1 when they hold no finite element):
    ``scale`` of the policy over a case's oracle tensors and its data (see :func:`case_scale`)."""
    largest = None
    for part in arrays:
        values = np.abs(np.asarray(part, dtype=np.float64))
        values = values[np.isfinite(values)]
        if values.size:
            largest = max(largest or 0.0, float(values.max()))
    return 1.0 if largest is None else min(1.0, 10.0 * largest)


def case_scale(ref: Any) -> float:
    """``scale`` of the policy for an :class:`~conformance.reference.Reference`: over the oracle's output,
    h_n and c_n, the call's x, h0 and c0, and the model's biases, so that a result made tiny by
    saturated gates (large inputs) is not taken for a tiny computation."""
    import torch

    arrays = list(ref.oracle.parts().values())
    for value in (ref.args[0], *(ref.args[1] if len(ref.args) > 1 else ())):
        value = value if isinstance(value, torch.Tensor) else getattr(value, "data", None)
        if isinstance(value, torch.Tensor):
            arrays.append(value.detach().double().numpy())
    biases = [p for name, p in ref.model.state_dict().items() if name.startswith("bias")]
    return value_scale(arrays + [p.detach().double().numpy() for p in biases])


def cell_magnitude(states: Iterable[Optional[np.ndarray]]) -> float:
    """The largest finite ``|c|`` among a case's given c0 and the oracle's c_n (0 when there is none)."""
    return _largest_finite(states)


def tolerance(dtype: str, reference: np.ndarray, oracle: np.ndarray, scale: float = 1.0,
              perturbed: Optional[np.ndarray] = None, cell: float = 0.0) -> Tolerance:
    """The tolerance for one tensor, widened by how far torch itself is from the oracle and, where
    ``perturbed`` is given (the oracle on data moved by rounding's size), by the case's sensitivity to
    rounding: how far that moves it, or eps times ``cell`` (see :func:`cell_magnitude`), whichever is
    larger; ``scale`` (see :func:`value_scale`) shrinks the floor for a case whose every value is tiny."""
    torch_error = _max_abs(reference, oracle)
    sensitivity = 0.0 if perturbed is None else max(_max_abs(perturbed, oracle), EPS[dtype] * cell)
    atol = max(floor(dtype) * scale, growth(dtype) * torch_error, growth(dtype) * sensitivity, TINY[dtype])
    return Tolerance(atol, floor(dtype), torch_error, sensitivity)


def gradient_scale(gradients: Iterable[Optional[np.ndarray]]) -> float:
    """The largest finite magnitude among ``gradients`` (0 when they hold none): a gradient's own scale,
    or, over every gradient of one loss, the case's."""
    return _largest_finite(gradients)


def _largest_finite(arrays: Iterable[Optional[np.ndarray]]) -> float:
    """The largest finite magnitude among the elements of ``arrays`` (``None`` skipped; 0 when none)."""
    largest = 0.0
    for array in arrays:
        if array is not None:
            values = np.abs(np.asarray(array, dtype=np.float64))
            values = values[np.isfinite(values)]
            largest = max(largest, float(values.max()) if values.size else 0.0)
    return largest


def gradient_tolerance(dtype: str, reference: np.ndarray, oracle: np.ndarray,
                       perturbed: Optional[np.ndarray] = None, case_scale: float = 0.0, steps: int = 1) -> Tolerance:
    """The tolerance for one gradient (see "Gradients" in the module docstring): a floor relative to the
    gradient's own scale (its largest finite magnitude in the oracle) and eps relative to ``case_scale``
    (the largest gradient of the same loss, :func:`gradient_scale`), widened by torch's own error on it
    and, where ``perturbed`` is given (the oracle's gradient on data moved by rounding's size), by how far
    that moves it.  ``steps``: how many time steps the gradient sums over (a parameter's: the sequence's;
    1 for the input and the states), which widens a half-precision floor (see "Half precision")."""
    torch_error = _max_abs(reference, oracle)
    sensitivity = 0.0 if perturbed is None else _max_abs(perturbed, oracle)
    scale = gradient_scale([oracle])
    summed = floor(dtype) * (math.sqrt(max(steps, 1)) if dtype in dtypes.HALF else 1.0)
    atol = max(summed * scale, EPS[dtype] * case_scale, growth(dtype) * torch_error,
               growth(dtype) * sensitivity, TINY[dtype])
    return Tolerance(atol, floor(dtype), torch_error, sensitivity)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    """The largest ``|a - b|`` over the elements both hold finite (0 when there are none)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0


@dataclass(frozen=True)
class Mismatch:
    """How a tensor differs from the oracle: counts, the worst elements and where they are."""

    name: str
    mismatched: int
    total: int
    max_abs: float
    max_abs_index: tuple[int, ...]
    max_rel: float
    max_rel_index: tuple[int, ...]
    tolerance: Tolerance
    special: str = ""  # where NaN or inf differ from the oracle's, in words ("" when they agree)


def within(actual: np.ndarray, oracle: np.ndarray, tol: Tolerance,
           reference: Optional[np.ndarray] = None) -> np.ndarray:
    """Element-wise: is each element of ``actual`` within ``tol`` of the oracle?

    NaN and inf must be where the oracle has them (the same infinity); see the module docstring.  With
    torch's own result (``reference``), an element where torch returns NaN or inf also passes when it is
    torch's value there: a port may overflow where torch does."""
    a = np.asarray(actual, dtype=np.float64)
    o = np.asarray(oracle, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        close = np.abs(a - o) <= tol.atol + tol.rtol * np.abs(o)  # False for any NaN or inf in a
        same_special = (a == o) | (np.isnan(a) & np.isnan(o))
        ok = np.where(np.isfinite(o), close, same_special)
        if reference is not None:
            r = np.asarray(reference, dtype=np.float64)
            ok |= ~np.isfinite(r) & ((a == r) | (np.isnan(a) & np.isnan(r)))
    return ok


def compare_values(name: str, actual: np.ndarray, oracle: np.ndarray, tol: Tolerance,
                   reference: Optional[np.ndarray] = None) -> Optional[Mismatch]:
    """Compare same-shaped arrays element-wise; ``None`` when every element is within tolerance
    (:func:`within`, with torch's ``reference`` where it is given)."""
    ok = within(actual, oracle, tol, reference)
    bad = ~ok
    if not bad.any():
        return None
    a = np.asarray(actual, dtype=np.float64)
    o = np.asarray(oracle, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.abs(a - o)
        diff = np.where(ok, np.where(np.isnan(diff), 0.0, diff), np.where(np.isnan(diff), np.inf, diff))
        rel = np.where(o != 0, diff / np.abs(o), np.where(diff == 0, 0.0, np.inf))
        rel = np.where(np.isnan(rel), np.where(ok, 0.0, np.inf), rel)
    abs_at = np.unravel_index(int(np.argmax(diff)), diff.shape)
    rel_at = np.unravel_index(int(np.argmax(rel)), rel.shape)
    return Mismatch(name, int(bad.sum()), int(bad.size), float(diff[abs_at]), tuple(int(i) for i in abs_at),
                    float(rel[rel_at]), tuple(int(i) for i in rel_at), tol, _special(a, o, bad))


def _special(a: np.ndarray, o: np.ndarray, bad: np.ndarray) -> str:
    """The mismatched elements where the candidate or the oracle is NaN or inf, in words."""
    kinds = (("NaN or inf where the oracle is finite", bad & ~np.isfinite(a) & np.isfinite(o)),
             ("finite where the oracle is NaN or inf", bad & np.isfinite(a) & ~np.isfinite(o)),
             ("a different NaN or inf than the oracle's", bad & ~np.isfinite(a) & ~np.isfinite(o)))
    parts = []
    for words, mask in kinds:
        if mask.any():
            at = tuple(int(i) for i in np.argwhere(mask)[0])
            first = f"first at {_index(at)}: {_number(a[at])}, oracle {_number(o[at])}"
            parts.append(f"{int(mask.sum())} {words} ({first})")
    return "; ".join(parts)


def _index(index: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(i) for i in index) + ")"


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"
