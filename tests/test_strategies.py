"""Every axis value the suite documents is reachable, and capabilities restrict what is drawn."""

from __future__ import annotations

from typing import Callable

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis.errors import NoSuchExample

from hypothesis import strategies as st

from conformance.adapters import FEATURES, Capabilities
from conformance.case import Case
from conformance.strategies import (BATCH_BOUNDARIES, BATCH_SPAN, FEATURE_BOUNDARIES, FEATURE_SPAN, FOCI,
                                    OWN_FOCI_FEATURES, HALF_COST_SHARE, MAX_COST, MAX_LAYERS, STEP_BOUNDARIES, STEP_SPAN, STRESS, batch_sizes, case_cost, cases,
                                    focus_cases, hidden_sizes, input_sizes, seq_lens)

_FIND = settings(max_examples=3000, database=None, suppress_health_check=list(HealthCheck))

REACHABLE: dict[str, Callable[[Case], bool]] = {
    "input_size 1": lambda c: c.config.input_size == 1,
    "hidden_size 1": lambda c: c.config.hidden_size == 1,
    "hidden_size above 64": lambda c: c.config.hidden_size > 64,
    "hidden_size just past 128": lambda c: 128 < c.config.hidden_size <= 128 + FEATURE_SPAN,
    "input_size just past 128": lambda c: 128 < c.config.input_size <= 128 + FEATURE_SPAN,
    "proj_size just past 64": lambda c: 64 < c.config.proj_size <= 64 + FEATURE_SPAN,
    "4 layers": lambda c: c.config.num_layers == 4,
    "5 layers": lambda c: c.config.num_layers == 5,
    "no bias": lambda c: not c.config.bias,
    "batch_first": lambda c: c.config.batch_first,
    "bidirectional": lambda c: c.config.bidirectional,
    "proj_size hidden-1": lambda c: c.config.hidden_size > 2 and c.config.proj_size == c.config.hidden_size - 1,
    "dropout strictly between": lambda c: 0 < c.config.dropout < 1,
    "dropout 1.0 in training": lambda c: c.config.dropout == 1.0 and c.call.training,
    "dropout 1.0 in eval": lambda c: c.config.dropout == 1.0 and not c.call.training,
    "float64": lambda c: c.config.dtype == "float64",
    "sequence length 1": lambda c: c.call.seq_len == 1,
    "sequence length 100+": lambda c: c.call.seq_len >= 100,
    "sequence length just past 256": lambda c: 256 < c.call.seq_len <= 256 + STEP_SPAN,
    "batch 17+": lambda c: (c.call.batch or 0) >= 17,
    "batch just past 64": lambda c: 64 < (c.call.batch or 0) <= 64 + BATCH_SPAN,
    "unbatched with hx": lambda c: c.call.unbatched and c.call.with_hx,
    "transposed view": lambda c: c.call.layout == "transposed",
    "sliced view": lambda c: c.call.layout == "sliced",
    "requires_grad": lambda c: c.call.requires_grad,
    "pack_sequence unsorted": lambda c: c.call.packing == "pack_sequence" and not c.call.enforce_sorted,
    "pack_padded_sequence sorted": lambda c: c.call.packing == "pack_padded_sequence" and c.call.enforce_sorted,
    "packed, equal lengths": lambda c: c.call.packed and len(set(c.call.lengths)) == 1 and c.call.batch > 1,
    "packed, unequal with ties": lambda c: c.call.packed and 1 < len(set(c.call.lengths)) < c.call.batch,
    "packed, 17+ with ties, unsorted": lambda c: c.call.packed and not c.call.enforce_sorted
    and c.call.batch >= 17 and len(set(c.call.lengths)) < c.call.batch,
}


@pytest.mark.slow
@pytest.mark.parametrize("axis", list(REACHABLE))
def test_axis_value_is_generated(axis: str) -> None:
    found = find(cases(), REACHABLE[axis], settings=_FIND)
    assert REACHABLE[axis](found)


@settings(max_examples=200, deadline=None)
@given(cases(Capabilities(dtypes={"float32"}).without("packed", "packed_unsorted", "proj_size", "dropout")))
def test_only_declared_capabilities_are_drawn(case: Case) -> None:
    assert not case.call.packed and case.config.proj_size == 0 and case.config.dtype == "float32"
    assert "dropout" not in case.features()


def test_every_feature_a_port_can_declare_has_a_focus() -> None:
    """A port that lacks a feature is skipped on the foci requiring it: each feature has its own focus,
    or (dropout) foci of its own that require it."""
    required = {feature for spec in FOCI.values() for feature in spec.get("require", ())}
    assert required == set(FEATURES)
    assert OWN_FOCI_FEATURES < set(FEATURES)
    assert [f for f in FOCI if f in FEATURES] == [f for f in FEATURES if f not in OWN_FOCI_FEATURES]


@pytest.mark.parametrize("focus", [f for f in FOCI if FOCI[f].get("require")])
def test_a_focus_puts_its_feature_in_every_example(focus: str) -> None:
    required = FOCI[focus]["require"]

    @settings(max_examples=30, deadline=None, database=None)
    @given(focus_cases(Capabilities(), focus))
    def check(case: Case) -> None:
        assert required <= case.features()

    check()


# ------------------------------------------------------------------ sizes past the tile boundaries

#: The size foci: the axis each one fixes, how to read it off a case, and its boundaries and span.
SIZE_FOCI: dict[str, tuple[Callable[[Case], int], tuple[int, ...], int]] = {
    "large_batch": (lambda c: c.call.batch, BATCH_BOUNDARIES, BATCH_SPAN),
    "large_batch_packed_unsorted": (lambda c: c.call.batch, BATCH_BOUNDARIES, BATCH_SPAN),
    "large_input_size": (lambda c: c.config.input_size, FEATURE_BOUNDARIES, FEATURE_SPAN),
    "large_hidden": (lambda c: c.config.hidden_size, FEATURE_BOUNDARIES, FEATURE_SPAN),
    "large_proj_size": (lambda c: c.config.proj_size, FEATURE_BOUNDARIES, FEATURE_SPAN),
    "long_sequence": (lambda c: c.call.seq_len, STEP_BOUNDARIES, STEP_SPAN),
    "many_layers": (lambda c: c.config.num_layers, (MAX_LAYERS,), 2),
}


@pytest.mark.parametrize("focus", list(SIZE_FOCI))
def test_a_size_focus_reaches_every_boundary_of_its_axis_within_the_cost_cap(focus: str) -> None:
    """Every example lands just past a boundary (a sequence too long for its model is cut, but stays past
    the first), every boundary is reached, and no case costs more than the cap."""
    size, bounds, span = SIZE_FOCI[focus]
    reached = set()

    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(focus_cases(Capabilities(), focus))
    def check(case: Case) -> None:
        assert case_cost(case.config, case.call.seq_len, case.call.batch) <= MAX_COST, case
        past = [b for b in bounds if b < size(case) <= b + span]
        cut = focus == "long_sequence" and bounds[0] < size(case) <= max(bounds)
        assert past or cut, case
        reached.update(past)

    check()
    assert reached == set(bounds)


def test_packed_batches_past_32_come_with_unequal_lengths_and_ties() -> None:
    seen = []

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(focus_cases(Capabilities(), "large_batch_packed_unsorted"))
    def check(case: Case) -> None:
        if case.call.batch > 32 and 1 < len(set(case.call.lengths)) < case.call.batch:
            seen.append(case)

    check()
    assert seen


@pytest.mark.parametrize("strategy, failing, smallest", [
    (hidden_sizes, lambda h: h > 64, 65), (hidden_sizes, lambda h: h > 128, 129), (hidden_sizes, lambda h: h > 200, 257),
    (input_sizes, lambda i: i > 100, 129), (batch_sizes, lambda b: b > 24, 33), (batch_sizes, lambda b: b > 40, 65),
    (seq_lens, lambda t: t > 100, 129), (seq_lens, lambda t: t > 160, 257),
])
def test_a_failure_shrinks_to_just_past_the_lowest_boundary_where_it_shows(strategy, failing, smallest: int) -> None:
    """A size that fails past some point shrinks to 1 past the first boundary beyond it, not to that point."""
    assert find(strategy(), failing, settings=_FIND) == smallest


def test_a_shrunk_size_failure_names_only_its_axis() -> None:
    found = find(focus_cases(Capabilities(), "large_batch"), lambda c: c.call.batch > 40, settings=_FIND)
    assert found.config.hidden_size == 1 and found.config.num_layers == 1 and found.call.seq_len == 1
    assert found.call.batch == 65


@pytest.mark.parametrize("focus", ["any", "packed", "sizes_of_one", "empty_batch"])
def test_the_cost_cap_holds_over_many_draws(focus: str) -> None:
    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(focus_cases(Capabilities(), focus))
    def check(case: Case) -> None:
        assert case_cost(case.config, case.call.seq_len, case.call.batch) <= MAX_COST, case

    check()


@settings(max_examples=60, deadline=None, database=None)
@given(cases(Capabilities().without("proj_size"), require={"bidirectional"}, input_size=st.just(272),
             hidden_size=st.just(272)))
def test_a_large_model_comes_with_one_layer_a_short_sequence_and_a_small_batch(case: Case) -> None:
    assert case.config.num_layers == 1, case  # two such layers, both ways, are past the model's half of the cap
    assert case_cost(case.config, case.call.seq_len, case.call.batch) <= MAX_COST, case
    assert case.call.seq_len * (case.call.batch or 1) <= 600, case


@settings(max_examples=60, deadline=None, database=None)
@given(cases(Capabilities().without("proj_size"), layer_count=st.just(6), require={"bidirectional"}))
def test_many_layers_come_with_a_smaller_hidden_size(case: Case) -> None:
    assert case_cost(case.config, case.call.seq_len, case.call.batch) <= MAX_COST, case
    assert case.config.num_layers == 6 and case.config.hidden_size < 128, case


@settings(max_examples=60, deadline=None, database=None)
@given(cases(Capabilities(), seq_len=st.just(288), hidden_size=st.just(272), layer_count=st.just(6),
             require={"bidirectional"}))
def test_a_fixed_sequence_too_long_for_the_model_is_cut_last_and_stays_past_64(case: Case) -> None:
    """Sizes a focus fixes are kept, but a sequence the model cannot afford even with one batch row is cut."""
    assert 64 < case.call.seq_len <= 288 and case.config.num_layers == 6 and case.config.hidden_size == 272
    if case_cost(case.config, 288, 1) > MAX_COST:
        assert case.call.batch in (None, 0, 1) and case.call.seq_len < 288, case


def test_the_stress_tier_keeps_long_sequences_and_small_batches() -> None:
    @settings(max_examples=60, deadline=None, database=None)
    @given(cases(Capabilities(), **STRESS))
    def check(case: Case) -> None:
        assert case.call.seq_len > 64 and (case.call.batch or 1) <= 4, case

    check()


def _every_values(c: Case) -> list:
    return [c.call.x_values, c.call.h0_values, c.call.c0_values]


def _specials(c: Case) -> set:
    return {special for values in _every_values(c) for _, special in values.special}


#: The values axis: what real inputs hold besides randn at unit scale, as (kind drawn, what it reaches).
VALUES_REACHABLE: dict[str, tuple[str, Callable[[Case], bool]]] = {
    "input 1e4": ("large", lambda c: c.call.x_values.scale == 1e4),
    "h0 1e2": ("large", lambda c: c.call.h0_values.scale == 1e2),
    "c0 1e4": ("large", lambda c: c.call.c0_values.scale == 1e4),
    "weights x4": ("large", lambda c: c.weight_scale == 4.0),
    "every tensor 1e-6": ("tiny", lambda c: c.call.with_hx and all(v.scale == 1e-6 for v in _every_values(c)[:2])),
    "per-feature scales, input": ("mixed", lambda c: c.call.x_values.feature_decades == (4, -6)),
    "per-feature scales, c0": ("mixed", lambda c: c.call.c0_values.feature_decades != ()),
    "all-zero steps": ("zeros", lambda c: len(c.call.x_values.zero_steps) == 2),
    "an all-zero sequence, packed": ("zeros", lambda c: c.call.packed and c.call.x_values.zero_sequences != ()),
    "a zero feature, unbatched": ("zeros", lambda c: c.call.unbatched and c.call.x_values.zero_features != ()),
    "negative zeros": ("zeros", lambda c: c.call.x_values.negative_zeros),
    "NaN in c0": ("special", lambda c: "nan" in {s for _, s in c.call.c0_values.special}),
    "inf in the input": ("special", lambda c: "inf" in {s for _, s in c.call.x_values.special}),
    "-inf in a pack_sequence input": ("special",
                                      lambda c: c.call.packing == "pack_sequence" and "-inf" in _specials(c)),
    "two special elements": ("special", lambda c: sum(len(v.special) for v in _every_values(c)) == 2),
}
#: Each kind, as the normal run draws it (one case in ten has values of some kind).
KIND_HOLDS: dict[str, Callable[[Case], bool]] = {
    "large": lambda c: any(v.scale > 1 for v in _every_values(c)) or c.weight_scale > 1,
    "tiny": lambda c: all(v.scale < 1 for v in _every_values(c)[:1 + c.call.with_hx]),
    "mixed": lambda c: c.call.x_values.feature_decades != (),
    "zeros": lambda c: any((c.call.x_values.zero_steps, c.call.x_values.zero_sequences, c.call.x_values.zero_features)),
    "special": lambda c: bool(_specials(c)),
}


@pytest.mark.slow
@pytest.mark.parametrize("what", list(VALUES_REACHABLE))
def test_values_are_generated(what: str) -> None:
    kind, holds = VALUES_REACHABLE[what]
    assert holds(find(cases(values=kind), holds, settings=_FIND))


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KIND_HOLDS))
def test_the_normal_run_draws_every_kind_of_values(kind: str) -> None:
    assert KIND_HOLDS[kind](find(cases(), KIND_HOLDS[kind], settings=_FIND))


@pytest.mark.slow
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_most_cases_hold_plain_values(data: st.DataObject) -> None:
    """About one case in ten has values other than randn at unit scale; special values only come at
    unit scale (every other tensor plain, weights as initialised) and without random dropout masks."""
    seen = [data.draw(cases()) for _ in range(10)]
    for case in seen:
        if _specials(case):
            assert case.deterministic and case.weight_scale == 1.0
            assert all(v.scale == 1.0 and not v.feature_decades for v in _every_values(case))
    plain = sum(all(v.plain for v in _every_values(c)) for c in seen)
    assert plain >= 4  # nine in ten on average: six or more plain in ten draws, but for chance


@pytest.mark.parametrize("focus, kind", [("large_values", "large"), ("tiny_values", "tiny"),
                                         ("mixed_scales", "mixed"), ("zero_values", "zeros"),
                                         ("special_values", "special")])
def test_a_value_focus_puts_its_kind_in_every_example(focus: str, kind: str) -> None:
    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(focus_cases(Capabilities(), focus))
    def check(case: Case) -> None:
        assert KIND_HOLDS[kind](case) or case.call.batch == 0, case

    check()


# ------------------------------------------------------------------------------ half precision
@pytest.mark.parametrize("focus", ["float16", "bfloat16", "float16_large_values", "bfloat16_large_values"])
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_half_focus_draws_its_dtype_in_every_example_within_a_quarter_of_the_cost(focus: str,
                                                                                    data: st.DataObject) -> None:
    case = data.draw(focus_cases(Capabilities(), focus))
    assert case.config.dtype == FOCI[focus]["dtype"]
    assert case_cost(case.config, case.call.seq_len, case.call.batch) <= MAX_COST // HALF_COST_SHARE


@settings(max_examples=200, deadline=None)
@given(cases())
def test_other_tests_draw_full_precision_where_the_port_declares_it(case: Case) -> None:
    assert case.config.dtype in ("float32", "float64")


@settings(max_examples=50, deadline=None)
@given(cases(Capabilities(dtypes={"bfloat16"})))
def test_a_port_declaring_only_half_precision_gets_it_everywhere(case: Case) -> None:
    assert case.config.dtype == "bfloat16"


def test_bfloat16_large_values_go_past_float16s_range_and_float16s_do_not() -> None:
    past = find(focus_cases(Capabilities(), "bfloat16_large_values"),
                lambda c: c.call.c0_values.scale > 65504, settings=_FIND)
    assert past.call.c0_values.scale == 1e6
    with pytest.raises(NoSuchExample):
        find(focus_cases(Capabilities(), "float16_large_values"), lambda c: c.call.x_values.scale > 1e4,
             settings=settings(_FIND, max_examples=300))
