"""Every axis value the issue lists is reachable, and capabilities restrict what is drawn."""

from __future__ import annotations

from typing import Callable

import pytest
from hypothesis import HealthCheck, find, given, settings

from conformance.adapters import Capabilities
from conformance.case import Case
from conformance.strategies import FOCI, cases, focus_cases

_FIND = settings(max_examples=3000, database=None, suppress_health_check=list(HealthCheck))

REACHABLE: dict[str, Callable[[Case], bool]] = {
    "input_size 1": lambda c: c.config.input_size == 1,
    "hidden_size 1": lambda c: c.config.hidden_size == 1,
    "hidden_size above 64": lambda c: c.config.hidden_size > 64,
    "4 layers": lambda c: c.config.num_layers == 4,
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
    "batch 17+": lambda c: (c.call.batch or 0) >= 17,
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


@pytest.mark.parametrize("axis", list(REACHABLE))
def test_axis_value_is_generated(axis: str) -> None:
    found = find(cases(), REACHABLE[axis], settings=_FIND)
    assert REACHABLE[axis](found)


@settings(max_examples=200, deadline=None)
@given(cases(Capabilities(dtypes={"float32"}).without("packed", "packed_unsorted", "proj_size", "dropout")))
def test_only_declared_capabilities_are_drawn(case: Case) -> None:
    assert not case.call.packed and case.config.proj_size == 0 and case.config.dtype == "float32"
    assert "dropout" not in case.features()


@pytest.mark.parametrize("focus", [f for f in FOCI if FOCI[f].get("require")])
def test_a_focus_puts_its_feature_in_every_example(focus: str) -> None:
    required = FOCI[focus]["require"]

    @settings(max_examples=30, deadline=None, database=None)
    @given(focus_cases(Capabilities(), focus))
    def check(case: Case) -> None:
        assert required <= case.features()

    check()
