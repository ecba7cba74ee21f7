"""Every broken port gets the right localisation and the right hint; correct ports get none.

Each row is a small case on which the port's bug shows, the location the suite must report
(tensor, layer, direction, time step, batch element; ``None`` where the difference is not in
the values, e.g. a wrong shape or an exception), and the recogniser that must name the bug.
The cases run in-process (``check_forward(..., diagnose=True)``), so this file is fast.
"""

from __future__ import annotations

import pytest

from conformance.arrays import LSTMConfig as C
from conformance.case import Call, Case
from conformance.checks import check_forward
from conformance.hints import RECOGNISERS, Evidence, recognise
from conformance.registry import resolve
from conformance.verdict import ConformanceFailure
from tests.ports.broken import CATALOGUE

PACKED = dict(packing="pack_padded_sequence", lengths=(5, 3, 2))
UNSORTED = dict(packing="pack_padded_sequence", lengths=(2, 5, 3), enforce_sorted=False)

#: name -> (case, (tensor, layer, direction, time step, batch element) or None, recogniser)
DIAGNOSES: dict[str, tuple[Case, object, str]] = {
    "onnx-gate-order": (Case(C(3, 4), Call(5, 2)), ("output", 0, "forward", 0, 0), "gate-order"),
    "tf-forget-bias": (Case(C(3, 4), Call(5, 2)), ("output", 0, "forward", 1, 0), "forget-bias"),
    "single-bias": (Case(C(3, 4), Call(5, 2)), ("output", 0, "forward", 0, 0), "single-bias"),
    "hidden-tile-64": (Case(C(3, 72), Call(3, 2)), ("output", 0, "forward", 1, 0), "hidden-block"),
    "float32-inside": (Case(C(3, 4, dtype="float64"), Call(5, 2)), ("output", 0, "forward", 0, 0), "float32-inside"),
    "hn-direction-major": (Case(C(3, 4, num_layers=2, bidirectional=True), Call(5, 2)),
                           ("h_n", 0, "reverse", None, 0), "state-layout"),
    "hn-batch-first": (Case(C(3, 4, batch_first=True), Call(5, 2)), None, "states-batch-first"),
    "cn-projected": (Case(C(3, 4, proj_size=2), Call(5, 2)), None, "projection-on-c"),
    "hidden-init-no-directions": (Case(C(3, 4, bidirectional=True), Call(5, 2)), None, "zero-state-shape"),
    "reverse-not-flipped": (Case(C(3, 4, bidirectional=True), Call(5, 2)), ("output", 0, "reverse", 4, 0),
                            "reverse-not-flipped"),
    "onnx-output-reshape": (Case(C(3, 4, bidirectional=True), Call(5, 3)), ("output", 0, "forward", 0, 1),
                            "directions-interleaved"),
    "reverse-uses-forward-weights": (Case(C(3, 4, num_layers=2, bidirectional=True), Call(5, 2)),
                                     ("output", 1, "reverse", 4, 0), "upper-layer-weights"),
    "shared-hidden-weights": (Case(C(3, 4, num_layers=2), Call(5, 2)), ("output", 1, "forward", 1, 0),
                              "upper-layer-weights"),
    "packed-reverse-from-padded-end": (Case(C(3, 4, bidirectional=True), Call(5, 3, **PACKED)),
                                       ("output", 0, "reverse", 2, 1), "packed-reverse-from-padded-end"),
    "packed-final-state-at-padded-end": (Case(C(3, 4), Call(5, 3, **PACKED)), ("h_n", 0, "forward", None, 1),
                                         "packed-state-not-held"),
    "hx-not-permuted": (Case(C(3, 4), Call(5, 3, with_hx=True, **UNSORTED)), ("output", 0, "forward", 0, 0),
                        "hx-not-permuted"),
    "c-permuted-from-h": (Case(C(3, 4), Call(5, 3, with_hx=True, **UNSORTED)), ("output", 0, "forward", 0, 0),
                          "c0-from-h0"),
    "states-not-unpermuted": (Case(C(3, 4), Call(5, 3, **UNSORTED)), ("h_n", 0, "forward", None, 0), "state-layout"),
    "stable-resort": (Case(C(3, 4), Call(2, 17, packing="pack_padded_sequence", lengths=(1,) * 17,
                                         enforce_sorted=False)), ("h_n", 0, "forward", None, 0), "state-layout"),
    "dropout-in-eval": (Case(C(3, 4, num_layers=2, dropout=0.5), Call(5, 2)), ("output", 1, "forward", 0, 0),
                        "dropout-in-eval"),
    "dropout-after-last-layer": (Case(C(3, 4, dropout=0.5), Call(5, 2, training=True)),
                                 ("output", 0, "forward", 0, 0), "dropout-on-output"),
    "recurrent-dropout": (Case(C(3, 4, num_layers=2, dropout=0.5), Call(5, 2, training=True)), None,
                          "recurrent-dropout"),
    "c0-ignored": (Case(C(3, 4), Call(5, 2, with_hx=True)), ("output", 0, "forward", 0, 0), "c0-ignored"),
    "swapped-hc": (Case(C(3, 4), Call(5, 2, with_hx=True)), ("output", 0, "forward", 0, 0), "hx-swapped"),
    "stateful": (Case(C(3, 4), Call(5, 2)), None, "second-call"),
    "updates-c0-in-place": (Case(C(3, 4), Call(5, 2, with_hx=True)), None, "mutates-input"),
    "unbatched-batch-first-dim0": (Case(C(3, 4, batch_first=True), Call(5, None)), None, "unbatched-as-batched"),
    "squeeze-batch": (Case(C(3, 4), Call(5, 1)), None, "squeezed-size-one"),
    "numpy-kernel": (Case(C(3, 4), Call(5, 2, requires_grad=True)), None, "numpy-of-grad-tensor"),
    "assumes-contiguous": (Case(C(3, 4), Call(5, 2, layout="transposed")), ("output", 0, "forward", 0, 1),
                           "noncontiguous-input"),
    "max-steps-64": (Case(C(3, 4), Call(70, 2)), ("output", 0, "forward", 64, 0), "fixed-step-buffer"),
}
#: ports outside the drop-in catalogue that show a recogniser of their own
OTHER_PORTS = {"tests.ports.adapters:SwappedStatesAdapter": (Case(C(3, 4), Call(5, 2)), ("h_n", 0, "forward", None, 0),
                                                            "states-swapped")}


def _failure(path: str, case: Case) -> ConformanceFailure:
    with pytest.raises(ConformanceFailure) as info:
        check_forward(resolve(path), case, repeat="Stateful" in path, diagnose=True)  # it shows on a second call
    return info.value


def _located(failure: ConformanceFailure) -> object:
    loc = failure.location
    return None if loc is None else (loc.tensor, loc.layer, loc.direction, loc.time_step, loc.batch_element)


def test_every_broken_port_has_a_diagnosis() -> None:
    assert set(DIAGNOSES) == set(CATALOGUE)


def test_every_recogniser_is_shown_by_some_port() -> None:
    shown = {hint for _, _, hint in [*DIAGNOSES.values(), *OTHER_PORTS.values()]}
    assert shown == {r.name for r in RECOGNISERS}


@pytest.mark.parametrize("name", list(DIAGNOSES))
def test_broken_port_gets_its_location_and_hint(name: str) -> None:
    case, location, hint = DIAGNOSES[name]
    failure = _failure(f"tests.ports.broken:{CATALOGUE[name].__name__}", case)
    assert _located(failure) == location, failure
    assert failure.hint is not None and failure.hint.name == hint, failure
    rendered = str(failure)
    assert f"Likely bug: {failure.hint.bug} [{hint}]" in rendered
    if location is not None:
        assert "Where: first departs from torch at layer" in rendered


#: the minimal cases hypothesis reported in the suite's own runs, where a first hint was wrong
MINIMAL = {
    "hn-direction-major": Case(C(1, 2, num_layers=2, bidirectional=True), Call(1)),
    "recurrent-dropout": Case(C(1, 1, dropout=1.0), Call(2, training=True)),
    "squeeze-batch": Case(C(1, 1), Call(1)),
}


@pytest.mark.parametrize("name", list(MINIMAL))
def test_minimal_cases_get_the_hint_too(name: str) -> None:
    failure = _failure(f"tests.ports.broken:{CATALOGUE[name].__name__}", MINIMAL[name])
    assert failure.hint is not None and failure.hint.name == DIAGNOSES[name][2], failure


@pytest.mark.parametrize("path", list(OTHER_PORTS))
def test_other_ports_get_their_hint(path: str) -> None:
    case, location, hint = OTHER_PORTS[path]
    failure = _failure(path, case)
    assert _located(failure) == location and failure.hint is not None and failure.hint.name == hint, failure


def test_pieces_tell_a_layer_right_alone_from_a_wrong_stack() -> None:
    case, _, _ = DIAGNOSES["reverse-uses-forward-weights"]
    failure = _failure("tests.ports.broken:ReverseUsesForwardWeights", case)
    statuses = {p.name.split(" (")[0]: p.status for p in failure.location.pieces}
    assert statuses == {"layers 0..0": "matches", "layer 1 alone, fed torch's input to it": "matches",
                        "layer 1 forward direction alone": "matches", "layer 1 reverse direction alone": "matches"}


def test_a_wrong_first_layer_is_found_by_the_one_layer_prefix() -> None:
    case = Case(C(3, 4, num_layers=3), Call(4, 2))
    failure = _failure("tests.ports.broken:OnnxGateOrder", case)
    assert failure.location.layer == 0 and failure.location.pieces[0].status == "differs"
    assert len([p for p in failure.location.pieces if p.name.startswith("layers")]) == 1  # stops at the first


def test_no_hint_for_a_difference_without_a_pattern() -> None:
    """A port whose every value is off by a little: no recogniser may claim to know why."""
    import numpy as np

    from conformance.reference import expected_for

    case = Case(C(3, 4, num_layers=2, bidirectional=True), Call(5, 2, with_hx=True))
    expected = expected_for(case)
    rng = np.random.default_rng(0)
    noisy = type(expected.reference)(*(part + rng.normal(0, 1e-3, part.shape).astype(part.dtype)
                                       for part in expected.reference.parts().values()))
    from conformance.verdict import Problem

    evidence = Evidence(case, expected, noisy, [Problem("values", "output: ...")])
    assert recognise(evidence) is None


def test_correct_ports_are_not_diagnosed() -> None:
    for case, _, _ in DIAGNOSES.values():
        check_forward(resolve("tests.ports.scratch_lstm:ScratchLSTM"), case, diagnose=True)


def test_a_failing_recogniser_is_skipped_not_fatal() -> None:
    from conformance.hints import Recogniser

    case, _, _ = DIAGNOSES["onnx-gate-order"]
    failure = _failure("tests.ports.broken:OnnxGateOrder", case)

    def broken(evidence: Evidence) -> str:
        raise ZeroDivisionError

    from conformance.reference import expected_for

    evidence = Evidence(case, expected_for(case), None, failure.problems)
    table = (Recogniser("broken", "never", broken), Recogniser("always", "always", lambda ev: "yes", any_case=True))
    assert recognise(evidence, table).name == "always"
