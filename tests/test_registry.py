"""Resolving implementations: names, import paths, the environment, entry points, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conformance.registry import ENV_VAR, ResolutionError, available, resolve


def test_bundled_names_resolve() -> None:
    numpy_port = resolve("numpy")
    assert numpy_port.kind == "adapter" and numpy_port.path == "implementations.numpy_lstm:NumpyLSTM"
    torch_port = resolve("torch")
    assert torch_port.kind == "drop-in" and torch_port.capabilities.errors == "exact"


def test_import_path_resolves_a_drop_in_class() -> None:
    candidate = resolve("tests.ports.scratch_lstm:ScratchLSTM", origin="--lstm-impl")
    assert candidate.kind == "drop-in" and "import path" in candidate.origin


def test_environment_variable_is_used_when_nothing_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "torch")
    candidate = resolve(None)
    assert candidate.name == "torch" and ENV_VAR in candidate.origin
    monkeypatch.delenv(ENV_VAR)
    assert resolve(None).name == "numpy"


@pytest.mark.parametrize("spec, fragment", [
    ("no-such-port", "unknown implementation 'no-such-port'; known names: flax, keras, numpy, onnxruntime, "
                     "onnxruntime-node, paddle, tfjs, torch, torch-quantizable;"),
    ("no_such_module.sub:Thing", "cannot import 'no_such_module.sub'"),
    ("conformance.case:NoSuchClass", "has no attribute 'NoSuchClass'"),
    ("tests.ports.adapters:NoForward", "does not implement forward"),
    ("conformance.case:Call", "neither a torch.nn.Module subclass"),
    ("tests.ports.adapters:PlainCapabilities", "sets 'capabilities'; the suite reads 'lstm_conformance_capabilities'"),
    ("tests.ports.adapters:PlainExpectedFailures",
     "sets 'expected_failures'; the suite reads 'lstm_conformance_expected_failures'"),
])
def test_bad_specs_give_one_line_errors(spec: str, fragment: str) -> None:
    with pytest.raises(ResolutionError) as info:
        resolve(spec)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_entry_points_make_an_installed_port_selectable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "fake_port-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-port\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[lstm_conformance.implementations]\nfake = tests.ports.scratch_lstm:ScratchLSTM\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert available()["fake"] == "tests.ports.scratch_lstm:ScratchLSTM"
    candidate = resolve("fake", origin="--lstm-impl")
    assert candidate.kind == "drop-in" and "entry point of fake-port" in candidate.origin
    assert sys.modules["tests.ports.scratch_lstm"]
