"""The tolerance policy: accurate ports pass, float32 accuracy on float64 models fails."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conformance.compare import GROWTH, compare_values, floor, tolerance


def _lstm_outputs(dtype: torch.dtype, seq_len: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """A float64 model's output, and the same model computed in float32 (a 'float32 inside' port)."""
    torch.manual_seed(0)
    model = torch.nn.LSTM(6, 70, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(seq_len, 3, 6, dtype=torch.float64)
    exact = model(x)[0].detach().numpy()
    low = copy.deepcopy(model).to(dtype)(x.to(dtype))[0].detach().double().numpy()
    return exact, low


def test_float32_arithmetic_on_a_float64_model_fails() -> None:
    exact, low = _lstm_outputs(torch.float32)
    tol = tolerance("float64", exact, exact)
    mismatch = compare_values("output", low, exact, tol)
    assert mismatch is not None
    assert mismatch.mismatched > mismatch.total // 2


def test_torch_float32_against_the_float64_oracle_passes_its_own_policy() -> None:
    exact, low = _lstm_outputs(torch.float32)
    tol = tolerance("float32", low.astype(np.float32), exact)
    assert compare_values("output", low.astype(np.float32), exact, tol) is None


def test_a_port_more_accurate_than_torch_passes() -> None:
    exact, low = _lstm_outputs(torch.float32)
    tol = tolerance("float32", low.astype(np.float32), exact)
    assert compare_values("output", exact.astype(np.float32), exact, tol) is None


def test_tolerance_grows_with_torchs_own_error_only_beyond_the_floor() -> None:
    oracle = np.zeros(4)
    assert tolerance("float32", oracle + 1e-9, oracle).atol == floor("float32")
    assert tolerance("float32", oracle + 1e-3, oracle).atol == pytest.approx(GROWTH * 1e-3)
    assert tolerance("float64", oracle, oracle).atol == floor("float64")
    assert 1e-13 < floor("float64") < 1e-10 < 1e-7 < floor("float32") < 1e-5


def test_mismatch_statistics_name_counts_and_worst_elements() -> None:
    oracle = np.linspace(0.5, 1.0, 24).reshape(2, 3, 4)
    actual = oracle.copy()
    actual[1, 2, 3] += 0.5    # the largest absolute difference (oracle value 1.0: relative 0.5)
    actual[0, 0, 0] *= 1.6    # the largest relative difference (oracle value 0.5: absolute 0.3)
    mismatch = compare_values("h_n", actual, oracle, tolerance("float64", oracle, oracle))
    assert mismatch is not None
    assert (mismatch.mismatched, mismatch.total) == (2, 24)
    assert mismatch.max_abs_index == (1, 2, 3) and mismatch.max_abs == pytest.approx(0.5)
    assert mismatch.max_rel_index == (0, 0, 0)
    assert mismatch.max_rel == pytest.approx(0.6)
    text = mismatch.describe()
    assert "2 / 24" in text and "index (1, 2, 3)" in text and "index (0, 0, 0)" in text


def test_nan_where_the_oracle_is_finite_is_a_mismatch() -> None:
    oracle = np.ones((3,))
    actual = oracle.copy()
    actual[1] = np.nan
    mismatch = compare_values("c_n", actual, oracle, tolerance("float32", oracle, oracle))
    assert mismatch is not None and mismatch.mismatched == 1 and mismatch.max_abs_index == (1,)
