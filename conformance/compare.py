"""The tolerance policy, in one place, and mismatch statistics in the style of assert_close.

Policy
------
Every value is judged against the float64 evaluation of the same weights and inputs (the
*oracle*, see :mod:`conformance.reference`), not against torch's float32 result.  So a port that
is more accurate than torch is never penalised for disagreeing with torch's rounding.

An element ``a`` of the candidate, with oracle value ``o``, passes when::

    |a - o| <= atol + rtol * |o|
    atol = max(floor(dtype), GROWTH * max|torch - o|)       # over the whole tensor
    rtol = floor(dtype)

* ``floor(float32) = 16 * eps32 ~ 1.9e-6``: about ten times the worst error torch's own float32
  LSTM shows against float64 at default initialisation (2e-7, up to 200 steps, any size).
* ``floor(float64) = sqrt(eps32 * eps64) ~ 5.1e-12``: the geometric midpoint between float64 and
  float32 rounding.  Correct float64 ports sit near 1e-15, a port that computes a float64 model
  in float32 sits near 1e-8, so both are about three orders of magnitude from the line.
* ``GROWTH = 8``: where torch itself is far from exact (large weights, long sequences), a port may
  be up to 8 times less accurate than torch before it fails.  For float64 cases the oracle is
  torch itself, so this term is zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["GROWTH", "Mismatch", "Tolerance", "compare_values", "floor", "tolerance", "within"]

EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}
GROWTH = 8.0


def floor(dtype: str) -> float:
    """The smallest absolute and relative tolerance for a dtype (see the module docstring)."""
    if dtype == "float64":
        return math.sqrt(EPS["float32"] * EPS["float64"])
    return 16 * EPS["float32"]


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    torch_error: float

    def describe(self) -> str:
        return (f"allowed |a - o| <= {self.atol:.2g} + {self.rtol:.2g} * |o|; "
                f"torch's own error on this tensor: {self.torch_error:.2g}")


def tolerance(dtype: str, reference: np.ndarray, oracle: np.ndarray) -> Tolerance:
    """The tolerance for one tensor, widened by how far torch itself is from the oracle."""
    torch_error = _max_abs(reference, oracle)
    return Tolerance(max(floor(dtype), GROWTH * torch_error), floor(dtype), torch_error)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0:
        return 0.0
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.nanmax(diff)) if np.isfinite(diff).any() else 0.0


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

    def describe(self) -> str:
        pct = 100.0 * self.mismatched / max(self.total, 1)
        return (f"{self.name}: mismatched elements: {self.mismatched} / {self.total} ({pct:.1f}%)\n"
                f"  greatest absolute difference: {self.max_abs:.3g} at index {self.max_abs_index}\n"
                f"  greatest relative difference: {self.max_rel:.3g} at index {self.max_rel_index}\n"
                f"  {self.tolerance.describe()}")


def within(actual: np.ndarray, oracle: np.ndarray, tol: Tolerance) -> np.ndarray:
    """Element-wise: is each element of ``actual`` within ``tol`` of the oracle?"""
    a = actual.astype(np.float64)
    o = oracle.astype(np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.abs(a - o) <= tol.atol + tol.rtol * np.abs(o)
    return ok | (np.isnan(a) & np.isnan(o))  # NaN where the oracle is NaN is agreement


def compare_values(name: str, actual: np.ndarray, oracle: np.ndarray, tol: Tolerance) -> Optional[Mismatch]:
    """Compare same-shaped arrays element-wise; ``None`` when every element is within tolerance."""
    bad = ~within(actual, oracle, tol)
    if not bad.any():
        return None
    a = actual.astype(np.float64)
    o = oracle.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.abs(a - o)
        diff = np.where(np.isnan(diff), np.inf, diff)
        rel = np.where(o != 0, diff / np.abs(o), np.where(diff == 0, 0.0, np.inf))
    abs_at = np.unravel_index(int(np.argmax(diff)), diff.shape)
    rel_at = np.unravel_index(int(np.argmax(rel)), rel.shape)
    return Mismatch(name, int(bad.sum()), int(bad.size), float(diff[abs_at]), tuple(int(i) for i in abs_at),
                    float(rel[rel_at]), tuple(int(i) for i in rel_at), tol)
