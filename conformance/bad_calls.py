"""The catalogue of bad calls: invalid calls torch rejects (or should), for the error tests.

Three tables say what to try, never what torch answers (that comes from the live torch, judged by
the error policy of :mod:`conformance.error_policy`): :data:`BAD_CONSTRUCTOR_ARGUMENTS` (the constructor),
:data:`CALL_FAULTS` (a forward call's input or hx) and :data:`PACKED_STRUCTURE_FAULTS` (a
``PackedSequence`` built by hand).  Each entry has an explicit, stable, unique ``id``: a call fault's
is its test's parameter id in ``conformance/suite/test_errors.py`` (the name expected-failures files
use), so rewording a fault's name leaves its tests and those files alone.  The strategies here draw a
valid case from :mod:`conformance.strategies` and make it wrong.

The policy: ``docs/errors.md``; adding a bad call: ``CONTRIBUTING.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Optional

from hypothesis import assume
from hypothesis import strategies as st

from .adapters import Capabilities
from .case import Call, Case, Fault, PackingCall
from .strategies import cached, cases, sampled, seeds

__all__ = ["BAD_CONSTRUCTOR_ARGUMENTS", "CALL_FAULTS", "PACKED_CALL_FAULTS", "PACKED_STRUCTURE_FAULTS",
           "BadConstructorArgument", "CallFault", "bad_call_cases", "bad_constructor_cases", "bad_packing_calls",
           "call_fault_requirements", "fault_ids"]


@dataclass(frozen=True)
class BadConstructorArgument:
    """One bad constructor argument: ``argument=value``, known by ``id`` (stable, unique)."""

    id: str
    argument: str
    value: Any  # "hidden_size" and "hidden_size + 1": that size of the drawn model


#: Bad constructor arguments.  torch's answer to each comes from the live torch; the table only says
#: what to try.
BAD_CONSTRUCTOR_ARGUMENTS: tuple[BadConstructorArgument, ...] = (
    BadConstructorArgument("dropout_string", "dropout", "abc"),
    BadConstructorArgument("dropout_none", "dropout", None),
    BadConstructorArgument("dropout_above_one", "dropout", 1.5),
    BadConstructorArgument("dropout_negative", "dropout", -0.1),
    BadConstructorArgument("dropout_bool", "dropout", True),
    BadConstructorArgument("dropout_numeric_string", "dropout", "0.5"),
    BadConstructorArgument("dropout_nan", "dropout", float("nan")),
    BadConstructorArgument("bias_int", "bias", 1),
    BadConstructorArgument("batch_first_int", "batch_first", 0),
    BadConstructorArgument("input_size_float", "input_size", 4.0),
    BadConstructorArgument("input_size_none", "input_size", None),
    BadConstructorArgument("input_size_zero", "input_size", 0),
    BadConstructorArgument("input_size_negative", "input_size", -3),
    BadConstructorArgument("hidden_size_float", "hidden_size", 8.0),
    BadConstructorArgument("hidden_size_string", "hidden_size", "8"),
    BadConstructorArgument("hidden_size_zero", "hidden_size", 0),
    BadConstructorArgument("num_layers_zero", "num_layers", 0),
    BadConstructorArgument("num_layers_negative", "num_layers", -1),
    BadConstructorArgument("num_layers_float", "num_layers", 2.0),
    BadConstructorArgument("num_layers_none", "num_layers", None),
    BadConstructorArgument("proj_size_negative", "proj_size", -1),
    BadConstructorArgument("proj_size_none", "proj_size", None),
    BadConstructorArgument("proj_size_equal_to_hidden_size", "proj_size", "hidden_size"),
    BadConstructorArgument("proj_size_above_hidden_size", "proj_size", "hidden_size + 1"),
    BadConstructorArgument("proj_size_float", "proj_size", 2.0),
    BadConstructorArgument("proj_size_bool", "proj_size", True),
    BadConstructorArgument("dtype_int64", "dtype", "int64"),
)


@cached
def _constructor_base(capabilities: Capabilities) -> st.SearchStrategy[Case]:
    return cases(capabilities, training=False, hidden_size=st.integers(2, 8))


@cached
@st.composite
def bad_constructor_cases(draw: Any, capabilities: Capabilities = Capabilities()) -> Case:
    """A case whose constructor arguments torch rejects (type or range)."""
    base = draw(_constructor_base(capabilities))
    bad = draw(sampled(BAD_CONSTRUCTOR_ARGUMENTS))
    name, value = bad.argument, bad.value
    if value == "hidden_size":
        value = base.config.hidden_size
    elif value == "hidden_size + 1":
        value = base.config.hidden_size + 1
    config = replace(base.config, **{name: value})
    return Case(config, Call(seq_len=1), fault=Fault(f"{name}={value!r}", stage="construct"))


def _other_dtype(dtype: str) -> str:
    return "torch.float64" if dtype == "float32" else "torch.float32"


def _other_half(dtype: str) -> str:
    """A half-precision dtype other than the model's."""
    return "torch.bfloat16" if dtype == "float16" else "torch.float16"


def _empty_sequence(case: Case) -> str:
    batch_first = case.config.batch_first and not case.call.unbatched
    return "x = x[:, :0]" if batch_first else "x = x[:0]"


@dataclass(frozen=True)
class CallFault:
    """One kind of bad call: its ``id`` (stable, unique: the test's parameter id), what it needs from the
    case, and the code that makes it.  Its name (the key of its table) is what reports and reproducers say."""

    id: str
    target: str  # "input", "hx", or "packed" (the structure of a packed input)
    make: Callable[[Case], tuple[tuple[str, ...], Optional[str]]]  # case -> (lines, args)
    require: frozenset = frozenset()
    batched: bool = False  # needs a batch dimension of at least 2


def _lines(*lines: str) -> Callable[[Case], tuple[tuple[str, ...], Optional[str]]]:
    return lambda case: (lines, None)


#: Every kind of bad call torch checks (or should), by name.  What torch does with each comes
#: from the live torch; this table only says what to try.
CALL_FAULTS: dict[str, CallFault] = {
    "input is 0-D": CallFault("input_is_0D", "input", _lines("x = x.flatten()[0]")),
    "input is 1-D": CallFault("input_is_1D", "input", _lines("x = x.flatten()")),
    "input is 4-D": CallFault("input_is_4D", "input", _lines("x = x.reshape((1,) * (4 - x.dim()) + tuple(x.shape))")),
    "input has one feature too many": CallFault(
        "input_has_one_feature_too_many", "input", _lines("x = torch.cat([x, x[..., :1]], dim=-1)")),
    "input has one feature too few": CallFault("input_has_one_feature_too_few", "input", _lines("x = x[..., 1:]")),
    "input dtype differs from the weights": CallFault(
        "input_dtype_differs_from_the_weights", "input",
        lambda c: ((f"x = x.to({_other_dtype(c.config.dtype)})",), None)),
    "sequence length 0": CallFault("sequence_length_0", "input", lambda c: ((_empty_sequence(c),), None)),
    "hx is a single tensor, not a tuple": CallFault(
        "hx_is_a_single_tensor_not_a_tuple", "hx", lambda c: ((), "(x, h0)")),
    "hx is a tuple of three tensors": CallFault(
        "hx_is_a_tuple_of_three_tensors", "hx", lambda c: ((), "(x, (h0, c0, c0))")),
    "hx is a tuple of one tensor": CallFault("hx_is_a_tuple_of_one_tensor", "hx", lambda c: ((), "(x, (h0,))")),
    "h0 has one dimension too few": CallFault("h0_has_one_dimension_too_few", "hx", _lines("h0 = h0[0]")),
    "c0 has one dimension too many": CallFault("c0_has_one_dimension_too_many", "hx", _lines("c0 = c0.unsqueeze(0)")),
    "h0 has one layer too many": CallFault("h0_has_one_layer_too_many", "hx", _lines("h0 = torch.cat([h0, h0[:1]])")),
    "c0 has one layer too many": CallFault("c0_has_one_layer_too_many", "hx", _lines("c0 = torch.cat([c0, c0[:1]])")),
    "h0 has one layer too few": CallFault(
        "h0_has_one_layer_too_few", "hx", _lines("h0 = h0[1:]"), frozenset({"multi_layer"})),
    "c0 has one layer too few": CallFault(
        "c0_has_one_layer_too_few", "hx", _lines("c0 = c0[1:]"), frozenset({"multi_layer"})),
    "h0 has one batch element too many": CallFault(
        "h0_has_one_batch_element_too_many", "hx", _lines("h0 = torch.cat([h0, h0[:, :1]], dim=1)"), batched=True),
    "c0 has one batch element too many": CallFault(
        "c0_has_one_batch_element_too_many", "hx", _lines("c0 = torch.cat([c0, c0[:, :1]], dim=1)"), batched=True),
    "h0 has one batch element too few": CallFault(
        "h0_has_one_batch_element_too_few", "hx", _lines("h0 = h0[:, 1:]"), batched=True),
    "h0 has one feature too many": CallFault(
        "h0_has_one_feature_too_many", "hx", _lines("h0 = torch.cat([h0, h0[..., :1]], dim=-1)")),
    "c0 has one feature too many": CallFault(
        "c0_has_one_feature_too_many", "hx", _lines("c0 = torch.cat([c0, c0[..., :1]], dim=-1)")),
    "h0 has hidden_size features, not proj_size": CallFault(
        "h0_has_hidden_size_features_not_proj_size", "hx",
        _lines("h0 = torch.randn(*c0.shape, dtype=h0.dtype)"), frozenset({"proj_size"})),
    "c0 has proj_size features, not hidden_size": CallFault(
        "c0_has_proj_size_features_not_hidden_size", "hx",
        _lines("c0 = torch.randn(*h0.shape, dtype=c0.dtype)"), frozenset({"proj_size"})),
    "hx in batch_first layout": CallFault(
        "hx_in_batch_first_layout", "hx",
        _lines("h0 = h0.transpose(0, 1)", "c0 = c0.transpose(0, 1)"), frozenset({"batch_first"}), batched=True),
    "h0 dtype differs from the weights": CallFault(
        "h0_dtype_differs_from_the_weights", "hx", lambda c: ((f"h0 = h0.to({_other_dtype(c.config.dtype)})",), None)),
    "c0 dtype differs from the weights": CallFault(
        "c0_dtype_differs_from_the_weights", "hx", lambda c: ((f"c0 = c0.to({_other_dtype(c.config.dtype)})",), None)),
    "input in a half dtype the weights do not have": CallFault(
        "input_in_a_half_dtype_the_weights_do_not_have", "input",
        lambda c: ((f"x = x.to({_other_half(c.config.dtype)})",), None)),
    "h0 in a half dtype the weights do not have": CallFault(
        "h0_in_a_half_dtype_the_weights_do_not_have", "hx",
        lambda c: ((f"h0 = h0.to({_other_half(c.config.dtype)})",), None)),
    "c0 in a half dtype the weights do not have": CallFault(
        "c0_in_a_half_dtype_the_weights_do_not_have", "hx",
        lambda c: ((f"c0 = c0.to({_other_half(c.config.dtype)})",), None)),
}


def _packed(data: str = "x.data", batch_sizes: str = "x.batch_sizes", indices: str = "x.sorted_indices, x.unsorted_indices"
            ) -> Callable[[Case], tuple[tuple[str, ...], Optional[str]]]:
    """A PackedSequence built by hand from the packed ``x``, with one of its parts replaced."""
    return _lines(f"x = PackedSequence({data}, {batch_sizes}, {indices})")


def _not_a_permutation(case: Case) -> tuple[tuple[str, ...], Optional[str]]:
    batch = case.call.batch
    return _packed(indices=f"torch.zeros({batch}, dtype=torch.int64), torch.arange({batch})")(case)


#: Packed structures built by hand (``PackedSequence(data, batch_sizes, ...)``, not by torch's packing
#: functions) that are not what packing makes.  torch checks none of it in Python: what it does with each
#: comes from the live torch (its kernel rejects some, accepts others).
PACKED_STRUCTURE_FAULTS: dict[str, CallFault] = {
    "packed data has one row more than batch_sizes count": CallFault(
        "packed_data_has_one_row_more_than_batch_sizes_count", "packed",
        _packed(data="torch.cat([x.data, x.data[:1]])")),
    "packed data has one row fewer than batch_sizes count": CallFault(
        "packed_data_has_one_row_fewer_than_batch_sizes_count", "packed", _packed(data="x.data[:-1]")),
    "batch_sizes increase": CallFault(
        "batch_sizes_increase", "packed", _packed(batch_sizes="x.batch_sizes.flip(0)"), batched=True),
    "batch_sizes end with 0": CallFault(
        "batch_sizes_end_with_0", "packed",
        _packed(batch_sizes="torch.cat([x.batch_sizes, x.batch_sizes.new_zeros(1)])")),
    "batch_sizes are int32": CallFault("batch_sizes_are_int32", "packed", _packed(batch_sizes="x.batch_sizes.int()")),
    "sorted_indices are not a permutation": CallFault(
        "sorted_indices_are_not_a_permutation", "packed", _not_a_permutation, batched=True),
}
_FAULTS = {**CALL_FAULTS, **PACKED_STRUCTURE_FAULTS}
#: The faults that apply to packed input: torch checks nothing there in Python.
PACKED_CALL_FAULTS = [name for name, fault in _FAULTS.items() if fault.target in ("hx", "packed")]


def fault_ids(names: Iterable[str]) -> list[str]:
    """The ids of the named faults (of :data:`CALL_FAULTS` or :data:`PACKED_STRUCTURE_FAULTS`), in order."""
    return [_FAULTS[name].id for name in names]


def call_fault_requirements(name: str, packed: bool = False) -> set[str]:
    """The features a port needs for this fault to be tried on it."""
    fault = _FAULTS[name]
    packed = packed or fault.target == "packed"
    return set(fault.require) | ({"initial_state"} if fault.target == "hx" else set()) | ({"packed"} if packed else set())


@cached
def _fault_base(fault: str, capabilities: Capabilities, packed: bool) -> st.SearchStrategy[Case]:
    return cases(capabilities, require=call_fault_requirements(fault, packed), training=False,
                 seq_len=st.integers(1, 5), batch=st.integers(2, 4) if _FAULTS[fault].batched else None)


@cached
@st.composite
def bad_call_cases(draw: Any, fault: str, capabilities: Capabilities = Capabilities(), packed: bool = False) -> Case:
    """A valid model with the named bad call (see :data:`CALL_FAULTS`, :data:`PACKED_STRUCTURE_FAULTS`),
    dense or packed, its states contiguous and passed positionally (packed: its data contiguous too)."""
    spec = _FAULTS[fault]
    packed = packed or spec.target == "packed"
    base = draw(_fault_base(fault, capabilities, packed))
    base = replace(base, call=replace(base.call, state_layout="contiguous", arguments="positional"))
    if not packed and base.call.packed:
        base = replace(base, call=replace(base.call, packing=None, lengths=None, enforce_sorted=True))
    if packed:
        base = replace(base, call=replace(base.call, layout="contiguous"))
    lengths = base.call.lengths
    if fault == "batch_sizes increase" and len(set(lengths)) == 1:  # flipped, equal batch sizes stay as they are
        base = replace(base, call=replace(base.call, lengths=(lengths[0] + 1, *lengths[1:]), seq_len=lengths[0] + 1))
    if spec.target == "input" and base.call.layout == "sliced" and fault.startswith("input has one feature"):
        base = replace(base, call=replace(base.call, layout="contiguous"))
    if fault == "input has one feature too few":
        base = replace(base, config=replace(base.config, input_size=max(base.config.input_size, 2)))
    if fault == "hx in batch_first layout":  # swapped dims must differ from the right ones
        layers = base.config.num_layers * base.config.num_directions
        assume(base.call.batch != layers)
    lines, args = spec.make(base)
    return replace(base, call=replace(base.call, same_state=False), fault=Fault(fault, lines=lines, args=args))


@st.composite
def bad_packing_calls(draw: Any) -> PackingCall:
    """Lengths that torch's packing functions reject: unsorted, zero or negative, the wrong count."""
    function = draw(st.sampled_from(["pack_padded_sequence", "pack_sequence"]))
    batch = draw(st.integers(2, 5))
    lengths = sorted(draw(st.lists(st.integers(1, 6), min_size=batch, max_size=batch)), reverse=True)
    kinds = ["zero length", "negative length"] if function == "pack_padded_sequence" else ["zero length"]
    if len(set(lengths)) > 1:
        kinds.append("unsorted lengths with enforce_sorted=True")
    if function == "pack_padded_sequence":
        kinds.append("one length more than the batch")
    kind = draw(st.sampled_from(kinds))
    enforce_sorted = draw(st.booleans())
    if kind == "zero length":
        lengths[draw(st.integers(0, batch - 1))] = 0
    elif kind == "negative length":
        lengths[-1] = -1
    elif kind.startswith("unsorted"):
        lengths, enforce_sorted = lengths[::-1], True
    else:
        lengths.append(lengths[-1])
    return PackingCall(function, tuple(lengths), batch, enforce_sorted, draw(st.booleans()), seed=draw(seeds()),
                       fault=kind)
