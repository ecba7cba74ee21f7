"""The tolerance policy, in one place, and mismatch statistics in the style of assert_close.

Policy
------
Every value is judged against the float64 evaluation of the same weights and inputs (the
*oracle*, see :mod:`conformance.reference`), not against torch's float32 result.  So a port that
is more accurate than torch is never penalised for disagreeing with torch's rounding.

A finite element ``a`` of the candidate, with finite oracle value ``o``, passes when::

    |a - o| <= atol + rtol * |o|
    atol = max(floor(dtype), GROWTH * max|torch - o|)                      # per tensor, at unit scale
    rtol = floor(dtype)

* ``floor(float32) = 16 * eps32 ~ 1.9e-6``: about ten times the worst error torch's own float32
  LSTM shows against float64 at default initialisation (2e-7, up to 200 steps, any size).
* ``floor(float64) = sqrt(eps32 * eps64) ~ 5.1e-12``: the geometric midpoint between float64 and
  float32 rounding.  Correct float64 ports sit near 1e-15, a port that computes a float64 model
  in float32 sits near 1e-8, so both are about three orders of magnitude from the line.
* ``GROWTH = 8``: where torch itself is far from exact (large weights, long sequences), a port may
  be up to 8 times less accurate than torch before it fails.  For float64 cases the oracle is
  torch itself, so this term is zero.

Beyond unit scale
-----------------
A case whose values go beyond ``randn`` at unit scale (:class:`conformance.case.Values`), or whose
weights are scaled, is judged at its own scale and by its own sensitivity to rounding::

    atol = max(floor(dtype) * scale, GROWTH * max|torch - o|, GROWTH * sensitivity)
    scale = min(1, 10 * the largest finite magnitude in the case's output, h_n and c_n, its x, h0
                   and c0, and the model's biases)
    sensitivity = max(max|moved - o|, eps * the largest finite |c| of c0 and c_n)

* ``scale`` (:func:`case_scale`): when a case computes with tiny values only (inputs and states
  near 1e-6, no bias), the floor shrinks with them, so a tiny result is still held to about 16 eps
  of its own size; a fixed floor would pass anything there, zeros included.  With any output,
  state, input or bias of 0.1 or more it is 1 (the inputs count: a result made tiny by gates
  saturated by large inputs comes from a computation at unit scale).  The floor never goes below
  16 times the dtype's smallest normal number.
* ``moved`` (:func:`conformance.reference.perturbed_evaluation`): the oracle once more, with every
  weight and input element multiplied by ``1 + 16 * eps * u`` (``u`` uniform in [-1, 1], a fixed
  seed, eps of the case's dtype).  A large input whose gate sums cancel back into the linear range
  makes a few elements depend on rounding far more than the rest; torch's own error at those few
  elements is one random draw, and a correct port's rounding there can be dozens of times larger.
  How far the oracle moves when its data move by rounding's size measures that dependence; it is
  also what keeps a tiny result whose terms were not tiny (a sum that cancels) from failing at
  its own ``scale``.
* ``eps * |c|``: a gate is a value in [0, 1], and a correct port may compute it to absolute
  rather than relative precision (sigmoid as 0.5 + 0.5 * tanh(x / 2) returns 3e-8 for
  sigmoid(-17) = 4.1e-8; ONNX Runtime's sigmoid is within 1.4e-7 of the truth on [-20, 20] but
  returns 9e-8 there).  The forget gate multiplies the cell state, so a large c0 multiplies that
  absolute error: c0 = 84 and f near 0 moved ONNX Runtime's h by 3e-6.

Measured on random models (40 per scale of up to 40 inputs, 80 hidden units, 3 layers,
bidirectional or not, 8 steps, and 15 of up to 272 inputs) with the bundled NumPy port, the
from-scratch port, a fused-matmul port, a port with its own stable sigmoid and tanh (float32 and
float64) and a NumPy port computing in float64, every tensor of each case (1,320 and 495 per
scale): no port failed at unit scale, with x, h0 or c0 at 1e2 or 1e4, per-feature
scales from 1e-6 to 1e4, every tensor at 1e-6 (with and without bias), or weights x4 (also with x
at 1e2); the largest error was 0.27 of what the policy allows (0.12 with up to 40 inputs).  With
torch's own error alone, 1 in 300 tensors of the large and mixed scales failed (a correct port up
to 620 times torch's error where one element dominated).  A port computing a float64 model in
float32 failed every case at every scale.

Large values and saturated gates need nothing more: ``rtol`` covers large elements (a cell state
of 1e4 is allowed 2e-2 in float32), and where a gate saturates torch and every correct port return
the same limit (sigmoid 0 or 1, tanh +-1).

Special values
--------------
NaN and +-inf are compared by position, exactly.  An element passes when it is NaN where the
oracle is NaN, or the same infinity (sign included) where the oracle is infinite; a NaN or an
infinity where the oracle is finite fails, and so does a finite value where the oracle is NaN or
infinite.  Special values are generated at unit scale only, where torch's float32 result and its
float64 evaluation put NaN and inf at the same positions (no float32 gate underflows there to an
exact 0 that would turn ``0 * inf`` into NaN); measured on 400 random models with NaN, inf or -inf
in x, h0 or c0, torch float32, its oracle, the NumPy port and the from-scratch port agreed on
every position.  torch's own error and ``moved`` are taken over the elements both hold finite.
Signed zeros are equal: ``-0.0`` passes for ``0.0``.

Gradients
---------
A gradient (a vector-Jacobian product for one loss, with respect to the input, h0, c0 or one
parameter; :mod:`conformance.gradients`) is judged the same way, against the gradient of the float64
oracle for the same weights, inputs and cotangents.  An element ``a`` with oracle value ``o`` passes
when (:func:`gradient_tolerance`)::

    |a - o| <= atol + rtol * |o|,   rtol = floor(dtype)
    atol = max(floor(dtype) * scale, eps * largest, GROWTH * max|torch - o|, GROWTH * sensitivity)
    scale = the largest finite |o| of this gradient;  largest = the same over every gradient of the loss

* ``floor(dtype) * scale``: weight gradients are sums over every step and batch element, so their
  error grows with the sequence (torch's float32 error reached 4e-5 absolute on weight gradients of
  ~10 at 130-288 steps) while an h0 gradient stays near 1e-8: a floor relative to each gradient's own
  size holds each to float32 precision of itself.  torch's own error was at most 1.3e-6 of the
  gradient's scale at unit scale, so a float32 gradient is held to about ten times float32 rounding
  of its largest element, and a float64 one to 5e-12 of it.
* ``eps * largest``: where gates saturate (large inputs, many saturated steps), a gradient vanishes
  relative to the others, and a correct port that computes a gate (or its derivative) to absolute
  rather than relative precision, as the forward allows, gives it an error of eps relative to the
  gradients it is made from, not to itself (a sigmoid as 0.5 + 0.5 * tanh(x / 2) gave an h0 gradient of
  8.6e-9, 10 % off, after 288 steps of x at 1e4, with torch 2e-13 off).  Beyond unit scale every
  gradient of a loss can vanish at once (one step of x at 1e4, no h0: each goes through a saturated
  gate); there ``largest`` is at least what a gradient would be with every gate derivative at 1, its
  absolute precision: the largest cotangent times the largest input value and the largest weight
  (``conformance.gradients``; that sigmoid gave 9.6e-14 on a float64 weight gradient of 2e-11 there).
* ``GROWTH`` times torch's own error, and, beyond unit scale, the sensitivity (the oracle's gradient on
  data moved by rounding's size, as for values): as for values.  NaN and +-inf by position, as above.

Measured on random models (30 per kind: up to 40 inputs, hidden sizes 1-129 (at most 65 past 65 steps),
1-3 layers, bidirectional or not, proj_size 0 or hidden / 2, batches of 1, 3 or 8, 1-288 steps, h0 and
c0 given; cotangents on every result, and on the losses of ``conformance.gradients.LOSSES``), with
torch, the from-scratch port, one computing in float64, a fused gate matmul, sigmoid as
0.5 + 0.5 * tanh(x / 2), a hand-written cell backward and gradient checkpointing: no correct port failed
at unit scale (largest error 0.42 of what the policy allows), with x at 1e2 or 1e4 (0.14; without
``eps * largest`` two of 30 cases failed), per-feature scales from 1e-6 to 1e4 (0.35), x at 1e-6
(0.27), weights x2 or x4 (0.16) or zero steps and features (0.20); and on 40 more (up to 12 hidden
units, 8 steps, float32 and float64) with NaN or +-inf in one element of x, h0 or c0, every port put
NaN and inf in the gradients where the oracle has them.  Float64 ports sat at 1.4e-15 of the
gradients' scale (1e-4 of the allowance); a port whose backward recomputes a float64 model in float32
failed all 30 float64 cases.

Half precision
--------------
float16 and bfloat16 models are judged on the same principle, against the float64 oracle on the same
(rounded) weights and inputs, with a floor and a growth of their own::

    floor(float16) = 2 * eps16 ~ 2.0e-3      floor(bfloat16) = 2 * eps_bf16 ~ 1.6e-2      (HALF_FLOOR)
    atol = max(floor * scale, HALF_GROWTH * max|torch - o|, HALF_GROWTH * sensitivity),  HALF_GROWTH = 4

* Why a floor of 2 eps: torch's own error depends on the CPU.  bfloat16 runs on oneDNN where the CPU
  has AVX512-BF16 and on ATen's native kernels elsewhere; float16 runs on oneDNN only without grad and
  with AVX512-FP16 or AMX; a model with a projection always runs native.  The floor must hold a
  correct port against a reference on either path.  Measured (``scripts/tolerance_margins.py``, see
  docs/performance.md), torch's error against the oracle at unit scale is at most 0.86 eps (median 0.4)
  on the native kernels and 0.71 eps (median 0.23) on oneDNN's bfloat16; no correct port came closer
  than 0.43 of the allowance on either path, and a port computing the model in float32 and rounding
  once stays under 0.1 of it.  A float16 model computed in bfloat16 (three mantissa bits fewer) fails
  on 21 of 30 models at unit scale, its gradients on 26.
* Why ``HALF_GROWTH = 4``, not 8: half precision has no room for a factor 8 between torch's error and
  the next narrower format's.  On 90 float16 models (30 each at unit scale, with large values and with
  mixed scales) the bfloat16-inside-float16 port failed 29 with 4, 16 with 8.
* ``sensitivity``: the oracle on data moved by :func:`perturbation`, the floor (2 eps) rather than
  16 eps (16 eps of bfloat16 is an eighth of each value), plus eps times the largest ``|c|``.
* TINY, the smallest absolute tolerance, is float16's smallest normal number (6.1e-5) rather than 16
  times it: below it float16 keeps 10 bits or fewer, and 16 times it would be an eps at unit scale.

Range: float16 overflows past 65504 where bfloat16 (float32's range) and float64 do not.  An oracle
value past the dtype's range is judged as the infinity rounding to the dtype gives (:func:`held_in`),
so a port that overflows where the dtype must passes, and wherever torch itself returns NaN or an
infinity (a saturated gate's ``inf - inf``, an overflow the oracle does not have) a port returning the
same value passes too (:func:`within` with torch's result): a port may overflow where torch does, and
nowhere else.

Half-precision gradients follow "Gradients" with these floors and growth, and with one more term: a
parameter's gradient is a sum over every time step, and a port that adds each step's part to it in
half precision (as torch itself does for ``weight_hh`` and ``bias_hh``, whose parts come one step at a
time, while ``weight_ih`` and ``bias_ih`` come out of one matrix product over all steps) rounds about
``sqrt(steps)`` times an eps into it.  float32's floor of 16 eps covers that up to 256 steps; half
precision's 2 eps covers none, so a parameter's floor there is ``floor * sqrt(steps)``.  Measured:
Keras's float16 layer and a port with one fused gate matmul (both add one merged bias each step) were
8 eps off on a bias gradient over 65 steps, where torch, summing ``bias_ih`` in one product, was 1 eps
off.  Half-precision gradients are judged at unit scale only (the
gradient tests draw no scaled values or weights in half precision): beyond it, stacked layers with
weights x4 amplify the rounding of every intermediate, which neither torch's own error nor data moved
by rounding's size measures, and a correct port computing in bfloat16 with one fused gate matmul was
500 times torch's error on one such model.  What passes and fails in half precision is measured in
docs/performance.md.
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


def case_scale(expected: Any) -> float:
    """``scale`` of the policy for an :class:`~conformance.reference.Expected`: over the oracle's output,
    h_n and c_n, the call's x, h0 and c0, and the model's biases, so that a result made tiny by
    saturated gates (large inputs) is not taken for a tiny computation."""
    import torch

    arrays = list(expected.oracle.parts().values())
    for value in (expected.args[0], *(expected.args[1] if len(expected.args) > 1 else ())):
        value = value if isinstance(value, torch.Tensor) else getattr(value, "data", None)
        if isinstance(value, torch.Tensor):
            arrays.append(value.detach().double().numpy())
    biases = [p for name, p in expected.model.state_dict().items() if name.startswith("bias")]
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
