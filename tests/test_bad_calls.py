"""The catalogue of bad calls (``conformance/bad_calls.py``): every entry has an explicit, unique id,
and every bad constructor argument is drawn."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, find, settings

from conformance.bad_calls import (BAD_CONSTRUCTOR_ARGUMENTS, CALL_FAULTS, PACKED_CALL_FAULTS, PACKED_STRUCTURE_FAULTS,
                                   BadConstructorArgument, bad_constructor_cases, fault_ids)
from conformance.case import Case

#: An id is a pytest parameter id and a word of an expected-failures file: letters, digits, underscores.
_ID = re.compile(r"[A-Za-z0-9_]+")
_FIND = settings(max_examples=2000, database=None, suppress_health_check=list(HealthCheck))


def test_every_bad_call_has_an_explicit_unique_id() -> None:
    ids = [bad.id for bad in BAD_CONSTRUCTOR_ARGUMENTS] + fault_ids([*CALL_FAULTS, *PACKED_STRUCTURE_FAULTS])
    assert all(_ID.fullmatch(i) for i in ids), [i for i in ids if not _ID.fullmatch(i)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert not set(CALL_FAULTS) & set(PACKED_STRUCTURE_FAULTS)  # one name, one fault
    assert set(fault_ids(PACKED_CALL_FAULTS)) <= set(ids)


def test_each_bad_constructor_argument_is_tried_once() -> None:
    tried = [(bad.argument, repr(bad.value)) for bad in BAD_CONSTRUCTOR_ARGUMENTS]
    assert len(tried) == len(set(tried))


def _value(bad: BadConstructorArgument, case: Case) -> object:
    """The value the case's constructor gets for ``bad`` (a size named by the table is the drawn model's)."""
    if bad.value == "hidden_size":
        return case.config.hidden_size
    if bad.value == "hidden_size + 1":
        return case.config.hidden_size + 1
    return bad.value


@pytest.mark.parametrize("bad", BAD_CONSTRUCTOR_ARGUMENTS, ids=[bad.id for bad in BAD_CONSTRUCTOR_ARGUMENTS])
def test_every_bad_constructor_argument_is_drawn(bad: BadConstructorArgument) -> None:
    def has(case: Case) -> bool:  # repr: True is not 1, 2.0 is not 2, nan is nan
        assert case.fault is not None
        return (case.fault.name.partition("=")[0] == bad.argument
                and repr(getattr(case.config, bad.argument)) == repr(_value(bad, case)))

    case = find(bad_constructor_cases(), has, settings=_FIND)
    assert case.fault is not None and case.fault.stage == "construct"
    assert case.fault.name == f"{bad.argument}={_value(bad, case)!r}"
