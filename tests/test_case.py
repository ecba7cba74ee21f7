"""A case's code is runnable on its own and builds exactly the call its fields describe."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from conformance.arrays import LSTMConfig
from conformance.case import Call, Case
from conformance.strategies import cases


def _run_snippet(code: str) -> dict:
    namespace: dict = {}
    exec(code, namespace)  # only torch is imported by the snippet
    return namespace


@settings(max_examples=60, deadline=None)
@given(cases())
def test_snippet_builds_the_described_call(case: Case) -> None:
    ns = _run_snippet(case.to_code())
    model, args = ns["model"], ns["args"]
    cfg, call = case.config, case.call
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
        if call.layout == "contiguous":
            assert x.is_contiguous()
        elif call.layout == "sliced" and cfg.input_size > 1:
            assert not x.is_contiguous()
        elif call.layout == "transposed" and min(x.shape[:2]) > 1:  # size-1 dims never break contiguity
            assert not x.is_contiguous()
    assert (len(args) == 2) == call.with_hx
    if call.with_hx:
        h0, c0 = args[1]
        layers = cfg.num_layers * cfg.num_directions
        batch = () if call.unbatched else (call.batch,)
        assert h0.shape == (layers, *batch, cfg.output_size)
        assert c0.shape == (layers, *batch, cfg.hidden_size)
    model(*args)  # torch accepts every generated case


def test_same_seeds_build_the_same_tensors() -> None:
    case = Case(LSTMConfig(3, 4, 2), Call(5, 2, with_hx=True, seed=11), weight_seed=7)
    (m1, a1), (m2, a2) = case.build(), case.build()
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert torch.equal(a1[0], a2[0]) and torch.equal(a1[1][1], a2[1][1])
    other = case.replace(seed=12).build()[1]
    assert not torch.equal(a1[0], other[0])


def test_features_name_what_the_case_uses() -> None:
    case = Case(LSTMConfig(3, 4, 2, bias=False, dropout=0.5),
                Call(5, 3, packing="pack_sequence", lengths=(5, 2, 2), enforce_sorted=False, training=True))
    assert case.features() == {"multi_layer", "no_bias", "packed", "packed_unsorted", "dropout"}
    assert not case.deterministic
    assert case.replace(dropout=1.0).deterministic and case.replace(training=False).deterministic


def test_repr_lists_only_what_differs_from_defaults() -> None:
    case = Case(LSTMConfig(3, 4, bidirectional=True), Call(6, 2))
    assert repr(case) == "Case(LSTMConfig(input_size=3, hidden_size=4, bidirectional=True), Call(seq_len=6, batch=2))"
