"""The floating-point dtypes a model may have, by name, and their NumPy and torch forms.

A model's dtype is named as torch names it: ``"float32"``, ``"float64"``, ``"float16"`` or
``"bfloat16"``.  NumPy has float16 but no bfloat16: an adapter receives and returns bfloat16
values as arrays of ``ml_dtypes.bfloat16`` (the bfloat16 type JAX, TensorFlow and ONNX use in
NumPy; ``numpy_dtype("bfloat16")`` gives it), and float16 as ``numpy.float16``.  Conversions keep
a view's strides, so an adapter sees the caller's memory layout in every dtype.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["DTYPES", "FULL", "HALF", "eps", "is_floating", "largest", "numpy_dtype", "smallest_normal", "to_numpy",
           "to_torch", "torch_dtype"]

#: Every dtype a port may declare, full precision first (the order the generator prefers them in).
DTYPES = ("float32", "float64", "float16", "bfloat16")
FULL = frozenset({"float32", "float64"})
HALF = frozenset({"float16", "bfloat16"})

_NUMPY = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64), "float16": np.dtype(np.float16),
          "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def _known(name: str) -> str:
    if name not in _NUMPY:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}")
    return name


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a model dtype's arrays (``ml_dtypes.bfloat16`` for bfloat16)."""
    return _NUMPY[_known(name)]


def torch_dtype(name: str) -> Any:
    """``torch.float32`` and so on."""
    import torch

    return getattr(torch, _known(name))


def eps(name: str) -> float:
    """The dtype's machine epsilon: the gap between 1 and the next larger value."""
    return float(ml_dtypes.finfo(numpy_dtype(name)).eps)


def smallest_normal(name: str) -> float:
    return float(ml_dtypes.finfo(numpy_dtype(name)).smallest_normal)


def largest(name: str) -> float:
    """The largest finite value of the dtype."""
    return float(ml_dtypes.finfo(numpy_dtype(name)).max)


def is_floating(array: np.ndarray) -> bool:
    """Whether an array holds floating-point values (bfloat16 too, which NumPy does not count as floating)."""
    return np.issubdtype(array.dtype, np.floating) or array.dtype == _NUMPY["bfloat16"]


def to_numpy(tensor: Any) -> np.ndarray:
    """A tensor's values as a NumPy array sharing its memory and strides; bfloat16 as ``ml_dtypes.bfloat16``."""
    import torch

    tensor = tensor.detach().cpu().resolve_conj()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(_NUMPY["bfloat16"])
    return tensor.numpy()


def to_torch(array: np.ndarray) -> Any:
    """A NumPy array (``ml_dtypes.bfloat16`` included) as a tensor sharing its memory and strides."""
    import torch

    if array.dtype == _NUMPY["bfloat16"]:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)
