"""Localisation: where a candidate first departs from torch, found by running smaller models.

Every piece is built from the failing case's own weights and inputs, and run on torch and on
the candidate alike (so it needs nothing from a port beyond building and calling it):

* a prefix of the layer stack (layers ``0..k``) finds the first layer that departs;
* that layer alone, fed torch's output of the layers below, tells the layer's own arithmetic
  from the way layers are connected (weights of upper layers, state rows, dropout);
* each direction of a bidirectional layer alone (the reverse one as a forward model on the
  time-reversed input) tells a direction's arithmetic from the way directions are combined;
* a prefix of the sequence, up to the first step that departs, shows whether a shorter case
  does it too.

Within the departing layer and direction the first time step (in that direction's processing
order: the reverse direction starts at each sequence's own end) and batch element are read
off the element-wise comparison against the float64 oracle.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np

from .arrays import LSTMConfig
from .candidates import Candidate
from .case import Case
from .layout import sequence_lengths, state_rows, time_major
from .compare import tolerance, value_scale, within
from .outcome import Outcome
from .reference import Reference, evaluate

__all__ = ["Location", "Piece", "PieceResults", "localise", "run_torch"]

DIRECTIONS = ("forward", "reverse")


@dataclass(frozen=True)
class Piece:
    """One smaller model run on torch and on the candidate, and what it showed."""

    name: str
    status: str  # "matches", "differs", "raised"
    detail: str = ""


@dataclass(frozen=True)
class Location:
    """Where the candidate first departs from torch on a case."""

    tensor: str  # "output", "h_n" or "c_n": the first of them that departs
    layer: Optional[int] = None
    direction: Optional[str] = None  # "forward" or "reverse"
    time_step: Optional[int] = None  # index in the sequence (not in processing order)
    batch_element: Optional[int] = None  # in the caller's batch order; None for unbatched input
    directions_differing: tuple[str, ...] = ()
    steps_differing: int = 0  # time steps of that layer and direction that depart
    steps_total: int = 0
    pieces: tuple[Piece, ...] = ()

    def piece(self, prefix: str) -> Optional[Piece]:
        return next((p for p in self.pieces if p.name.startswith(prefix)), None)


@dataclass
class PieceResults:
    """A piece's results: the candidate's (or the error it raised), torch's, and the oracle's."""

    config: LSTMConfig
    reference: Outcome
    oracle: Outcome
    got: Optional[Outcome] = None
    error: str = ""
    raw: Any = None  # torch's own output object (the input of the next layer)
    bad: dict[str, Optional[np.ndarray]] = field(default_factory=dict)  # mismatch masks; None: shape differs

    def differs(self) -> bool:
        return bool(self.error) or any(mask is None or mask.any() for mask in self.bad.values())


# ------------------------------------------------------------------------------------ layouts


# ------------------------------------------------------------------------------ running pieces


def run_torch(config: LSTMConfig, state: dict, args: tuple, training: bool, packed: bool,
              form: str = "positional") -> tuple[Any, Outcome, Outcome]:
    """torch.nn.LSTM for ``config`` with ``state``'s weights on ``args`` (passed in argument ``form``):
    (raw output, result, oracle)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout with one layer, projections without oneDNN
        model = torch.nn.LSTM(**config.torch_kwargs(), dtype=getattr(torch, config.dtype))
        model.load_state_dict(state)
        model.train(training)
        with torch.no_grad():  # the raw output feeds the next piece: no autograd graph behind it
            return evaluate(model, args, packed, config.dtype, form)


def _masks(got: Outcome, reference: Outcome, oracle: Outcome, dtype: str) -> dict[str, Optional[np.ndarray]]:
    masks: dict[str, Optional[np.ndarray]] = {}
    for name, mine in got.parts().items():
        ref, truth = reference.parts()[name], oracle.parts()[name]
        if mine.shape != truth.shape:
            masks[name] = None
        else:
            masks[name] = ~within(mine, truth, tolerance(dtype, ref, truth, value_scale(oracle.parts().values())))
    return masks


def _run(candidate: Candidate, config: LSTMConfig, state: dict, args: tuple, case: Case) -> PieceResults:
    training, packed, form = case.call.training, case.call.packed, case.call.arguments
    raw, reference, oracle = run_torch(config, state, args, training, packed, form)
    run = PieceResults(config, reference, oracle, raw=raw)
    try:
        instance = candidate.build(config, state)
        run.got = candidate.run(instance, args, training, packed, form)
    except AssertionError as exc:  # CandidateError, StructureError
        run.error = str(exc).splitlines()[0]
        return run
    run.bad = _masks(run.got, reference, oracle, config.dtype)
    return run


def _piece(name: str, run: PieceResults) -> Piece:
    if run.error:
        return Piece(name, "raised", run.error[:120])
    differing = [k for k, mask in run.bad.items() if mask is None or mask.any()]
    return Piece(name, "differs" if differing else "matches", ", ".join(differing))


# ----------------------------------------------------------------------- weights and arguments

_LAYER = re.compile(r"_l(\d+)(_reverse)?$")


def _layer_weights(state: dict, layer: int, direction: Optional[int] = None) -> dict:
    """One layer's weights (optionally one direction's), renamed as layer 0 (forward)."""
    out = {}
    for name, value in state.items():
        match = _LAYER.search(name)
        if not match or int(match.group(1)) != layer:
            continue
        reverse = match.group(2) is not None
        if direction is not None and reverse != (direction == 1):
            continue
        suffix = "_reverse" if reverse and direction is None else ""
        out[name[: match.start()] + "_l0" + suffix] = value
    return out


def _stack_weights(state: dict, layers: int) -> dict:
    return {k: v for k, v in state.items() if (m := _LAYER.search(k)) and int(m.group(1)) < layers}


def _hx(args: tuple, rows: slice) -> tuple:
    if len(args) < 2:
        return ()
    h0, c0 = args[1]
    return ((h0[rows], c0[rows]),)


def _time_dim(case: Case) -> int:
    return 1 if case.config.batch_first and not case.call.unbatched else 0


def _reverse_in_time(x: Any, case: Case) -> Any:
    """The input with each sequence reversed within its own length."""
    import torch
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

    if isinstance(x, PackedSequence):
        padded, lengths = pad_packed_sequence(x)
        flipped = padded.clone()
        for b, n in enumerate(lengths.tolist()):
            flipped[:n, b] = padded[:n, b].flip(0)
        return pack_padded_sequence(flipped, lengths, enforce_sorted=x.sorted_indices is None)
    return torch.flip(x, (_time_dim(case),))


def _first_steps(x: Any, steps: int, case: Case) -> Any:
    return x.narrow(_time_dim(case), 0, steps)


# ------------------------------------------------------------------------------- localisation


def _first_departure(run: PieceResults, case: Case) -> dict:
    """Direction, time step and batch element where ``run`` first departs (its output first, then
    the first state row that departs, whose layer is then reported)."""
    config = run.config
    d_count, features = config.num_directions, config.output_size
    found: dict = {"directions": []}
    out_bad = run.bad.get("output")
    if out_bad is not None and out_bad.any():
        bad = time_major(out_bad, config, case)  # (T, N, D * F)
        steps, batch = bad.shape[:2]
        lengths = sequence_lengths(case, steps, batch)
        best = None
        for d in range(d_count):
            per_step = np.asarray(bad[:, :, d * features:(d + 1) * features].any(axis=-1))  # (T, N)
            if not per_step.any():
                continue
            found["directions"].append(DIRECTIONS[d])
            for t, b in zip(*np.nonzero(per_step)):
                order = int(lengths[b]) - 1 - int(t) if d == 1 else int(t)  # processing order
                key = (order, d, int(b))
                if best is None or key < best[0]:
                    best = (key, int(t), per_step)
        if best is not None:
            (_, d, b), t, per_step = best
            found.update(tensor="output", direction=DIRECTIONS[d], time_step=t, batch=b,
                         steps_differing=int(per_step.any(axis=1).sum()), steps_total=steps)
            return found
    for name in ("h_n", "c_n"):
        mask = run.bad.get(name)
        if mask is None:
            return dict(found, tensor=name)
        rows = np.asarray(state_rows(mask, case).any(axis=-1))  # (layers * directions, N)
        if rows.any():
            row, b = (int(i[0]) for i in np.nonzero(rows))
            differing = {DIRECTIONS[r % d_count] for r in np.nonzero(rows.any(axis=1))[0]}
            return dict(found, tensor=name, layer=row // d_count, direction=DIRECTIONS[row % d_count], batch=b,
                        directions=sorted(differing, key=DIRECTIONS.index))
    return dict(found, tensor="output")


def localise(candidate: Candidate, case: Case, ref: Reference, got: Outcome) -> tuple[Optional[Location], Optional[PieceResults]]:
    """Run the pieces; return the location and the run it was read from (the departing prefix)."""
    if not case.deterministic or (case.call.training and case.config.dropout > 0 and case.config.num_layers > 1):
        return None, None
    config = case.config
    state = {k: v.detach() for k, v in ref.model.state_dict().items()}
    args = ref.args
    x = args[0]
    d_count = config.num_directions
    pieces: list[Piece] = []

    # the layer stack, one prefix at a time
    num_layers = config.num_layers
    departing, departing_piece = num_layers - 1, None
    below = x  # torch's input to the departing layer
    for k in range(1, num_layers):
        sub = replace(config, num_layers=k, dropout=config.dropout if k > 1 else 0.0)
        run = _run(candidate, sub, _stack_weights(state, k), (x, *_hx(args, slice(0, k * d_count))), case)
        pieces.append(_piece(f"layers 0..{k - 1} (a {k}-layer model with the same weights)", run))
        if run.differs():
            departing, departing_piece = k - 1, run
            break
        below = run.raw
    if departing_piece is None:
        full = PieceResults(config, ref.torch, ref.oracle, got=got)
        full.bad = _masks(got, ref.torch, ref.oracle, config.dtype)
        departing_piece = full
    layer = departing
    one = replace(config, num_layers=1, dropout=0.0,
                  input_size=config.input_size if layer == 0 else d_count * config.output_size)
    layer_hx = _hx(args, slice(layer * d_count, (layer + 1) * d_count))
    if num_layers > 1:
        layer_in = x if layer == 0 else below
        run = _run(candidate, one, _layer_weights(state, layer), (layer_in, *layer_hx), case)
        pieces.append(_piece(f"layer {layer} alone, fed torch's input to it", run))
    else:
        layer_in = x
    if config.bidirectional:
        uni = replace(one, bidirectional=False)
        for d, name in enumerate(DIRECTIONS):
            inp = layer_in if d == 0 else _reverse_in_time(layer_in, case)
            dir_hx = _hx(args, slice(layer * d_count + d, layer * d_count + d + 1))
            run = _run(candidate, uni, _layer_weights(state, layer, d), (inp, *dir_hx), case)
            how = "" if d == 0 else " (a forward model on the time-reversed input)"
            pieces.append(_piece(f"layer {layer} {name} direction alone{how}", run))

    found = _first_departure(departing_piece, case)
    t = found.get("time_step")
    if t is not None and found.get("direction") == "forward" and 0 < t < _steps(x, case) - 1 and not case.call.packed:
        prefix = _first_steps(x, t + 1, case)
        run = _run(candidate, config, state, (prefix, *args[1:]), case)
        pieces.append(_piece(f"the first {t + 1} time steps alone", run))
    location = Location(found["tensor"], found.get("layer", layer), found.get("direction"), t,
                        None if case.call.unbatched else found.get("batch"),
                        tuple(dict.fromkeys(found["directions"])), found.get("steps_differing", 0),
                        found.get("steps_total", 0), tuple(pieces))
    return location, departing_piece


def _steps(x: Any, case: Case) -> int:
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(x, PackedSequence):
        return len(x.batch_sizes)
    return int(x.shape[_time_dim(case)])
