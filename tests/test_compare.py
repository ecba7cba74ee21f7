"""The tolerance policy: accurate ports pass, float32 accuracy on float64 models fails."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from conformance.adapters import Capabilities
from conformance.arrays import LSTMConfig
from conformance.case import Call, Case, Values
from conformance import dtypes
from conformance.compare import (GROWTH, HALF_FLOOR, HALF_GROWTH, compare_values, floor, growth, held_in,
                                 perturbation, tolerance, value_scale, within)
from conformance.strategies import focus_cases


def _lstm_outputs(dtype: torch.dtype, seq_len: int = 120, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A float64 model's output, and the same model computed in float32 (a 'float32 inside' port);
    with ``scale`` != 1 the inputs are scaled and the model has no bias."""
    torch.manual_seed(0)
    model = torch.nn.LSTM(6, 70, num_layers=2, bidirectional=True, bias=scale == 1.0, dtype=torch.float64)
    x = torch.randn(seq_len, 3, 6, dtype=torch.float64) * scale
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
    from conformance.verdict import Problem

    text = Problem("values", mismatch=mismatch, tensor="h_n").message
    assert "h_n: 2 of 24 elements differ" in text and "at (1, 2, 3)" in text and "at (0, 0, 0)" in text


def test_nan_where_the_oracle_is_finite_is_a_mismatch() -> None:
    oracle = np.ones((3,))
    actual = oracle.copy()
    actual[1] = np.nan
    mismatch = compare_values("c_n", actual, oracle, tolerance("float32", oracle, oracle))
    assert mismatch is not None and mismatch.mismatched == 1 and mismatch.max_abs_index == (1,)


def test_nan_and_inf_must_be_where_the_oracle_has_them() -> None:
    oracle = np.array([np.nan, np.inf, -np.inf, 0.5, 0.0])
    tol = tolerance("float32", oracle, oracle)
    assert compare_values("c_n", oracle.copy(), oracle, tol) is None  # the same NaN and infinities agree
    for index, value in ((0, 0.5), (1, -np.inf), (2, 1e30), (3, np.nan), (4, np.inf)):
        actual = oracle.copy()
        actual[index] = value
        mismatch = compare_values("c_n", actual, oracle, tol)
        assert mismatch is not None and mismatch.mismatched == 1 and mismatch.max_abs_index == (index,), value
        assert mismatch.special and "first at (%d)" % index in mismatch.special


def test_signed_zeros_are_equal() -> None:
    oracle = np.zeros(3)
    assert compare_values("output", -oracle, oracle, tolerance("float64", oracle, oracle, scale=0.0)) is None


def test_torchs_own_error_ignores_the_special_elements() -> None:
    oracle = np.array([np.nan, np.inf, 1.0, 2.0])
    reference = np.array([np.nan, 3.0e38, 1.0 + 1e-7, 2.0])  # float32 overflowed less far than float64
    tol = tolerance("float32", reference, oracle)
    assert tol.torch_error == pytest.approx(1e-7) and tol.atol == floor("float32")


def test_a_tiny_case_is_judged_at_its_own_scale() -> None:
    """With every value near 1e-7 a fixed floor of 1.9e-6 would pass anything, zeros included."""
    exact, low = _lstm_outputs(torch.float32, seq_len=5, scale=1e-6)
    scale = value_scale([exact])
    assert 1e-7 < scale < 1e-4
    tol = tolerance("float32", low.astype(np.float32), exact, scale=scale)
    assert compare_values("output", low.astype(np.float32), exact, tol) is None  # torch itself passes
    assert compare_values("output", np.zeros_like(exact), exact, tol) is not None
    assert compare_values("output", np.zeros_like(exact), exact, tolerance("float32", low, exact)) is None
    assert value_scale([np.full(3, 0.2), np.array([np.nan])]) == 1.0 and value_scale([np.zeros(0)]) == 1.0


#: Cases at the scales the values axis draws: (name, case).  Weights x4 come with short sequences.
SCALES = {
    "unit": Case(LSTMConfig(5, 6, num_layers=2), Call(6, 3, with_hx=True)),
    "input 1e4": Case(LSTMConfig(5, 6, num_layers=2), Call(6, 3, x_values=Values(scale=1e4))),
    "c0 1e4": Case(LSTMConfig(5, 6), Call(6, 3, with_hx=True, c0_values=Values(scale=1e4))),
    "mixed features": Case(LSTMConfig(8, 6, bidirectional=True), Call(6, 3, x_values=Values(feature_decades=(-6, 4)))),
    "tiny, no bias": Case(LSTMConfig(5, 6, bias=False),
                          Call(6, 3, with_hx=True, x_values=Values(scale=1e-6), h0_values=Values(scale=1e-6),
                               c0_values=Values(scale=1e-6))),
    "weights x4": Case(LSTMConfig(5, 6, num_layers=2), Call(6, 3), weight_scale=4.0),
}
CORRECT_PORTS = ("numpy", "tests.ports.adapters:Float64InsideNumpyLSTM", "tests.ports.scratch_lstm:ScratchLSTM",
                 "tests.ports.scratch_lstm:Float64InsideLSTM")


@pytest.mark.parametrize("scale", list(SCALES))
def test_correct_ports_pass_and_float32_inside_fails_at_every_scale(scale: str) -> None:
    from conformance.checks import check_forward
    from conformance.registry import resolve
    from conformance.verdict import ConformanceFailure

    for seed in range(3):
        case = SCALES[scale].replace(seed=seed, weight_seed=seed)
        for port in CORRECT_PORTS:
            for dtype in ("float32", "float64"):
                check_forward(resolve(port), case.replace(dtype=dtype))
        with pytest.raises(ConformanceFailure):
            check_forward(resolve("tests.ports.broken:Float32Inside"), case.replace(dtype="float64"))


#: Per-feature scales from 1e4 down to 1e-6: a few gate sums cancel from 1e4-sized terms back into
#: the linear range, and those few elements carry most of the rounding (found with the NumPy port).
CANCELLING = (
    Case(LSTMConfig(25, 76), Call(7, 4, with_hx=True, seed=26, x_values=Values(feature_decades=(4, -6))),
         weight_seed=26),
    Case(LSTMConfig(33, 57, bidirectional=True),
         Call(8, 4, with_hx=True, seed=86, x_values=Values(feature_decades=(4, -6))), weight_seed=86),
    Case(LSTMConfig(26, 58, num_layers=2),
         Call(3, 4, with_hx=True, seed=176, x_values=Values(feature_decades=(4, -6))), weight_seed=176),
)


@pytest.mark.parametrize("case", CANCELLING, ids=repr)
def test_where_a_few_elements_carry_the_rounding_the_policy_measures_it(case: Case) -> None:
    """torch's own error there is one random draw; how far the oracle moves on data moved by rounding's
    size is not, and a correct port (and torch itself, as a candidate) passes."""
    from conformance.checks import check_forward
    from conformance.reference import reference_for
    from conformance.registry import resolve

    for port in ("numpy", "torch", "tests.ports.scratch_lstm:ScratchLSTM"):
        check_forward(resolve(port), case)
    expected = reference_for(case)
    assert expected.perturbed is not None and reference_for(case.replace(x_values=Values())).perturbed is None
    parts = expected.oracle.parts().items()
    reference, perturbed = expected.torch.parts(), expected.perturbed.parts()
    sensitivity = [tolerance("float32", reference[name], truth, perturbed=perturbed[name]) for name, truth in parts]
    assert any(tol.sensitivity > tol.torch_error for tol in sensitivity)


def test_the_sensitivity_widens_atol_like_torchs_own_error() -> None:
    oracle = np.zeros(4)
    tol = tolerance("float32", oracle, oracle, perturbed=oracle + 1e-3)
    assert tol.sensitivity == pytest.approx(1e-3) and tol.atol == pytest.approx(GROWTH * 1e-3)
    assert tolerance("float32", oracle, oracle, perturbed=np.array([np.nan, 1e-9, 0, 0])).atol == floor("float32")


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(focus_cases(Capabilities(dtypes={"float32"}), "special_values"))
def test_torch_and_its_oracle_put_nan_and_inf_at_the_same_positions(case: Case) -> None:
    """What the policy relies on: on every generated case with special values, torch's float32 result
    and its float64 evaluation agree on which elements are NaN, inf and -inf."""
    from conformance.reference import reference_for

    expected = reference_for(case)
    for name, truth in expected.oracle.parts().items():
        mine = expected.torch.parts()[name].astype(np.float64)
        for special in (np.isnan, np.isposinf, np.isneginf):
            assert np.array_equal(special(mine), special(truth)), (name, special.__name__)


def test_a_result_made_tiny_by_saturated_gates_is_judged_at_unit_scale() -> None:
    """x at 1e2 drives the input gate to sigmoid(-17) ~ 3e-8, so c_n = i * g is tiny; the computation is
    not.  A port computing sigmoid to absolute float precision (0.5 + 0.5 * tanh(x / 2)) passes."""
    from conformance.checks import check_forward
    from conformance.compare import case_scale, within
    from conformance.reference import reference_for
    from conformance.registry import resolve

    case = Case(LSTMConfig(2, 1), Call(1, x_values=Values(scale=100.0)))
    port = resolve("tests.ports.broken_values:HalfTanhSigmoid")
    check_forward(port, case)
    expected = reference_for(case)
    assert case_scale(expected) == 1.0 and value_scale(expected.oracle.parts().values()) < 1e-6
    got = port.run(port.build(case.config, expected.model.state_dict()), expected.args, False, False).c_n
    truth = expected.oracle.c_n  # held to its own tiny size, the port's c_n would fail
    assert not within(got, truth, tolerance("float32", truth, truth, scale=value_scale([truth]))).all()


def test_a_large_cell_state_multiplies_the_gates_absolute_error() -> None:
    oracle = np.zeros(3)
    tol = tolerance("float32", oracle, oracle, perturbed=oracle, cell=1e4)
    assert tol.sensitivity == pytest.approx(float(np.finfo(np.float32).eps) * 1e4)
    assert tol.atol == pytest.approx(GROWTH * tol.sensitivity)
    assert tolerance("float32", oracle, oracle, cell=1e4).atol == floor("float32")  # unit scale: not measured


@pytest.mark.parametrize("port", ["numpy", "tests.ports.scratch_lstm:ScratchLSTM"])
def test_nan_goes_through_a_layer_dropped_entirely(port: str) -> None:
    """dropout=1.0 in training multiplies layer 0's output by a zero mask: torch's NaN stays NaN."""
    from conformance.checks import check_forward
    from conformance.reference import reference_for
    from conformance.registry import resolve

    case = Case(LSTMConfig(1, 1, num_layers=2, dropout=1.0), Call(1, training=True,
                                                                    x_values=Values(special=(((0, 0, 0), "nan"),))))
    assert np.isnan(reference_for(case).oracle.output).all()
    check_forward(resolve(port), case)


# ------------------------------------------------------------------------------ half precision


def _half_results(dtype: torch.dtype, inside: torch.dtype, seed: int) -> tuple[dict, dict, dict]:
    """A ``dtype`` model's float64 oracle (on its rounded weights, input and states), torch's own result, and
    the model computed in ``inside`` (a port computing in another precision) rounded to ``dtype``: output,
    h_n and c_n each, as float64 arrays."""
    torch.manual_seed(seed)
    model = torch.nn.LSTM(5, 8, num_layers=2, bidirectional=True, dtype=dtype)
    x, h0, c0 = torch.randn(6, 3, 5, dtype=dtype), torch.randn(4, 3, 8, dtype=dtype), torch.randn(4, 3, 8, dtype=dtype)

    def run(module: torch.nn.Module, cast: torch.dtype) -> dict:
        with torch.no_grad():
            output, (h_n, c_n) = copy.deepcopy(module).to(cast)(x.to(cast), (h0.to(cast), c0.to(cast)))
        return {name: t.to(dtype).double().numpy() if cast != torch.float64 else t.numpy()
                for name, t in (("output", output), ("h_n", h_n), ("c_n", c_n))}

    return run(model, torch.float64), run(model, dtype), run(model, inside)


def _passes(dtype: torch.dtype, inside: torch.dtype, seed: int) -> bool:
    oracle, reference, port = _half_results(dtype, inside, seed)
    name = str(dtype).removeprefix("torch.")
    return all(compare_values(k, port[k], oracle[k], tolerance(name, reference[k], oracle[k])) is None for k in oracle)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_model_computed_in_float32_and_rounded_once_passes(dtype: torch.dtype) -> None:
    assert all(_passes(dtype, torch.float32, seed) for seed in range(10))
    assert all(_passes(dtype, dtype, seed) for seed in range(10))  # torch itself


def test_a_float16_model_computed_in_bfloat16_fails_on_most_models() -> None:
    failed = sum(not _passes(torch.float16, torch.bfloat16, seed) for seed in range(10))
    assert failed >= 6, f"bfloat16 arithmetic passed as float16 on {10 - failed} of 10 models"


def test_half_floors_sit_between_the_dtypes_rounding_and_the_next_narrower_dtype() -> None:
    assert floor("float16") == HALF_FLOOR * dtypes.eps("float16") < dtypes.eps("bfloat16")
    assert floor("bfloat16") == HALF_FLOOR * dtypes.eps("bfloat16")
    assert growth("float16") == growth("bfloat16") == HALF_GROWTH < growth("float32") == GROWTH
    assert perturbation("float32") == 16 * dtypes.eps("float32") and perturbation("float16") == floor("float16")


def test_an_oracle_value_past_float16s_range_is_held_as_the_infinity_rounding_gives() -> None:
    oracle = np.array([65519.0, 65520.0, -1e5, 1e6, np.nan])
    held = held_in(oracle, "float16")
    assert held[0] == 65519.0 and held[1] == np.inf and held[2] == -np.inf and held[3] == np.inf
    assert np.isnan(held[4])
    assert np.array_equal(held_in(oracle[:4], "bfloat16"), oracle[:4])  # float32's range
    assert held_in(np.array([1e300]), "float32")[0] == np.inf
    assert held_in(np.array([1e300]), "float64")[0] == 1e300


def test_an_overflow_passes_only_where_torch_overflows_too() -> None:
    oracle = np.array([1.0, 2.0])
    tol = tolerance("float16", oracle, oracle)
    torch_overflowed = np.array([np.inf, 2.0])
    assert within(np.array([np.inf, 2.0]), oracle, tol, reference=torch_overflowed).all()  # as torch does
    assert within(np.array([1.0, 2.0]), oracle, tol, reference=torch_overflowed).all()  # as the oracle says
    assert not within(np.array([-np.inf, 2.0]), oracle, tol, reference=torch_overflowed)[0]
    assert not within(np.array([1.0, np.inf]), oracle, tol, reference=torch_overflowed)[1]
    assert not within(np.array([np.inf, 2.0]), oracle, tol)[0]  # without torch's result: the oracle alone
    held = held_in(np.array([-1e6]), "float16")  # -inf: past float16's range
    assert within(np.array([np.nan]), held, tol, reference=np.array([np.nan])).all()  # torch's inf - inf
    assert not within(np.array([np.nan]), held, tol).all()
