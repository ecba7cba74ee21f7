"""Training-mode dropout judged exactly: the masks a port drew, recovered from what it returned.

What torch does
---------------
In training mode ``nn.LSTM`` applies ``F.dropout(y, p)`` (``p`` = the module's ``dropout``) to the
output ``y`` of every layer but the last before it feeds the next layer: each element of that
(T, N, D * H_out) tensor is, independently, zeroed with probability ``p`` or kept and multiplied by
``1 / (1 - p)``.  Nothing else is dropped: not the input of layer 0, not the last layer's output,
not the recurrent state, not ``h_n``/``c_n``.

What is observable, and what is recovered
-----------------------------------------
A port draws its masks with whatever RNG it likes, so its result cannot be compared with torch's
random one.  It can be *explained*, though: the candidate returns the last layer's output and every
layer's ``h_n``/``c_n``, and layer ``l``'s states depend only on the masks below it.  For each
inter-layer tensor, layer by layer, :func:`recover` enumerates every legal mask (one bit per
element) of each batch element (batch elements never interact), evaluates torch's layer on all of
them at once (the masks stacked in the batch dimension: one float64 call per layer, one in the
case's dtype to measure torch's own error, and, where the policy measures it, one on data moved by
rounding's size), and keeps the masks under which layer ``l``'s states
(and, for the last layer, the output) agree with the candidate's within the tolerance policy
(:mod:`conformance.compare`).  The masks kept feed the next layer.  A batch element none of whose
masks fits is a failure that names the elements no legal mask explains (rule
``no-legal-dropout-mask``).  Cases whose enumeration is too big (more than :data:`MAX_BITS`
elements per batch element and tensor, more than :data:`MAX_LANES` masks per layer in all, or more
than :data:`MAX_SURVIVORS` masks that fit) are not recovered; they keep the checks that hold for any
correct port (layer 0's states exact).

Why it is sound
---------------
A correct port computed torch's function under some legal mask M.  M is among the masks tried at
every layer, and torch's float64 evaluation under M is within the tolerance of the port's result:
the tolerance is the policy's, with torch's own error (and the sensitivity, where the policy measures
it) taken over every mask tried, so at least their size under M, and its scale taken over the
values of the layer and the layers below under every mask tried, the magnitudes that layer's
rounding is relative to (at default initialisation the tolerance is the policy's floor).  So M is
kept at every layer and a correct port always passes.  Conversely a port that passes returned, to the policy's
precision, what torch returns under one legal mask.

Statistics
----------
One call's mask being legal says nothing about how the masks are drawn.  :func:`mask_statistics`
takes the masks recovered from many calls on one case (:func:`statistics_case`, small enough that
every mask is recovered uniquely, see :func:`separation`) and runs five exact tests, each at a
false-alarm rate of at most :data:`FALSE_ALARM`, computed in integers with ``math.comb`` (no
normal approximation):

* independence between calls, batch elements, time steps and features: elements are paired
  (calls 2r and 2r+1, batch elements 2b and 2b+1, ...) and, given how many of the paired elements
  are dropped, the number of pairs whose two elements differ has an exact distribution that does not
  depend on the drop rate (:func:`discordance_weights`); too few (or too many) such pairs is a
  dependence.  A port that drops at the wrong rate is therefore never taken for one that reuses masks;
* the rate: the number of drops against Binomial(elements, p), two-sided.

A correct port's masks are independent Bernoulli(p) draws, under which each test rejects with
probability at most :data:`FALSE_ALARM`; the five together at most five times that.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, Optional, Sequence

import numpy as np

from .arrays import LSTMConfig
from .case import Call, Case
from .compare import Tolerance, compare_values, tolerance, value_scale, within
from .layout import state_rows, time_major
from .outcome import Outcome
from .reference import Reference, beyond_unit_scale, jiggler
from .verdict import Problem

__all__ = ["DROPPED", "FALSE_ALARM", "KEPT", "MAX_BITS", "MAX_LANES", "MAX_SURVIVORS", "PADDING", "STATISTICS_CALLS",
           "SWITCH_MODES", "UNKNOWN", "Recovery", "binomial_rejects", "binomial_tail", "discordance_weights",
           "independence_rejects", "mask_statistics", "recover", "recoverable", "separation", "statistics_case"]

#: Mask elements of one batch element and one tensor that are enumerated: 2**MAX_BITS masks.
MAX_BITS = 12
#: Masks that fit, per batch element, carried up to the next layer; more, and the case is not judged further.
MAX_SURVIVORS = 16
#: Masks evaluated for one layer, over all batch elements (each one lane of torch's batch); more, and the
#: case is not judged further: a bound on the time a case takes.
MAX_LANES = 1 << 12
#: The false-alarm rate of each statistical test.
FALSE_ALARM = 1e-6
#: How many calls the statistics check makes on one instance.
STATISTICS_CALLS = 60
#: The training mode of each call of the train/eval switch check on one instance: eval twice (a port
#: that carries state between calls fails there, with its own diagnosis), then training, then eval.
SWITCH_MODES = (False, False, True, False)

#: Values of a recovered mask element.
KEPT, DROPPED, UNKNOWN, PADDING = 1, 0, -1, -2


@dataclass
class Recovery:
    """The masks recovered from one call, and the problems found recovering them.

    ``masks`` holds one (T, N, F) array per dropped tensor, in order (without ``input_dropout``: the
    outputs of layers 0 .. L-2), of :data:`KEPT`, :data:`DROPPED`, :data:`UNKNOWN` (not recovered, or
    several masks fit and differ there) and :data:`PADDING` (past a packed sequence's end).
    """

    masks: tuple[np.ndarray, ...]
    problems: list[Problem] = field(default_factory=list)
    judged: bool = True  # every batch element was judged up to the last layer

    @property
    def complete(self) -> bool:
        """Judged, explained, and every element of every mask known."""
        return self.judged and not self.problems and all(not (m == UNKNOWN).any() for m in self.masks)


# ------------------------------------------------------------------------------------ the case


#: The evaluations every mask is run through: torch's float64 evaluation (the oracle), torch in the
#: case's dtype (its own error), and, where the policy measures it, the oracle on data moved by
#: rounding's size (its sensitivity); see :mod:`conformance.compare`.
ORACLE, REFERENCE, PERTURBED = "oracle", "reference", "perturbed"
_PARTS = ("output", "h_n", "c_n")


@dataclass
class _Path:
    """Masks that fit so far for one batch element, and the layer output they lead to."""

    masks: tuple[np.ndarray, ...]  # (n, F) int8 per dropped tensor so far
    ys: dict  # per evaluation: the current layer's output (n, F), before dropout


@dataclass
class _Lanes:
    """One layer evaluated on every mask tried for one batch element (lane = a mask)."""

    below: list[_Path]  # the paths the lanes continue: lane i continues below[i // masks tried]
    masks: Optional[np.ndarray]  # the masks tried on this layer's input (k, n, F): lane i tries masks[i % k]
    values: dict  # per evaluation: {"output": (lanes, n, F), "h_n": (lanes, D, H_out), "c_n": (lanes, D, H)}

    @property
    def count(self) -> int:
        return len(self.below) * (1 if self.masks is None else len(self.masks))

    def lane(self, i: int) -> tuple[_Path, Optional[np.ndarray]]:
        """The path a lane continues and the mask it tries (None where the input is not dropped)."""
        if self.masks is None:
            return self.below[i], None
        return self.below[i // len(self.masks)], self.masks[i % len(self.masks)]

    def oracle(self, name: str) -> Any:
        return self.values[ORACLE][name]


class _Setup:
    """A case's weights and inputs, per evaluation, and the candidate's result, time-major and batched."""

    def __init__(self, case: Case, ref: Reference) -> None:
        import torch
        from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

        cfg = self.config = case.config
        self.case = case
        dtype = getattr(torch, cfg.dtype)
        args = ref.args
        x = args[0]
        if isinstance(x, PackedSequence):
            padded, lengths = pad_packed_sequence(x)  # time-major, the caller's batch order
            x, self.lengths = padded, [int(n) for n in lengths]
        else:
            x = x.detach()
            if case.call.unbatched:
                x = x.unsqueeze(1)
            elif cfg.batch_first:
                x = x.transpose(0, 1)
            self.lengths = [int(x.shape[0])] * int(x.shape[1])
        rows, batch = cfg.num_layers * cfg.num_directions, len(self.lengths)
        if len(args) > 1:
            h0, c0 = (t.detach() for t in args[1])
            if case.call.unbatched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        else:
            h0 = torch.zeros(rows, batch, cfg.output_size, dtype=dtype)
            c0 = torch.zeros(rows, batch, cfg.hidden_size, dtype=dtype)
        state = {k: v.detach() for k, v in ref.model.state_dict().items()}
        f64 = torch.float64
        data = (state, x.detach(), h0, c0)
        self.data = {ORACLE: (f64, *_cast(data, f64))}
        if dtype != f64:
            self.data[REFERENCE] = (dtype, *data)
        if beyond_unit_scale(case):
            self.data[PERTURBED] = (f64, *_jiggled(_cast(data, f64), cfg.dtype))
        # layer 0's states take no mask: part of every mask's result, for the policy's scale
        self.layer0 = [part[:cfg.num_directions] for part in (ref.oracle.h_n, ref.oracle.c_n)]
        self._weights: dict = {}
        self.evaluated: dict = {}  # layer evaluations, which depend on the masks below, never on the candidate

    def observe(self, got: Outcome) -> None:
        """The candidate's result to explain, time-major and batched, in float64."""
        case = self.case
        self.got = {"output": time_major(got.output, self.config, case).astype(np.float64),
                    "h_n": state_rows(got.h_n, case).astype(np.float64),
                    "c_n": state_rows(got.c_n, case).astype(np.float64)}

    @classmethod
    def of(cls, case: Case, ref: Reference) -> "_Setup":
        """The setup of ``expected``, kept for the next calls on the same case (repeated calls)."""
        kept = _SETUPS.get(id(ref))
        if kept is None or kept[0] is not ref or kept[1].case != case:
            _SETUPS.clear()
            kept = _SETUPS[id(ref)] = (ref, cls(case, ref))
        return kept[1]

    def weights(self, layer: int, evaluation: str) -> list:
        """Layer ``layer``'s weights in that evaluation, in the order torch's LSTM kernel takes them."""
        key = (layer, evaluation)
        if key not in self._weights:
            state = self.data[evaluation][1]
            names = [n for n in self.config.weight_names() if (m := _NAME.match(n)) and int(m.group(2)) == layer]
            self._weights[key] = [state[n] for n in names]
        return self._weights[key]


_SETUPS: dict[int, tuple[Reference, _Setup]] = {}

_NAME = re.compile(r"^(.*)_l(\d+)(_reverse)?$")


def _cast(data: tuple, dtype: Any) -> tuple:
    state, *tensors = data
    return ({k: v.to(dtype) for k, v in state.items()}, *(t.to(dtype) for t in tensors))


def _jiggled(data: tuple, dtype: str) -> tuple:
    """Every weight and input element moved by rounding's size, as the policy's sensitivity measurement
    moves them (:func:`~conformance.reference.jiggler`)."""
    jiggle = jiggler(dtype)
    state, *tensors = data
    return ({k: jiggle(v) for k, v in state.items()}, *(jiggle(t) for t in tensors))


def _width(config: LSTMConfig, layer: int) -> int:
    """Features of the input of ``layer``."""
    return config.input_size if layer == 0 else config.num_directions * config.output_size


def _dropped_layers(config: LSTMConfig, input_dropout: bool) -> range:
    """The layers whose input is dropped: 1 .. L-1 as torch does, or 0 .. L-1 with ``input_dropout``."""
    return range(0 if input_dropout else 1, config.num_layers)


def _lengths(case: Case) -> list[int]:
    call = case.call
    if call.packed:
        return list(call.lengths or ())  # always set for packed input
    return [call.seq_len] * (1 if call.unbatched else int(call.batch or 0))


def recoverable(case: Case, input_dropout: bool = False) -> bool:
    """Whether :func:`recover` enumerates this case's masks: at most :data:`MAX_BITS` elements per batch
    element and dropped tensor, and :data:`MAX_LANES` masks in all per layer."""
    cfg = case.config
    if not case.call.training or not 0 < cfg.dropout < 1:
        return False
    if not input_dropout and cfg.num_layers < 2:
        return False
    lengths = _lengths(case)
    longest = max(lengths, default=0)
    bits = [longest * _width(cfg, layer) for layer in _dropped_layers(cfg, input_dropout)]
    return all(k <= MAX_BITS and len(lengths) << k <= MAX_LANES for k in bits)


@lru_cache(maxsize=None)
def _all_masks(steps: int, features: int) -> np.ndarray:
    """Every (steps, features) 0/1 mask: (2**(steps * features), steps, features), int8."""
    bits = steps * features
    codes = np.arange(1 << bits, dtype=np.int64)[:, None] >> np.arange(bits, dtype=np.int64)
    return (codes & 1).astype(np.int8).reshape(-1, steps, features)


# ------------------------------------------------------------------------------ evaluation


def _run(setup: _Setup, layer: int, inputs: list, members: list[int], evaluation: str) -> dict:
    """Layer ``layer`` on ``inputs`` (one (n, lanes_b, F) tensor per batch element in ``members``, all of
    one length n), each lane starting from its batch element's initial state: output, h_n, c_n, lanes
    stacked in dimension 1."""
    import torch

    cfg = setup.config
    h0_all, c0_all = setup.data[evaluation][3:]
    rows = slice(layer * cfg.num_directions, (layer + 1) * cfg.num_directions)
    x = torch.cat(inputs, 1)
    counts = [t.shape[1] for t in inputs]
    index = torch.repeat_interleave(torch.as_tensor(members, dtype=torch.long), torch.as_tensor(counts))
    h0, c0 = h0_all[rows][:, index], c0_all[rows][:, index]
    weights = setup.weights(layer, evaluation)
    with torch.no_grad(), warnings.catch_warnings():
        # torch warns once per process that projections bypass oneDNN; it says nothing about the case
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
        # torch's LSTM kernel, as nn.LSTM calls it: one layer, no dropout, time-major
        result = torch.lstm(x, (h0.contiguous(), c0.contiguous()), weights, cfg.bias, 1, 0.0, False,
                            cfg.bidirectional, False)
    return dict(zip(_PARTS, result))


def _evaluate(setup: _Setup, layer: int, paths: dict[int, list[_Path]], dropped: bool,
              scale: float) -> dict[int, _Lanes]:
    """Layer ``layer`` for each batch element, on every (path, mask) lane: the paths' outputs (or, for
    layer 0, the input), each masked by every legal mask when ``dropped``."""
    key = (layer, dropped, scale, tuple((b, tuple(m.tobytes() for path in paths[b] for m in path.masks))
                                        for b in sorted(paths)))
    if key not in setup.evaluated:
        if len(setup.evaluated) > 8:
            setup.evaluated.clear()
        setup.evaluated[key] = _evaluate_now(setup, layer, paths, dropped, scale)
    return setup.evaluated[key]


def _evaluate_now(setup: _Setup, layer: int, paths: dict[int, list[_Path]], dropped: bool,
                  scale: float) -> dict[int, _Lanes]:
    import torch

    groups: dict[int, list[int]] = {}
    for b in paths:
        groups.setdefault(setup.lengths[b], []).append(b)
    result: dict[int, _Lanes] = {}
    for n, members in groups.items():
        masks_tried = _all_masks(n, _width(setup.config, layer)) if dropped else None
        values = {}
        for evaluation, (dtype, _, x, _, _) in setup.data.items():
            inputs = []
            for b in members:
                if layer == 0:
                    y = x[:n, b].expand(len(paths[b]), n, x.shape[-1])
                else:
                    y = torch.stack([path.ys[evaluation] for path in paths[b]], 0)  # (S, n, F)
                if dropped:
                    masks = torch.from_numpy(_all_masks(n, y.shape[-1])).to(dtype) * scale  # as torch scales them
                    y = (y[:, None] * masks[None]).reshape(-1, n, y.shape[-1])
                inputs.append(y.transpose(0, 1))
            values[evaluation] = _run(setup, layer, inputs, members, evaluation)
        start = 0
        for b in members:
            count = len(paths[b]) * (1 if masks_tried is None else len(masks_tried))
            lanes = slice(start, start + count)
            start += count
            result[b] = _Lanes(paths[b], masks_tried, {evaluation: {name: value[:, lanes].transpose(0, 1)
                                                                    for name, value in parts.items()}
                                                       for evaluation, parts in values.items()})
    return result


def _largest(lanes: dict[int, _Lanes]) -> list[np.ndarray]:
    """The largest finite magnitude of each tensor of this layer's oracle lanes (for the policy's scale)."""
    out = []
    for v in lanes.values():
        for name in _PARTS:
            values = np.abs(v.oracle(name).double().numpy())
            values = values[np.isfinite(values)]
            if values.size:
                out.append(np.asarray([values.max()]))
    return out


def _tolerances(setup: _Setup, lanes: dict[int, _Lanes], below: list[np.ndarray]) -> dict[str, Tolerance]:
    """The policy's tolerance for each tensor of this layer, with torch's own error (and the sensitivity,
    where measured) taken over every lane, and the scale over every lane's values of this layer and
    the layers below (``below``: their largest magnitudes), which its rounding is relative to."""
    dtype = setup.config.dtype

    def flat(evaluation: str, name: str) -> np.ndarray:
        arrays = [v.values[evaluation][name].double().numpy().ravel() for v in lanes.values()]
        return np.concatenate(arrays) if arrays else np.zeros(0)

    def evaluated(evaluation: str, name: str) -> Optional[np.ndarray]:  # None: not evaluated in this setup
        return flat(evaluation, name) if evaluation in setup.data else None

    scale = value_scale([flat(ORACLE, name) for name in _PARTS] + [np.asarray(a) for a in setup.layer0] + below)
    tols = {}
    for name in _PARTS:
        oracle = flat(ORACLE, name)
        reference = evaluated(REFERENCE, name)
        tols[name] = tolerance(dtype, oracle if reference is None else reference, oracle, scale=scale,
                               perturbed=evaluated(PERTURBED, name))
    return tols


def _fit(setup: _Setup, layer: int, b: int, v: _Lanes, tols: dict[str, Tolerance], last: bool,
         output_dropped: bool, scale: float) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Per lane: does it explain the candidate's observables of this layer (bool); and where none does,
    the lanes from the closest to the farthest (fewest elements outside the tolerance, then the smallest
    excess), else None."""
    cfg = setup.config
    rows = slice(layer * cfg.num_directions, (layer + 1) * cfg.num_directions)
    n = setup.lengths[b]
    checks = [(setup.got[name][rows, b], v.oracle(name).numpy(), tols[name]) for name in ("h_n", "c_n")]
    count = v.count
    ok = np.ones(count, dtype=bool)
    judged: list[tuple[np.ndarray, Optional[tuple[np.ndarray, np.ndarray, Tolerance]]]] = []
    if last:
        out = v.oracle("output").numpy()
        mine = setup.got["output"][:n, b]
        if output_dropped:  # each element dropped (0) or kept and scaled
            mine = np.broadcast_to(mine, out.shape)
            kept = within(mine, out * scale, tols["output"]) | within(mine, np.zeros_like(out), tols["output"])
            judged.append((kept.reshape(count, -1), None))
            ok &= judged[-1][0].all(axis=1)
        else:
            checks.append((mine, out, tols["output"]))
    for mine, lanes, tol in checks:
        mine = np.broadcast_to(mine, lanes.shape)
        elements = within(mine, lanes, tol).reshape(count, -1)
        judged.append((elements, (mine, lanes, tol)))
        ok &= elements.all(axis=1)
    if ok.any():
        return ok, None
    bad = sum((~elements).sum(axis=1) for elements, _ in judged)
    excess = np.zeros(count)
    for _, compared in judged:
        if compared is not None:
            mine, lanes, tol = compared
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.abs(mine - lanes) / (tol.atol + tol.rtol * np.abs(lanes))
            ratio = np.where(np.isnan(ratio), np.inf, ratio).reshape(count, -1)
            excess = np.maximum(excess, ratio.max(axis=1, initial=0.0))
    return ok, np.lexsort((excess, bad))


def _survivors(v: _Lanes, ok: np.ndarray, dropped: bool) -> list[_Path]:
    """The lanes that fit, as paths; lanes leading to the same output are merged (their masks differ
    only where the masked value is 0), the bits where they differ becoming UNKNOWN."""
    merged: dict[bytes, _Path] = {}
    out = {evaluation: parts["output"] for evaluation, parts in v.values.items()}
    for lane in np.nonzero(ok)[0]:
        path, mask = v.lane(int(lane))
        key = out[ORACLE][lane].numpy().tobytes()
        masks = path.masks + ((mask,) if dropped and mask is not None else ())  # dropped: a mask was tried
        if key in merged:
            old = merged[key]
            masks = tuple(np.where(a == m, a, UNKNOWN).astype(np.int8) for a, m in zip(old.masks, masks))
            merged[key] = _Path(masks, old.ys)
        else:
            merged[key] = _Path(masks, {evaluation: y[lane] for evaluation, y in out.items()})
    return list(merged.values())


# ---------------------------------------------------------------------------------- recovery


def recover(case: Case, ref: Reference, got: Outcome, call: int = 1, scale: Optional[float] = None,
            input_dropout: bool = False, output_dropped: bool = False) -> Optional[Recovery]:
    """The legal masks that explain ``got`` (see the module docstring); ``None`` when the case is not
    :func:`recoverable`.

    The other arguments ask what-ifs, for recognising a wrong dropout rule: ``scale`` multiplies the
    kept elements instead of ``1 / (1 - p)``; ``input_dropout`` drops the input of layer 0 as well;
    ``output_dropped`` drops the last layer's output as well.
    """
    if not recoverable(case, input_dropout):
        return None
    cfg = case.config
    p = float(cfg.dropout)
    scale = 1.0 / (1.0 - p) if scale is None else float(scale)
    setup = _Setup.of(case, ref)
    setup.observe(got)
    dropped_layers = _dropped_layers(cfg, input_dropout)
    first_judged = dropped_layers.start
    batch = len(setup.lengths)
    paths: dict[int, list[_Path]] = {b: [_Path((), {})] for b in range(batch)}
    failures: dict[int, tuple[int, int, _Lanes]] = {}  # b -> (layer, closest lane, lanes)
    judged = True
    tols_at: dict[int, dict[str, Tolerance]] = {}
    below: list[np.ndarray] = []  # the largest magnitudes of the layers below, under every mask tried
    for layer in range(cfg.num_layers):
        if not paths:
            break
        dropped = layer in dropped_layers
        bits = {b: setup.lengths[b] * _width(cfg, layer) if dropped else 0 for b in paths}
        tried = sum(len(found) << bits[b] for b, found in paths.items())
        if tried > MAX_LANES:  # masks that fit below are too many to carry on: not judged further
            judged = False
            break
        lanes = _evaluate(setup, layer, paths, dropped, scale)
        if layer < first_judged:  # torch's own layers below the first dropout: nothing to choose
            paths = {b: _survivors(v, np.ones(v.count, bool), dropped) for b, v in lanes.items()}
            below += _largest(lanes)
            continue
        tols = tols_at[layer] = _tolerances(setup, lanes, below)
        below += _largest(lanes)
        last = layer == cfg.num_layers - 1
        following: dict[int, list[_Path]] = {}
        for b, v in lanes.items():
            ok, order = _fit(setup, layer, b, v, tols, last, output_dropped and last, scale)
            if order is not None:  # no lane fits: the closest first
                failures[b] = (layer, int(order[0]), v)
                continue
            survivors = _survivors(v, ok, dropped)
            if len(survivors) > MAX_SURVIVORS:  # too ambiguous to carry on: not judged further
                judged = False
                continue
            following[b] = survivors
        paths = following
    masks = _masks(setup, dropped_layers, paths)
    problems = _problems(setup, failures, tols_at, call) if failures else []
    return Recovery(masks, problems, judged)


def _masks(setup: _Setup, dropped_layers: range, paths: dict[int, list[_Path]]) -> tuple[np.ndarray, ...]:
    steps, batch = int(setup.got["output"].shape[0]), len(setup.lengths)
    out = []
    for k, layer in enumerate(dropped_layers):
        mask = np.full((steps, batch, _width(setup.config, layer)), UNKNOWN, dtype=np.int8)
        for b, n in enumerate(setup.lengths):
            mask[n:, b] = PADDING
            found = paths.get(b)
            if found and len(found[0].masks) > k:
                first = found[0].masks[k]
                agreed = first.copy()
                for other in found[1:]:
                    agreed[other.masks[k] != first] = UNKNOWN
                mask[:n, b] = agreed
        out.append(mask)
    return tuple(out)


def _problems(setup: _Setup, failures: dict[int, tuple[int, int, _Lanes]], tols_at: dict[int, dict[str, Tolerance]],
              call: int) -> list[Problem]:
    """What no legal mask explains: the lowest layer where a batch element fails, each tensor compared with
    torch under the closest legal mask (elements judged elsewhere or not at all are left as the candidate's)."""
    case, cfg = setup.case, setup.config
    layer = min(at for at, _, _ in failures.values())
    failing = {b: (lane, v) for b, (at, lane, v) in failures.items() if at == layer}
    rows = slice(layer * cfg.num_directions, (layer + 1) * cfg.num_directions)
    got = setup.got
    names = (["output"] if layer == cfg.num_layers - 1 else []) + ["h_n", "c_n"]
    problems = []
    for name in names:
        explained = got[name].copy()
        for b, (lane, v) in failing.items():
            if name == "output":
                explained[:setup.lengths[b], b] = v.oracle(name)[lane].numpy()
            else:
                explained[rows, b] = v.oracle(name)[lane].numpy()
        mine, theirs = _as_returned(got[name], name, case), _as_returned(explained, name, case)
        mismatch = compare_values(name, mine, theirs, tols_at[layer][name])
        if mismatch is not None:
            elements = sorted(failing)
            problems.append(Problem(
                "values", f"no legal dropout mask (each element dropped, or kept and scaled by 1/(1-p)) explains "
                          f"layer {layer}'s {name} of batch element(s) {elements}",
                mismatch=mismatch, tensor=name, call=call, rule="no-legal-dropout-mask",
                region=f"no legal dropout mask explains layer {layer}"))
    return problems


def _as_returned(array: np.ndarray, name: str, case: Case) -> np.ndarray:
    """A time-major output (or batched state rows) back in the layout the candidate returned it in."""
    if case.call.unbatched:
        return array[:, 0]
    if name == "output" and case.config.batch_first and not case.call.packed:
        return array.swapaxes(0, 1)
    return array


# ------------------------------------------------------------------------------ statistics


def _rational(value: float) -> Fraction:
    """A probability as the exact fraction its decimal repr says (0.3 is 3/10)."""
    return Fraction(repr(float(value)))


def binomial_tail(k: int, n: int, q: float, upper: bool) -> Fraction:
    """The exact tail of Binomial(n, q), q read as its decimal: P(X >= k) if ``upper``, else P(X <= k).

    Summed in integers: term j is ``comb(n, j) * u**j * w**(n - j)`` over ``v**n`` (q = u/v, w = v - u),
    each term got from the one before by an exact division."""
    frac = _rational(q)
    u, v = frac.numerator, frac.denominator
    w = v - u
    first, last = (max(k, 0), n) if upper else (0, min(k, n))
    if first > last:
        return Fraction(0)
    term = math.comb(n, first) * u ** first * w ** (n - first)
    total = 0
    for j in range(first, last + 1):
        total += term
        if j < last:
            term = term * (n - j) * u // ((j + 1) * w)
    return Fraction(total, v ** n)


def binomial_rejects(k: int, n: int, q: float, alpha: float = FALSE_ALARM) -> bool:
    """Two-sided exact test: is ``k`` successes in ``n`` trials too few or too many for probability ``q``?
    Under Binomial(n, q) it rejects with probability at most ``alpha``."""
    if n == 0:
        return False
    limit = _rational(alpha) / 2
    return binomial_tail(k, n, q, upper=False) <= limit or binomial_tail(k, n, q, upper=True) <= limit


def discordance_weights(pairs: int, drops: int) -> dict[int, int]:
    """For ``pairs`` pairs of mask elements holding ``drops`` drops in all: for each number d of pairs whose
    two elements differ, how many of the ``comb(2 * pairs, drops)`` placements of the drops give d.

    Independent draws at any one rate make every placement equally likely, so d / that total is the
    exact distribution of d given the drops, whatever the rate."""
    weights = {}
    for d in range(drops % 2, min(drops, 2 * pairs - drops) + 1, 2):
        both = (drops - d) // 2  # pairs with both elements dropped
        weights[d] = math.comb(pairs, both) * math.comb(pairs - both, d) << d
    return weights


def independence_rejects(discordant: int, pairs: int, drops: int, alpha: float = FALSE_ALARM) -> bool:
    """Two-sided exact conditional test: given the drops, are there too few or too many pairs whose
    elements differ for independent draws?  Rejects a correct port with probability at most ``alpha``,
    whatever its drop rate, so a wrong rate is never taken for a dependence."""
    if pairs == 0:
        return False
    weights = discordance_weights(pairs, drops)
    total = math.comb(2 * pairs, drops)
    limit = _rational(alpha) / 2
    lower = sum(n for d, n in weights.items() if d <= discordant)
    upper = sum(n for d, n in weights.items() if d >= discordant)
    return Fraction(lower, total) <= limit or Fraction(upper, total) <= limit


def _pairs(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """(pairs whose elements differ, pairs, drops among them) over the pairs of known elements."""
    known = (a >= 0) & (b >= 0)
    differ = int(((a != b) & known).sum())
    drops = int(((a == DROPPED) & known).sum() + ((b == DROPPED) & known).sum())
    return differ, int(known.sum()), drops


#: The pairs of mask elements tested for independence, by the rule a rejection breaks (most telling first).
_PAIRS = {
    "mask-reused-across-calls": "of calls 2r and 2r+1 at the same position",
    "mask-shared-across-batch": "of batch elements 2b and 2b+1 at the same time step and feature",
    "mask-shared-across-time": "at time steps 2t and 2t+1 of the same batch element and feature",
    "mask-shared-across-features": "of features 2f and 2f+1 at the same time step and batch element",
}


def mask_statistics(masks: Sequence[Sequence[np.ndarray]], p: float, alpha: float = FALSE_ALARM) -> list[Problem]:
    """Test masks recovered from repeated calls (one sequence of (T, N, F) masks per call) for
    independence between calls, batch elements, time steps and features (exact conditional tests),
    and for the rate ``p`` (exact binomial test); each test has false-alarm rate ``alpha``.  Elements
    that are not KEPT or DROPPED are left out."""
    calls = len(masks)
    counts = {rule: [0, 0, 0] for rule in _PAIRS}

    def add(rule: str, a: np.ndarray, b: np.ndarray) -> None:
        for i, value in enumerate(_pairs(a, b)):
            counts[rule][i] += value

    flat = [m for per_call in masks for m in per_call]
    for r in range(0, calls - 1, 2):
        for a, b in zip(masks[r], masks[r + 1]):
            add("mask-reused-across-calls", a, b)
    for m in flat:
        steps, batch, features = m.shape
        add("mask-shared-across-time", m[0:steps - 1:2], m[1:steps:2])
        add("mask-shared-across-batch", m[:, 0:batch - 1:2], m[:, 1:batch:2])
        add("mask-shared-across-features", m[..., 0:features - 1:2], m[..., 1:features:2])
    problems = []
    for rule, (differ, pairs, drops) in counts.items():
        if independence_rejects(differ, pairs, drops, alpha):
            agreeing = pairs - drops * (2 * pairs - drops) / (2 * pairs - 1)
            problems.append(Problem("values", (
                f"over {calls} calls, dropout mask elements {_PAIRS[rule]} agree in {pairs - differ} of {pairs} "
                f"pairs; independent draws with as many drops ({drops} of {2 * pairs}) agree in {agreeing:.0f} "
                f"on average (exact conditional test, false-alarm rate {alpha:g})"), tensor="dropout mask", rule=rule))
    known = sum(int((m >= 0).sum()) for m in flat)
    dropped = sum(int((m == DROPPED).sum()) for m in flat)
    if binomial_rejects(dropped, known, p, alpha):
        swapped = not binomial_rejects(dropped, known, 1.0 - p, alpha)
        detail = (f"over {calls} calls the recovered dropout masks drop {dropped} of {known} elements "
                  f"({dropped / known:.1%}), unlikely with dropout={p:g} (exact binomial test, false-alarm rate "
                  f"{alpha:g})")
        if swapped:
            detail += f"; it is what dropping with probability 1 - dropout = {1 - p:g} gives"
        problems.append(Problem("values", detail, tensor="dropout mask",
                                rule="dropout-rate-swapped" if swapped else "dropout-rate"))
    return problems


def statistics_case(dtype: str = "float32") -> Case:
    """The case the statistics check calls repeatedly: two layers, so every mask is seen through the
    last layer's whole output, and small enough that each call's mask is recovered uniquely."""
    config = LSTMConfig(input_size=3, hidden_size=2, num_layers=2, dropout=0.3, dtype=dtype)
    return Case(config, Call(seq_len=4, batch=3, training=True, seed=1), weight_seed=1)


def separation(case: Case, ref: Reference) -> float:
    """How far apart torch's results under different legal masks are, in units of what the tolerance
    lets two masks share: above 1, at most one mask can explain any result, so recovery is unique.
    For cases with two layers (one dropped tensor)."""
    import torch

    if case.config.num_layers != 2 or not recoverable(case):
        raise ValueError("separation is measured on recoverable two-layer cases")
    setup = _Setup.of(case, ref)
    below = _evaluate(setup, 0, {b: [_Path((), {})] for b in range(len(setup.lengths))}, False, 1.0)
    paths = {b: _survivors(v, np.ones(v.count, bool), False) for b, v in below.items()}
    lanes = _evaluate(setup, 1, paths, True, 1.0 / (1.0 - float(case.config.dropout)))
    tols = _tolerances(setup, lanes, _largest(below))
    worst = math.inf
    for v in lanes.values():
        count = v.count
        values = torch.cat([v.oracle(name).reshape(count, -1) for name in _PARTS], 1).numpy()
        atol = np.concatenate([np.full(v.oracle(name)[0].numel(), tols[name].atol) for name in _PARTS])
        rtol = np.concatenate([np.full(v.oracle(name)[0].numel(), tols[name].rtol) for name in _PARTS])
        gap = np.abs(values[:, None] - values[None])
        allowed = 2 * atol + rtol * (np.abs(values[:, None]) + np.abs(values[None]))
        ratio = (gap / allowed).max(axis=-1)
        np.fill_diagonal(ratio, np.inf)
        worst = min(worst, float(ratio.min()))
    return worst
