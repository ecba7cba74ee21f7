"""Dropout masks recovered from a port's result, and the statistics of masks over many calls."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from conformance import dropout
from conformance.arrays import LSTMConfig as C
from conformance.case import Call, Case
from conformance.checks import check_forward
from conformance.dropout import DROPPED, KEPT, PADDING, UNKNOWN, recover
from conformance.outcome import from_torch
from conformance.reference import reference_for
from conformance.registry import resolve
from conformance.verdict import ConformanceFailure
from tests.ports.scratch_lstm import ScratchLSTM

#: small training cases over the axes recovery has to get right: layouts, directions, projections,
#: packed lengths and order, hx, dtypes, three layers
CASES = [
    Case(C(3, 2, num_layers=2, dropout=0.3), Call(4, 3, training=True)),
    Case(C(2, 3, num_layers=3, dropout=0.5, bidirectional=True), Call(2, 1, training=True, with_hx=True)),
    Case(C(2, 3, num_layers=3, dropout=0.6, batch_first=True, proj_size=2), Call(2, 2, training=True, with_hx=True)),
    Case(C(2, 3, num_layers=2, dropout=0.5), Call(2, None, training=True, with_hx=True)),
    Case(C(2, 2, num_layers=2, dropout=0.5, bidirectional=True),
         Call(2, 3, training=True, packing="pack_padded_sequence", lengths=(1, 2, 2), enforce_sorted=False)),
    Case(C(1, 2, num_layers=2, dropout=0.2, batch_first=True, dtype="float64"),
         Call(3, 3, training=True, packing="pack_sequence", lengths=(3, 1, 2), enforce_sorted=False), weight_seed=7),
]


class RecordingDropout(ScratchLSTM):
    """A correct port that keeps the masks it drew, to be compared with the recovered ones."""

    def forward(self, input, hx=None):
        self.drawn = []
        return super().forward(input, hx)

    def _layer_output_dropout(self, output, layer):
        if layer < self.num_layers - 1 and self.training and 0 < self.dropout < 1:
            keep = torch.bernoulli(torch.full_like(output, 1.0 - self.dropout))
            self.drawn.append(keep)
            return output * keep / (1.0 - self.dropout)
        return super()._layer_output_dropout(output, layer)


class OneElementOff(ScratchLSTM):
    """Correct dropout, but one element of the output is moved: at the last step, batch element 1, feature 0."""

    def forward(self, input, hx=None):
        output, hx = super().forward(input, hx)
        output = output.clone()
        output[-1, 1, 0] += 0.25
        return output, hx


def _run(port: type, case: Case):
    expected = reference_for(case)
    candidate = resolve(f"{port.__module__}:{port.__qualname__}")
    instance = candidate.build(case.config, expected.model.state_dict())
    return instance, expected, candidate.run(instance, expected.args, True, case.call.packed)


def _time_major_masks(port: RecordingDropout, case: Case) -> list[np.ndarray]:
    """The masks a RecordingDropout drew, as (T, N, F) in the caller's batch order (PADDING past the ends)."""
    from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

    masks = []
    for keep in port.drawn:
        if case.call.packed:
            packed = PackedSequence(keep, *port._packed[1:])
            padded, lengths = pad_packed_sequence(packed, padding_value=PADDING)
            masks.append(padded.numpy().astype(np.int8))
        else:
            masks.append(keep.numpy().astype(np.int8))
    return masks


class RecordingPackedDropout(RecordingDropout):
    def _forward_packed(self, input, hx):
        self._packed = input
        return super()._forward_packed(input, hx)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_the_masks_a_port_drew_are_recovered(index: int) -> None:
    case = CASES[index]
    port, expected, got = _run(RecordingPackedDropout, case)
    recovery = recover(case, expected, got)
    assert recovery is not None and not recovery.problems and recovery.judged
    drawn = _time_major_masks(port, case)
    assert len(recovery.masks) == len(drawn) == case.config.num_layers - 1
    for mine, truth in zip(recovery.masks, drawn):
        known = mine != UNKNOWN
        assert known.mean() > 0.9  # a mask element is ambiguous only where torch's value is next to 0
        assert np.array_equal(mine[known], truth[known])


@pytest.mark.parametrize("path", ["torch", "numpy", "tests.ports.broken_dropout:NumpyRngDropout",
                                  "tests.ports.broken_dropout:TransposedBernoulliDropout"])
def test_correct_ports_are_explained(path: str) -> None:
    for case in CASES:
        if path == "numpy" and case.config.proj_size:
            continue
        check_forward(resolve(path), case)


def test_an_element_no_legal_mask_explains_is_named() -> None:
    case = CASES[0]
    _, expected, got = _run(OneElementOff, case)
    problems = recover(case, expected, got, call=1).problems
    assert [(p.tensor, p.rule) for p in problems] == [("output", "no-legal-dropout-mask")]
    mismatch = problems[0].mismatch
    assert mismatch.mismatched == 1 and mismatch.max_abs_index == (3, 1, 0)
    assert "no legal dropout mask explains layer 1" in problems[0].message


def test_a_batch_first_mismatch_is_named_in_the_returned_layout() -> None:
    case = Case(C(3, 2, num_layers=2, dropout=0.3, batch_first=True), Call(4, 3, training=True))

    class BatchFirstOff(ScratchLSTM):
        def forward(self, input, hx=None):
            output, hx = super().forward(input, hx)
            output = output.clone()
            output[1, -1, 0] += 0.25  # batch element 1, last step
            return output, hx

    expected = reference_for(case)
    instance = BatchFirstOff(**case.config.torch_kwargs())
    instance.load_state_dict(expected.model.state_dict())
    got = from_torch(instance.train()(*expected.args), False)
    problems = recover(case, expected, got).problems
    assert problems and problems[0].mismatch.max_abs_index == (1, 3, 0)


def test_masks_that_lead_to_the_same_result_are_unknown_not_guessed() -> None:
    """Layer 0 with zero weights outputs zeros: every mask of it explains the result equally well."""
    case = CASES[0]
    expected = reference_for(case)
    with torch.no_grad():
        for name, value in expected.model.named_parameters():
            if name.endswith("_l0"):
                value.zero_()
    got = from_torch(expected.model(*expected.args), False)
    recovery = recover(case, expected, got)
    assert not recovery.problems and (recovery.masks[0] == UNKNOWN).all() and not recovery.complete


def test_cases_too_big_to_enumerate_are_not_recovered() -> None:
    assert not dropout.recoverable(Case(C(3, 4, num_layers=2, dropout=0.5), Call(5, 2, training=True)))
    assert not dropout.recoverable(Case(C(3, 2, num_layers=2, dropout=0.5), Call(4, 2)))  # eval mode
    assert not dropout.recoverable(Case(C(3, 2, num_layers=2, dropout=1.0), Call(4, 2, training=True)))
    assert dropout.recoverable(Case(C(3, 3, num_layers=2, dropout=0.5), Call(4, 1, training=True)))
    assert not dropout.recoverable(Case(C(3, 3, num_layers=2, dropout=0.5), Call(4, 2, training=True)))  # 2 * 2**12
    assert recover(Case(C(3, 4, num_layers=2, dropout=0.5), Call(5, 2, training=True)), None, None) is None


def test_the_what_ifs_explain_a_wrong_rule() -> None:
    from tests.ports.broken_dropout import DropoutOnInput, DropoutUnscaled

    case = Case(C(2, 3, num_layers=2, dropout=0.5), Call(2, 2, training=True))
    _, expected, got = _run(DropoutUnscaled, case)
    assert recover(case, expected, got).problems
    assert not recover(case, expected, got, scale=1.0).problems
    _, expected, got = _run(DropoutOnInput, case)
    assert not recover(case, expected, got, input_dropout=True).problems
    _, expected, got = _run(ScratchLSTM, case)
    assert recover(case, expected, got, input_dropout=True).problems  # a correct port is not explained that way


# --------------------------------------------------------------------------------------- statistics


def _exact_tail(k: int, n: int, q: Fraction, upper: bool) -> Fraction:
    js = range(k, n + 1) if upper else range(0, k + 1)
    return sum((math.comb(n, j) * q ** j * (1 - q) ** (n - j) for j in js), Fraction(0))


@pytest.mark.parametrize("n,q", [(1, "0.3"), (10, "0.3"), (25, "0.58"), (40, "0.9")])
def test_binomial_tails_are_exact(n: int, q: str) -> None:
    for k in range(n + 1):
        for upper in (True, False):
            assert dropout.binomial_tail(k, n, float(q), upper) == _exact_tail(k, n, Fraction(q), upper)


@pytest.mark.parametrize("n,q,alpha", [(30, "0.3", 1e-2), (200, "0.58", 1e-3), (500, "0.3", 1e-6)])
def test_the_rate_test_rejects_a_correct_port_with_probability_at_most_alpha(n: int, q: str, alpha: float) -> None:
    rejected = [k for k in range(n + 1) if dropout.binomial_rejects(k, n, float(q), alpha)]
    assert rejected  # the test can reject at all
    size = sum(math.comb(n, k) * Fraction(q) ** k * (1 - Fraction(q)) ** (n - k) for k in rejected)
    assert size <= Fraction(repr(alpha))


@pytest.mark.parametrize("pairs", [1, 6, 40, 300])
def test_the_independence_test_rejects_independent_draws_with_probability_at_most_alpha(pairs: int) -> None:
    """Given the drops, its size is at most alpha for every number of drops: so at every rate."""
    alpha = 1e-3 if pairs < 300 else 1e-6
    for drops in range(0, 2 * pairs + 1, max(1, pairs // 7)):
        weights = dropout.discordance_weights(pairs, drops)
        total = math.comb(2 * pairs, drops)
        assert sum(weights.values()) == total
        rejected = sum(n for d, n in weights.items() if dropout.independence_rejects(d, pairs, drops, alpha))
        assert Fraction(rejected, total) <= Fraction(repr(alpha))
    assert dropout.independence_rejects(0, 300, 300)  # every pair alike: rejected


def _draws(calls: int, shape: tuple, p: float, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[np.where(rng.random(shape) < p, DROPPED, KEPT).astype(np.int8)] for _ in range(calls)]


def test_independent_masks_at_rate_p_pass() -> None:
    for seed in range(5):
        assert dropout.mask_statistics(_draws(60, (4, 3, 2), 0.3, seed), 0.3) == []


def _rules(masks: list, p: float = 0.3) -> list[str]:
    return [problem.rule for problem in dropout.mask_statistics(masks, p)]


def test_each_departure_from_independent_draws_is_named() -> None:
    draws = _draws(60, (4, 3, 2), 0.3)
    assert _rules([[np.broadcast_to(m[0][:1], m[0].shape)] for m in draws]) == ["mask-shared-across-time"]
    assert _rules([[np.broadcast_to(m[0][:, :1], m[0].shape)] for m in draws]) == ["mask-shared-across-batch"]
    assert _rules([[np.broadcast_to(m[0][..., :1], m[0].shape)] for m in draws]) == ["mask-shared-across-features"]
    assert _rules([draws[0]] * 60)[0] == "mask-reused-across-calls"
    assert _rules(_draws(60, (4, 3, 2), 0.7)) == ["dropout-rate-swapped"]
    for rate in (0.05, 0.5):  # a wrong rate alone is not taken for a dependence
        assert _rules(_draws(60, (4, 3, 2), rate)) == ["dropout-rate"]


def test_unknown_and_padding_elements_are_left_out() -> None:
    draws = _draws(60, (4, 3, 2), 0.3)
    for per_call in draws:
        per_call[0][2:, 1] = PADDING
        per_call[0][0, 0, 0] = UNKNOWN
    assert dropout.mask_statistics(draws, 0.3) == []


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_statistics_case_recovers_every_mask_uniquely(dtype: str) -> None:
    case = dropout.statistics_case(dtype)
    assert dropout.separation(case, reference_for(case)) > 10


def test_the_statistics_check_passes_torch_and_flags_a_reused_mask() -> None:
    case = dropout.statistics_case()
    check_forward(resolve("torch"), case, repeat=dropout.STATISTICS_CALLS)
    with pytest.raises(ConformanceFailure) as info:
        check_forward(resolve("tests.ports.broken_dropout:DropoutFixedSeed"), case, repeat=dropout.STATISTICS_CALLS)
    assert info.value.problems[0].rule == "mask-reused-across-calls"


def test_the_statistics_need_a_recoverable_case() -> None:
    with pytest.raises(ValueError, match="small enough"):
        check_forward(resolve("torch"), Case(C(3, 4, num_layers=2, dropout=0.5), Call(5, 2, training=True)), repeat=3)


# ------------------------------------------------------------------------------- train / eval switch


def test_a_switch_between_modes_is_judged_in_each_mode_and_named() -> None:
    case = Case(C(3, 2, num_layers=2, dropout=0.5), Call(3, 2, training=True))
    check_forward(resolve("torch"), case, repeat=dropout.SWITCH_MODES)
    with pytest.raises(ConformanceFailure) as info:
        check_forward(resolve("tests.ports.broken_dropout:DropoutStickyTraining"), case, repeat=dropout.SWITCH_MODES)
    problems = info.value.problems
    assert {(p.call, p.rule, p.region) for p in problems} == {(4, "eval-after-train", "eval mode, after a call in "
                                                                "training mode")}


def test_repeat_must_name_calls() -> None:
    case = Case(C(3, 2), Call(3, 2))
    for bad in (0, (), ("train",)):
        with pytest.raises(ValueError, match="repeat must"):
            check_forward(resolve("torch"), case, repeat=bad)
