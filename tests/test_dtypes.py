"""Model dtypes by name: NumPy and torch forms, and conversions that keep a view's strides."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from conformance import dtypes
from conformance.adapters import Capabilities


@pytest.mark.parametrize("name", dtypes.DTYPES)
def test_each_dtype_has_a_numpy_and_a_torch_form(name: str) -> None:
    assert dtypes.torch_dtype(name) == getattr(torch, name)
    assert dtypes.numpy_dtype(name) == (np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name))
    assert dtypes.eps(name) == torch.finfo(getattr(torch, name)).eps
    assert dtypes.largest(name) == torch.finfo(getattr(torch, name)).max
    assert dtypes.smallest_normal(name) == torch.finfo(getattr(torch, name)).smallest_normal


@pytest.mark.parametrize("name", dtypes.DTYPES)
def test_a_view_converts_with_its_strides_and_values_both_ways(name: str) -> None:
    base = torch.randn(4, 6, 3, dtype=getattr(torch, name))
    view = base.transpose(0, 1)[::2]  # transposed and strided
    array = dtypes.to_numpy(view)
    assert array.dtype == dtypes.numpy_dtype(name) and dtypes.is_floating(array)
    assert array.strides == tuple(s * base.element_size() for s in view.stride())
    assert np.array_equal(array.astype(np.float64), view.double().numpy())
    back = dtypes.to_torch(array)
    assert back.dtype == view.dtype and torch.equal(back, view)


def test_an_expanded_bfloat16_view_keeps_its_zero_stride() -> None:
    row = torch.randn(1, 5, dtype=torch.bfloat16).expand(3, 5)
    assert dtypes.to_numpy(row).strides[0] == 0


def test_unknown_dtypes_are_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        dtypes.numpy_dtype("int8")
    with pytest.raises(ValueError, match=r"unknown dtypes \['float8'\]"):
        Capabilities(dtypes={"float32", "float8"})


def test_integers_are_not_floating() -> None:
    assert not dtypes.is_floating(np.zeros(2, np.int16))
