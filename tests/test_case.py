"""A case's code is runnable on its own and builds exactly the call its fields describe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis.errors import NoSuchExample
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from conformance.arrays import LSTMConfig
from conformance.candidates import _to_arrays
from conformance.case import ARGUMENT_FORMS, LAYOUTS, STATE_LAYOUTS, Call, Case, Values, call_arguments
from conformance.reference import copy_args
from conformance.adapters import Capabilities
from conformance.bad_calls import PACKED_STRUCTURE_FAULTS, bad_call_cases, fault_ids
from conformance.strategies import VALUE_KINDS, cases, focus_cases


def _run_snippet(code: str) -> dict:
    namespace: dict = {}
    exec(code, namespace)  # only torch is imported by the snippet
    return namespace


@settings(max_examples=60, deadline=None)
@given(cases())
def test_snippet_builds_the_described_call(case: Case) -> None:
    ns = _run_snippet(case.to_code())
    model, args, kwargs = ns["model"], ns["args"], ns.get("kwargs", {})
    cfg, call = case.config, case.call
    assert (call.arguments == "keywords") == bool(kwargs) == (case.torch_call == "model(*args, **kwargs)")
    if kwargs:
        assert args == () and list(kwargs) == ["input", "hx"][:len(kwargs)]
        args = tuple(kwargs.values())
    assert isinstance(model, torch.nn.LSTM)
    assert model.training is call.training
    assert next(model.parameters()).dtype == getattr(torch, cfg.dtype)
    assert (model.num_layers, model.bidirectional, model.proj_size, model.bias, model.batch_first) == \
        (cfg.num_layers, cfg.bidirectional, cfg.proj_size, cfg.bias, cfg.batch_first)
    x = args[0]
    if call.packed:
        assert isinstance(x, PackedSequence)
        assert (x.sorted_indices is None) == call.enforce_sorted
        _, lengths = pad_packed_sequence(x)
        assert tuple(lengths.tolist()) == call.lengths
    elif call.unbatched:
        assert x.shape == (call.seq_len, cfg.input_size)
    else:
        batch_dims = (call.batch, call.seq_len) if cfg.batch_first else (call.seq_len, call.batch)
        assert x.shape == (*batch_dims, cfg.input_size)
    if not call.packed:
        assert x.requires_grad == call.requires_grad
    _assert_layout(x.data if call.packed else x, call.layout, batch_dim=0 if call.unbatched or cfg.batch_first else 1)
    assert (len(args) == 2) == call.with_hx
    if call.with_hx:
        h0, c0 = args[1]
        assert isinstance(args[1], list if call.arguments == "hx_list" else tuple)
        layers = cfg.num_layers * cfg.num_directions
        batch = () if call.unbatched else (call.batch,)
        assert h0.shape == (layers, *batch, cfg.output_size)
        assert c0.shape == (layers, *batch, cfg.hidden_size)
        for state in (h0, c0):
            _assert_layout(state, call.state_layout, batch_dim=0 if call.unbatched else 1, sliced_half=True)
    model(*ns["args"], **kwargs)  # torch accepts every generated case


def _assert_layout(t: torch.Tensor, layout: str, batch_dim: int, sliced_half: bool = False) -> None:
    """``t``'s memory is laid out as ``layout`` says (where its sizes let the layout show at all)."""
    if layout == "offset":
        assert t.storage_offset() > 0 and t.is_contiguous()
        return
    assert t.storage_offset() == 0
    if layout == "contiguous":
        assert t.is_contiguous()
    elif layout == "expanded":
        assert t.stride(batch_dim) == 0 or t.shape[batch_dim] <= 1
    elif layout == "transposed":
        assert not t.is_contiguous() or min(t.shape[:2]) <= 1  # size-1 dims never break contiguity
    elif layout == "sliced" and sliced_half:  # the first half of a wider buffer: rows twice as far apart
        assert t.stride(-1) == 1 and (t.dim() < 2 or t.stride(-2) == 2 * t.shape[-1] or t.shape[-2] <= 1)
    elif layout == "sliced":
        assert t.stride(-1) == 2 or t.numel() == 0


def test_same_seeds_build_the_same_tensors() -> None:
    case = Case(LSTMConfig(3, 4, 2), Call(5, 2, with_hx=True, seed=11), weight_seed=7)
    (m1, a1), (m2, a2) = case.build(), case.build()
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert torch.equal(a1[0], a2[0]) and torch.equal(a1[1][1], a2[1][1])
    other = case.replace(seed=12).build()[1]
    assert not torch.equal(a1[0], other[0])


LAID_OUT = [("layout", layout) for layout in LAYOUTS[1:]] + [("state_layout", layout) for layout in STATE_LAYOUTS[1:]]


@pytest.mark.parametrize("field, layout", LAID_OUT)
@pytest.mark.parametrize("packing", [None, "pack_sequence"])
def test_a_layout_changes_the_memory_not_the_values(field: str, layout: str, packing) -> None:
    """The same seed gives the same values in every layout (expanded: batch element 0's, repeated)."""
    if packing and (field, layout) == ("layout", "expanded"):
        pytest.skip("packed data is never expanded")
    packed = dict(packing=packing, lengths=(4, 2, 1)) if packing else {}
    plain = Case(LSTMConfig(3, 5, 2), Call(4, 3, with_hx=True, seed=5, **packed))
    _, (x, (h0, c0)) = plain.build()
    _, (y, (h1, c1)) = plain.replace(**{field: layout}).build()
    x, y = (x.data, y.data) if packing else (x, y)
    before, after = ((x,), (y,)) if field == "layout" else ((h0, c0), (h1, c1))
    for old, new in zip(before, after):
        assert new.stride() != old.stride() or new.storage_offset() != old.storage_offset()
        expected = old[:, :1].expand_as(old) if layout == "expanded" else old
        assert torch.equal(new, expected)
    assert torch.equal(y, x) or field == "layout"
    assert torch.equal(h1, h0) or field == "state_layout"


def test_one_tensor_as_h0_and_c0_stays_one_tensor_in_every_layout() -> None:
    for layout in STATE_LAYOUTS:
        _, (_, (h0, c0)) = Case(LSTMConfig(3, 4), Call(2, 2, with_hx=True, same_state=True, state_layout=layout)).build()
        assert h0 is c0


@pytest.mark.parametrize("form", ARGUMENT_FORMS)
def test_every_argument_form_builds_the_same_call(form: str) -> None:
    """``build`` gives the call as positional arguments; ``call_arguments`` gives it back in its form."""
    case = Case(LSTMConfig(3, 4), Call(3, 2, with_hx=True, arguments=form))
    ns = _run_snippet(case.to_code())
    model, args = case.build()
    positional, keywords = call_arguments(args, form)
    assert [type(a) for a in positional] == [type(a) for a in ns["args"]]
    assert list(keywords) == list(ns.get("kwargs", {}))
    assert torch.equal(model(*positional, **keywords)[0], model(*args)[0])
    assert call_arguments((args[0],), form) == (((), {"input": args[0]}) if form == "keywords" else ((args[0],), {}))


@pytest.mark.parametrize("layout", STATE_LAYOUTS)
def test_copies_and_arrays_keep_strides_offset_and_memory(layout: str) -> None:
    """What a port reading memory (rightly or not) reads is the same in the copy, and in an adapter's arrays."""
    _, (x, (h0, c0)) = Case(LSTMConfig(3, 4, 2), Call(3, 2, with_hx=True, state_layout=layout)).build()
    copied = copy_args((x, (h0, c0)))[1][0]
    assert copied.data_ptr() != h0.data_ptr()
    assert (copied.shape, copied.stride(), copied.storage_offset()) == (h0.shape, h0.stride(), h0.storage_offset())
    assert torch.equal(copied, h0)
    span = h0.storage_offset() + 1 + sum((n - 1) * s for n, s in zip(h0.shape, h0.stride()))
    assert torch.equal(copied.as_strided((span,), (1,), 0), h0.as_strided((span,), (1,), 0))  # from storage start
    arrays = _to_arrays((x, [h0, c0]))
    assert isinstance(arrays[1], tuple)
    assert arrays[1][0].strides == tuple(s * h0.element_size() for s in h0.stride())
    assert np.array_equal(arrays[1][0], h0.numpy())


_FIND = settings(database=None, max_examples=200, suppress_health_check=list(HealthCheck))
DRAWN = ([("layout", v) for v in LAYOUTS] + [("state_layout", v) for v in STATE_LAYOUTS]
         + [("arguments", v) for v in ARGUMENT_FORMS])


#: The focus that draws every layout (or form) of a field but the plain one.
_FOCUS_OF = {"layout": "noncontiguous", "state_layout": "noncontiguous_hx", "arguments": "argument_forms"}
_PLAIN = {"layout": LAYOUTS[0], "state_layout": STATE_LAYOUTS[0], "arguments": ARGUMENT_FORMS[0]}


@pytest.mark.parametrize("field, value", DRAWN)
def test_every_layout_and_argument_form_is_drawn(field: str, value: str) -> None:
    """The plain value by the default generator, every other one by its focus (found whatever the seed)."""
    strategy = cases() if value == _PLAIN[field] else focus_cases(Capabilities(), _FOCUS_OF[field])
    found = find(strategy, lambda case: getattr(case.call, field) == value and (field != "state_layout" or
                                                                                case.call.with_hx), settings=_FIND)
    assert getattr(found.call, field) == value


def test_packed_data_is_never_expanded_and_no_hx_is_never_a_list() -> None:
    with pytest.raises(NoSuchExample):
        find(cases(), lambda case: (case.call.packed and case.call.layout == "expanded")
             or (not case.call.with_hx and case.call.arguments == "hx_list"), settings=_FIND)


@settings(max_examples=20, deadline=None, database=None)
@given(focus_cases(Capabilities(), "noncontiguous_hx"), focus_cases(Capabilities(), "argument_forms"),
       focus_cases(Capabilities(), "noncontiguous"))
def test_the_layout_foci_always_have_their_view_or_form(states: Case, form: Case, view: Case) -> None:
    assert states.call.with_hx and states.call.state_layout != "contiguous"
    assert form.call.arguments != "positional"
    assert view.call.layout != "contiguous"


_LAYOUT_FAULTS = ["h0 has one layer too many", "input is 1-D", *PACKED_STRUCTURE_FAULTS]


@pytest.mark.parametrize("fault", _LAYOUT_FAULTS, ids=fault_ids(_LAYOUT_FAULTS))
def test_bad_calls_pass_contiguous_states_positionally(fault: str) -> None:
    """A fault's own lines and arguments assume the plain call; packed ones a contiguous data too."""
    with pytest.raises(NoSuchExample):
        find(bad_call_cases(fault), lambda case: case.call.state_layout != "contiguous" or
             case.call.arguments != "positional" or (case.call.packed and case.call.layout != "contiguous"),
             settings=settings(_FIND, max_examples=60))


def test_features_name_what_the_case_uses() -> None:
    case = Case(LSTMConfig(3, 4, 2, bias=False, dropout=0.5),
                Call(5, 3, packing="pack_sequence", lengths=(5, 2, 2), enforce_sorted=False, training=True))
    assert case.features() == {"multi_layer", "no_bias", "packed", "packed_unsorted", "dropout"}
    assert case.replace(arguments="keywords").features() == case.features() | {"argument_forms"}
    assert case.replace(state_layout="offset").features() == case.features()  # no hx, no states to lay out
    assert "noncontiguous" in case.replace(state_layout="offset", with_hx=True).features()
    assert "noncontiguous" in case.replace(layout="sliced").features()
    assert not case.deterministic
    assert case.replace(dropout=1.0).deterministic and case.replace(training=False).deterministic


def test_repr_lists_only_what_differs_from_defaults() -> None:
    case = Case(LSTMConfig(3, 4, bidirectional=True), Call(6, 2))
    assert repr(case) == "Case(LSTMConfig(input_size=3, hidden_size=4, bidirectional=True), Call(seq_len=6, batch=2))"


def _time_major(case: Case, x) -> np.ndarray:
    """The call's input as a (T, N, F) float64 array in the caller's batch order (padding: 0)."""
    if isinstance(x, PackedSequence):
        return pad_packed_sequence(x)[0].detach().double().numpy()
    x = x.detach().double().numpy()
    return x[:, None] if case.call.unbatched else x.swapaxes(0, 1) if case.config.batch_first else x


def _edited(plain: np.ndarray, values: Values, packed_steps: bool = False) -> np.ndarray:
    """``values``' edits made to a (T or rows, N, F) array by logical index, independently of to_code."""
    a = plain * values.scale
    if values.feature_decades:
        a = a * 10.0 ** np.linspace(*values.feature_decades, a.shape[-1])
    zero = -0.0 if values.negative_zeros else 0.0
    for t in values.zero_steps:
        a[t] = zero
    for b in values.zero_sequences:
        a[:, b] = zero
    for f in values.zero_features:
        a[..., f] = zero
    for index, special in values.special:
        a[index if len(index) == 3 else (index[0], 0, index[1])] = float(special)
    return a


def _assert_same(got: np.ndarray, want: np.ndarray, values: Values) -> None:
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=0, equal_nan=True)  # mul_ in float32 rounds
    if values.negative_zeros:
        assert np.array_equal(np.signbit(got[want == 0]), np.signbit(want[want == 0]))


@settings(max_examples=20, deadline=None)
@given(st.data())
@pytest.mark.parametrize("kind", VALUE_KINDS)
def test_values_edit_the_tensors_they_name_and_nothing_else(kind: str, data: st.DataObject) -> None:
    case = data.draw(cases(values=kind))
    call = case.call
    _, args = case.build()
    _, plain_args = case.replace(x_values=Values(), h0_values=Values(), c0_values=Values()).build()
    want = _edited(_time_major(case, plain_args[0]), call.x_values)
    if call.packed:  # padded positions are not part of the input
        lengths = np.asarray(call.lengths)
        want[np.arange(want.shape[0])[:, None] >= lengths[None, :]] = 0.0
    if call.layout == "expanded":  # the view repeats batch element 0 (unbatched: step 0)
        want = np.broadcast_to(want[:1] if call.unbatched else want[:, :1], want.shape)
    _assert_same(_time_major(case, args[0]), want, call.x_values)
    for k, name in enumerate(("h0", "c0")[:len(args[1]) if call.with_hx else 0]):
        values = getattr(call, f"{name}_values")
        got, plain = (a[1][k].detach().double().numpy() for a in (args, plain_args))
        got, plain = (s[:, None] if call.unbatched else s for s in (got, plain))
        want = _edited(plain, values)
        if call.state_layout == "expanded":  # the view repeats batch element 0 (unbatched: row 0)
            want = np.broadcast_to(want[:1] if call.unbatched else want[:, :1], want.shape)
        _assert_same(got, want, values)
    if call.requires_grad and not call.packed:
        assert args[0].requires_grad


def test_values_print_and_rebuild_as_code() -> None:
    values = Values(scale=1e4, feature_decades=(-6, 4), zero_steps=(1,), negative_zeros=True,
                    special=(((0, 1, 2), "nan"), ((2, 0, 0), "-inf")))
    case = Case(LSTMConfig(3, 4, batch_first=True), Call(3, 2, requires_grad=True, x_values=values))
    assert "x_values=Values(scale=10000.0, feature_decades=(-6, 4), zero_steps=(1,), negative_zeros=True" in repr(case)
    code = case.to_code()
    assert "with torch.no_grad():\n    x.mul_(10000.0)\n" in code and "x[:, 1] = -0.0" in code
    assert "x[1, 0, 2] = float('nan')" in code and "x[0, 2, 0] = float('-inf')" in code
    x = case.build()[1][0]
    assert torch.isnan(x[1, 0, 2]) and x[0, 2, 0] == -float("inf") and x.requires_grad and x.is_leaf
    assert torch.equal(torch.signbit(x[:, 1]), torch.ones(2, 3, dtype=torch.bool))
    assert Values().plain and not values.plain and repr(Values()) == "Values()"


def test_a_case_says_for_every_feature_whether_it_uses_it() -> None:
    """Case.features() and the capability names a port declares are one list: a feature added to one only
    would never be skipped, or never drawn."""
    from conformance.adapters import FEATURES

    assert set(Case(LSTMConfig(2, 3), Call(2, 1)).feature_flags()) == set(FEATURES)
