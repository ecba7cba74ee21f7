"""Gradient conformance (``conformance.gradients``), in-process and fast.

Every broken port of ``tests/ports/broken_gradients.py`` fails the gradient check on a small case, under
several seeds, with its likely bug named where a recogniser knows it; the correct ports pass; the
tolerance, the autograd-status check, the dropout-mask paths and .grad accumulation each behave as the
policy says.
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance.adapters import Capabilities
from conformance.arrays import LSTMConfig as C
from conformance.candidates import make_candidate
from conformance.case import Call, Case, Values
from conformance.compare import EPS, GROWTH, floor, gradient_scale, gradient_tolerance
from conformance.checks import check_double_backward, check_gradient_accumulation, check_gradients
from conformance.gradients import cotangent_sets, double_backward_reason, gradient_order, unsupported_reason
from conformance.registry import resolve
from conformance.verdict import ConformanceFailure
from tests.ports.adapters import ADAPTER_GRADIENTS_CATALOGUE
from tests.ports.broken_gradients import DOUBLE_BACKWARD_CATALOGUE, GRADIENTS_CATALOGUE, GRADIENTS_CORRECT

GRAD = dict(requires_grad=True)
HX_GRAD = dict(with_hx=True, hx_requires_grad=True)
UNSORTED = dict(packing="pack_padded_sequence", lengths=(2, 5, 3), enforce_sorted=False)
#: ports whose bug only the accumulation check shows
ACCUMULATION = {"grad-zeroed-in-forward"}

#: name -> (a small case on which the port's gradient bug shows, the recogniser that names it, or None)
GRADIENT_DIAGNOSES: dict[str, tuple[Case, object]] = {
    "state-detached-between-steps": (Case(C(3, 4), Call(5, 2, **GRAD)), "no-gradient-through-time"),
    "initial-state-detached": (Case(C(3, 4), Call(5, 2, **HX_GRAD)), "initial-state-no-gradient"),
    "wrong-sigmoid-derivative": (Case(C(3, 4), Call(5, 2, **GRAD)), None),
    "bias-hh-no-gradient": (Case(C(3, 4, num_layers=2), Call(5, 2)), "parameter-no-gradient"),
    "inputs-detached-between-layers": (Case(C(3, 4, num_layers=3), Call(5, 2, **GRAD)), "layers-cut-off"),
    "batch-first-backward-wrong": (Case(C(3, 4, batch_first=True), Call(5, 3, **GRAD)), "batch-first-gradient"),
    "cell-gradient-zeroed": (Case(C(3, 4), Call(5, 2, **GRAD)), "no-gradient-through-time"),
    "float32-backward": (Case(C(3, 4, dtype="float64"), Call(5, 2, **GRAD)), "float32-gradients"),
    "outputs-detached": (Case(C(3, 4), Call(5, 2, **GRAD)), "gradient-detached"),
    "grad-zeroed-in-forward": (Case(C(3, 4), Call(5, 2, **GRAD, **HX_GRAD)), None),
    "dropout-ignored-in-backward": (Case(C(3, 2, num_layers=2, dropout=0.4), Call(2, 2, training=True, **GRAD)),
                                    "dropout-ignored-in-backward"),
}

#: small cases over the axes, for the correct ports
AXES = [
    Case(C(3, 4), Call(5, 2, **GRAD)),
    Case(C(3, 4, num_layers=2, bidirectional=True, batch_first=True), Call(4, 3, **GRAD, **HX_GRAD)),
    Case(C(3, 5, proj_size=2, num_layers=2), Call(5, 3, **UNSORTED, **GRAD, **HX_GRAD)),
    Case(C(2, 3, bidirectional=True), Call(4, 3, packing="pack_sequence", lengths=(4, 4, 1), **GRAD)),
    Case(C(3, 4, num_layers=2, dtype="float64"), Call(5, None, **GRAD, **HX_GRAD)),
    Case(C(3, 4, bias=False), Call(3, 2, with_hx=True, same_state=True, hx_requires_grad=True)),
    Case(C(3, 4), Call(5, 2, layout="transposed", state_layout="expanded", **GRAD, **HX_GRAD)),
    Case(C(3, 4, num_layers=2, dropout=1.0), Call(4, 2, training=True, **GRAD)),
    Case(C(3, 2, num_layers=2, dropout=0.3), Call(2, 2, training=True, **GRAD)),  # mask recovered
    Case(C(3, 6, num_layers=3, dropout=0.3), Call(6, 3, training=True, **GRAD, **HX_GRAD)),  # layer 0 only
    Case(C(3, 4), Call(5, 2, x_values=Values(scale=1e4), **GRAD)),
    Case(C(3, 4), Call(5, 2, x_values=Values(zero_steps=(1,), zero_features=(2,)), **GRAD)),
    Case(C(3, 4), Call(5, 2, x_values=Values(special=(((1, 0, 2), "nan"),)), **GRAD)),
]
CORRECT = {"torch": "torch", "scratch": "tests.ports.scratch_lstm:ScratchLSTM",
           "float64-inside": "tests.ports.scratch_lstm:Float64InsideLSTM", "numpy": "numpy",
           "numpy-float64-inside": "tests.ports.adapters:Float64InsideNumpyLSTM",
           **{name: f"tests.ports.broken_gradients:{cls.__name__}" for name, cls in GRADIENTS_CORRECT.items()}}
SEEDS = (0, 1, 2, 3)


def _check(path: str, case: Case, diagnose: bool = False) -> None:
    """Every gradient check that applies to the port and the case."""
    candidate = resolve(path)
    check_gradients(candidate, case, diagnose=diagnose)
    if case.deterministic and candidate.kind == "drop-in":
        check_gradient_accumulation(candidate, case)
    if case.deterministic and double_backward_reason(candidate) is None:
        check_double_backward(candidate, case, diagnose=diagnose)


def _failure(path: str, case: Case) -> ConformanceFailure:
    with pytest.raises(ConformanceFailure) as info:
        _check(path, case, diagnose=True)
    return info.value


def _seeded(case: Case, seed: int) -> Case:
    return case.replace(seed=seed, weight_seed=seed)


def test_every_broken_gradient_port_has_a_case() -> None:
    assert set(GRADIENT_DIAGNOSES) == set(GRADIENTS_CATALOGUE)
    for cls in GRADIENTS_CATALOGUE.values():
        assert cls.__doc__ and len(cls.__doc__.strip().splitlines()) == 1, cls


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(GRADIENT_DIAGNOSES))
def test_broken_gradient_port_fails(name: str, seed: int) -> None:
    case, _ = GRADIENT_DIAGNOSES[name]
    path = f"tests.ports.broken_gradients:{GRADIENTS_CATALOGUE[name].__name__}"
    failure = _failure(path, _seeded(case, seed))
    assert failure.problems and all(p.kind == "gradient" for p in failure.problems), failure
    assert failure.check == ("gradients-accumulate" if name in ACCUMULATION else "gradients")


@pytest.mark.parametrize("name", list(GRADIENT_DIAGNOSES))
def test_broken_gradient_port_gets_its_hint(name: str) -> None:
    case, hint = GRADIENT_DIAGNOSES[name]
    failure = _failure(f"tests.ports.broken_gradients:{GRADIENTS_CATALOGUE[name].__name__}", case)
    assert (failure.hint.name if failure.hint else None) == hint, failure
    if hint:
        assert f"[{hint}]" in str(failure)


def test_the_forward_of_each_broken_gradient_port_is_exact() -> None:
    from conformance.checks import check_forward

    everything_dropped = Case(C(3, 4, num_layers=2, dropout=1.0), Call(4, 2, training=True))
    for name, (case, _) in GRADIENT_DIAGNOSES.items():
        port = resolve(f"tests.ports.broken_gradients:{GRADIENTS_CATALOGUE[name].__name__}")
        for each in (case, everything_dropped):
            check_forward(port, each)


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_ports_pass(name: str) -> None:
    for case in AXES:
        for seed in SEEDS[:2]:
            _check(CORRECT[name], _seeded(case, seed))


def test_every_gradient_recogniser_is_shown_by_a_port() -> None:
    from conformance.hints import GRADIENT_RECOGNISERS

    assert {hint for _, hint in GRADIENT_DIAGNOSES.values() if hint} == {r.name for r in GRADIENT_RECOGNISERS}


def test_a_correct_port_gets_no_gradient_hint_on_a_noisy_gradient() -> None:
    """Gradients off by a little everywhere: no recogniser may claim to know why."""
    from conformance.gradients import Gradients
    from conformance.hints import GradientEvidence, recognise_gradients
    from conformance.verdict import Problem

    case = Case(C(3, 4, num_layers=2), Call(5, 2, **GRAD, **HX_GRAD))
    rng = np.random.default_rng(0)
    oracle = {name: rng.normal(size=(4, 3)) for name in ("weight_ih_l1", "weight_ih_l0", "input", "h0")}
    compared = {}
    for name, o in oracle.items():
        mine = o + rng.normal(0, 1e-3, o.shape)
        tol = gradient_tolerance("float32", o, o)
        compared[name] = (tol, np.abs(mine - o) <= tol.atol, mine, o, False)
    grads = Gradients("a loss", oracle, oracle, {}, compared=compared)
    evidence = GradientEvidence(case, case.build()[1], [Problem("gradient", "...")], [grads])
    assert recognise_gradients(evidence) is None


# ------------------------------------------------------------------------------- where it says it differs


def test_the_failure_says_which_gradient_differs_and_where() -> None:
    failure = _failure("tests.ports.broken_gradients:BiasHhNoGradient", GRADIENT_DIAGNOSES["bias-hh-no-gradient"][0])
    assert [p.tensor for p in failure.problems] == ["bias_hh_l1", "bias_hh_l0"]  # the backward's order
    text = str(failure)
    assert "gradient w.r.t. bias_hh_l1" in text and "no gradient reaches it" in text
    assert "layer 1, gate blocks i, f, g, o" in text and "o the float64 oracle's gradient" in text


def test_a_wrong_gate_derivative_is_located_in_its_gate_blocks() -> None:
    case = Case(C(3, 4), Call(1, 2))  # one step from zero states: no forget gate, no through-time flow
    failure = _failure("tests.ports.broken_gradients:WrongSigmoidDerivative", case)
    first = failure.problems[0]
    assert first.tensor == "weight_ih_l0" and "gate blocks i, o" in first.detail, failure


def test_only_the_gradient_through_time_differs_is_said() -> None:
    failure = _failure("tests.ports.broken_gradients:CellGradientZeroed", Case(C(3, 4), Call(5, 2, **GRAD)))
    detail = next(p.detail for p in failure.problems if p.tensor == "input")
    assert "only the gradient flowing back through time differs" in detail, failure


def test_the_autograd_status_of_each_result_is_checked() -> None:
    failure = _failure("tests.ports.broken_gradients:OutputsDetached", Case(C(3, 4), Call(3, 2)))
    assert {p.tensor for p in failure.problems} == {"output", "h_n", "c_n"}
    assert all(p.rule == "autograd-status" for p in failure.problems)
    assert "requires_grad=False and no grad_fn; torch's has requires_grad=True and a grad_fn" in str(failure)


def test_a_packed_output_is_judged_in_each_ports_own_order() -> None:
    """Tied lengths past 16 rows are sorted differently by torch and a stable sort: the cotangent follows."""
    case = Case(C(2, 3), Call(2, 18, packing="pack_padded_sequence", lengths=(1,) * 18, enforce_sorted=False, **GRAD))
    check_gradients(resolve("tests.ports.scratch_lstm:ScratchLSTM"), case)


# ---------------------------------------------------------------------------------------- dropout paths


def test_dropout_gradients_use_the_recovered_mask_where_there_is_one() -> None:
    """DropoutIgnoredInBackward is caught only by comparing under the mask it drew: a recoverable case."""
    port = "tests.ports.broken_gradients:DropoutIgnoredInBackward"
    small = GRADIENT_DIAGNOSES["dropout-ignored-in-backward"][0]
    for seed in SEEDS:
        _failure(port, _seeded(small, seed))
    big = Case(C(3, 6, num_layers=3, dropout=0.3), Call(6, 3, training=True, **GRAD))  # not recoverable
    check_gradients(resolve(port), big)  # layer 0's states only: no mask reaches them


def test_a_loss_on_layer_0_states_still_catches_a_backward_bug_under_random_masks() -> None:
    case = Case(C(3, 6, num_layers=3, dropout=0.3), Call(6, 3, training=True, **GRAD, **HX_GRAD))
    failure = _failure("tests.ports.broken_gradients:StateDetachedBetweenSteps", case)
    assert all("layer 0's h_n and c_n only" in p.region for p in failure.problems), failure


# ------------------------------------------------------------------------------------- adapters' backward()

#: name -> a small case on which the adapter's backward() bug shows
ADAPTER_CASES: dict[str, Case] = {
    "backward-omits-bias-hh": Case(C(3, 4), Call(4, 2, **GRAD)),
    "backward-without-dropout-mask": Case(C(3, 2, num_layers=2, dropout=0.4), Call(2, 2, training=True, **GRAD)),
    "backward-states-in-sorted-order": Case(C(3, 4), Call(5, 3, **UNSORTED, **HX_GRAD)),
}


def test_every_broken_adapter_backward_has_a_case() -> None:
    assert set(ADAPTER_CASES) == set(ADAPTER_GRADIENTS_CATALOGUE)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(ADAPTER_CASES))
def test_a_broken_adapter_backward_fails_and_its_forward_is_exact(name: str, seed: int) -> None:
    from conformance.checks import check_forward

    path = f"tests.ports.adapters:{ADAPTER_GRADIENTS_CATALOGUE[name].__name__}"
    case = _seeded(ADAPTER_CASES[name], seed)
    check_forward(resolve(path), case)
    failure = _failure(path, case)
    assert failure.check == "gradients" and all(p.kind == "gradient" for p in failure.problems), failure


def test_an_adapter_backward_that_returns_no_dict_is_a_structure_problem() -> None:
    from tests.ports.adapters import BackwardOmitsBiasHh

    class ListBackward(BackwardOmitsBiasHh):
        def backward(self, input, hx, cotangents, *, training):
            return list(super().backward(input, hx, cotangents, training=training).values())

    with pytest.raises(ConformanceFailure) as info:
        check_gradients(make_candidate(ListBackward), Case(C(3, 4), Call(3, 2, **GRAD)))
    assert info.value.problems[0].kind == "structure" and "expected a dict" in info.value.problems[0].detail


# ------------------------------------------------------------------------------------------ double backward


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(DOUBLE_BACKWARD_CATALOGUE))
def test_a_broken_double_backward_fails_only_the_double_backward_check(name: str, seed: int) -> None:
    path = f"tests.ports.broken_gradients:{DOUBLE_BACKWARD_CATALOGUE[name].__name__}"
    for case in AXES[:3]:
        case = _seeded(case, seed)
        check_gradients(resolve(path), case)  # its first-order gradients are exact
        with pytest.raises(ConformanceFailure) as info:
            check_double_backward(resolve(path), case, diagnose=True)
        assert info.value.check == "double-backward", info.value
        assert "double backward" in str(info.value)


def test_a_declared_once_differentiable_port_is_not_asked_for_a_double_backward() -> None:
    port = resolve("tests.ports.broken_gradients:HandWrittenCellBackward")
    assert "double_backward=True" in double_backward_reason(port)
    assert double_backward_reason(resolve("torch")) is None
    with pytest.raises(ValueError):
        check_double_backward(port, AXES[0])


# ------------------------------------------------------------------------------------------ accumulation


def test_grad_accumulates_and_a_second_backward_adds_the_same() -> None:
    case = GRADIENT_DIAGNOSES["grad-zeroed-in-forward"][0]
    for name, path in CORRECT.items():
        if resolve(path).kind == "drop-in":
            check_gradient_accumulation(resolve(path), case)
    failure = _failure("tests.ports.broken_gradients:GradZeroedInForward", case)
    assert failure.problems[0].rule == "grad-not-accumulated" and "overwritten" in failure.problems[0].detail


# ----------------------------------------------------------------------------------------- the policy


def test_the_gradient_floor_is_relative_to_each_gradients_scale() -> None:
    small, large = np.full(3, 1e-3), np.full(3, 1e3)
    assert gradient_tolerance("float32", small, small).atol == pytest.approx(floor("float32") * 1e-3)
    assert gradient_tolerance("float32", large, large).atol == pytest.approx(floor("float32") * 1e3)
    assert gradient_tolerance("float64", large, large).atol == pytest.approx(floor("float64") * 1e3)


def test_a_half_precision_parameter_floor_grows_with_the_steps_it_sums_over() -> None:
    oracle = np.full(3, 2.0)
    for dtype in ("float16", "bfloat16"):
        assert gradient_tolerance(dtype, oracle, oracle).atol == pytest.approx(floor(dtype) * 2.0)
        assert gradient_tolerance(dtype, oracle, oracle, steps=64).atol == pytest.approx(floor(dtype) * 2.0 * 8)
    assert gradient_tolerance("float32", oracle, oracle, steps=64).atol == pytest.approx(floor("float32") * 2.0)


def test_the_gradient_tolerance_widens_by_torchs_error_the_sensitivity_and_the_case_scale() -> None:
    oracle = np.array([1.0, -2.0])
    assert gradient_tolerance("float32", oracle + 1e-5, oracle).atol == pytest.approx(GROWTH * 1e-5)
    assert gradient_tolerance("float32", oracle, oracle, oracle + 1e-4).atol == pytest.approx(GROWTH * 1e-4)
    vanished = np.array([1e-30, 0.0])
    assert gradient_tolerance("float32", vanished, vanished, case_scale=10.0).atol == pytest.approx(EPS["float32"] * 10)
    zero = np.zeros(2)
    assert 0 < gradient_tolerance("float32", zero, zero).atol < 1e-30  # an exact zero must stay (nearly) zero
    assert gradient_scale([np.array([np.nan, -3.0]), None, np.array([2.0])]) == 3.0


def test_a_more_accurate_port_passes_and_float32_gradients_of_a_float64_model_fail() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(8, 5))
    torch32 = truth * (1 + rng.normal(0, 3e-7, truth.shape))
    tol = gradient_tolerance("float32", torch32, truth)
    assert (np.abs(truth - truth) <= tol.atol).all()  # exact: more accurate than torch
    assert (np.abs(torch32 - truth) <= tol.atol + tol.rtol * np.abs(truth)).all()
    in_float32 = truth.astype(np.float32).astype(np.float64)
    tol64 = gradient_tolerance("float64", truth, truth, case_scale=gradient_scale([truth]))
    assert not (np.abs(in_float32 - truth) <= tol64.atol + tol64.rtol * np.abs(truth)).all()


# ----------------------------------------------------------------------------------------- the interface


def test_adapters_without_gradients_are_skipped_with_the_reason() -> None:
    numpy_port = resolve("tests.ports.adapters:LimitedNumpyLSTM")  # declares no gradients
    assert "gradients" in unsupported_reason(numpy_port)
    assert unsupported_reason(resolve("numpy")) is None and "adapters" in double_backward_reason(resolve("numpy"))
    assert unsupported_reason(resolve("torch")) is None
    import torch

    class Declared(torch.nn.LSTM):
        lstm_conformance_capabilities = Capabilities(errors="type")  # says nothing about gradients

    assert unsupported_reason(make_candidate(Declared)) is None  # a drop-in's default: checked
    assert Capabilities().without("proj_size").gradients is None
    with pytest.raises(ValueError):
        check_gradients(numpy_port, Case(C(3, 4), Call(2, 1)))


def test_losses_and_order() -> None:
    cfg = C(3, 4, num_layers=2, bidirectional=True)
    order = gradient_order(cfg)
    assert order[:2] == ["weight_ih_l1", "weight_hh_l1"] and order[-3:] == ["input", "h0", "c0"]
    assert cotangent_sets(Case(cfg, Call(2, 1)))[0] == ("output", "h_n", "c_n")  # seed 0: every result
    assert {cotangent_sets(Case(cfg, Call(2, 1, seed=s)))[0] for s in range(6)} >= {("h_n",), ("c_n",), ("output",)}


def test_a_gradient_failure_reproduces_with_its_command() -> None:
    from conformance import reproduce

    case, _ = GRADIENT_DIAGNOSES["bias-hh-no-gradient"]
    failure = _failure("tests.ports.broken_gradients:BiasHhNoGradient", case)
    command = reproduce.command("tests.ports.broken_gradients:BiasHhNoGradient", case, check=failure.check)
    assert " --gradients " in command
    assert reproduce.main("tests.ports.broken_gradients:BiasHhNoGradient", case, check="gradients") == 1
    assert reproduce.main("tests.ports.scratch_lstm:ScratchLSTM", case, check="gradients") == 0
    assert "check='gradients'" in reproduce.script("tests.ports.broken_gradients:BiasHhNoGradient", failure)


def test_a_port_whose_forward_differs_fails_as_the_forward_tests_do() -> None:
    """One root cause with the forward tests: the forward's failure, diagnosed, and its reproducer."""
    case = Case(C(3, 4), Call(5, 2, **GRAD, **HX_GRAD))
    for check in ("gradients", "gradients-accumulate", "double-backward"):
        with pytest.raises(ConformanceFailure) as info:
            from conformance.checks import run_gradients

            run_gradients(resolve("tests.ports.broken:OnnxGateOrder"), case, check, diagnose=True)
        assert info.value.check == "forward" and info.value.hint.name == "gate-order", info.value
