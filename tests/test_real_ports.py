"""The real third-party ports (implementations/*_lstm.py): registration, capabilities, expected failures.

Fast checks (seconds): every registry name resolves, or says in one line which extra to install;
each adapter declares what its docstring says; every expected-failures file parses, names tests
that exist and that the port runs; each adapter passes a small case and is flagged when its weight
mapping is deliberately wrong; and the upstream defects behind the axes declared absent are still
there (when one is fixed, its test fails: the signal to declare the axis again).
Ports whose packages are not installed are skipped.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance import expected, forkserver
from conformance.adapters import FEATURES, Capabilities
from conformance.arrays import LSTMConfig
from conformance.candidates import make_candidate
from conformance.case import Call, Case
from conformance.checks import check_forward
from conformance.registry import available
from conformance.verdict import ConformanceFailure
from implementations.real_ports import REAL_PORTS

REPO = Path(__file__).resolve().parent.parent
EXPECTED_DIR = REPO / "implementations" / "expected"

#: The Python real ports, from their table (implementations/real_ports.py): registry name -> import path, the
#: extra that installs it, the dtypes it declares and the features it declares absent (checked below against
#: the adapter and its docstring).
PORTS: dict[str, dict[str, Any]] = {
    port.name: dict(path=port.target, extra=port.extra, dtypes=set(port.dtypes), lacks=set(port.lacks))
    for port in REAL_PORTS if not port.is_process}
#: How each docstring names a feature it lacks.
DOC_WORDS = {"proj_size": "proj_size", "dropout": "dropout", "bidirectional": "bidirectional", "no_bias": "bias=False",
             "packed": "PackedSequence", "packed_unsorted": "PackedSequence", "unbatched": "unbatched"}
#: The top-level modules each port imports, blocked to simulate a missing package.
BLOCK = {port.name: list(port.modules) for port in REAL_PORTS if port.modules}


@pytest.fixture(scope="module", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory):
    """Ports write caches into the home folder (Paddle ~/.cache, Keras KERAS_HOME): keep them here."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in (("HOME", home), ("XDG_CACHE_HOME", home / "cache"), ("KERAS_HOME", home / "keras")):
            mp.setenv(name, str(value))
        yield home


def _env(home: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME=str(home), XDG_CACHE_HOME=str(home / "cache"),
               KERAS_HOME=str(home / "keras"))
    for name in ("PYTEST_XDIST_WORKER", "LSTM_CONFORMANCE_IMPL", "PYTEST_ADDOPTS", forkserver.ENV_VAR):
        env.pop(name, None)
    return env


_BLOCKER = """
import sys
BLOCKED = set(sys.argv[1].split(","))
class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Missing())
del sys.argv[1]
"""


def _run_without(blocked: list[str], code: str, home: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which the ``blocked`` packages cannot be imported."""
    return subprocess.run([sys.executable, "-c", _BLOCKER + code, ",".join(blocked), *args], cwd=REPO,
                          env=_env(home), capture_output=True, text=True, timeout=300)


def _load(name: str) -> Any:
    """The adapter class of a port, or a skip when its package is not installed.

    The adapter module is imported, not the port's package: implementations.keras_lstm has to set
    KERAS_BACKEND before keras is imported."""
    module, _, attr = PORTS[name]["path"].partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        if "needs its extra" in str(exc):  # implementations._extras.missing_port
            pytest.skip(str(exc))
        raise


# ----------------------------------------------------------------------------- registration
def test_every_port_is_registered_under_its_name() -> None:
    names = available()
    for name, port in PORTS.items():
        assert names.get(name) == port["path"], f"{name} is not registered as {port['path']}: {names.get(name)}"


@pytest.mark.slow
def test_a_missing_package_is_a_one_line_error_naming_the_extra(private_home: Path) -> None:
    code = """
import json, sys
from conformance.registry import ResolutionError, resolve
out = {}
for name in sys.argv[1:]:
    try:
        resolve(name)
        out[name] = None
    except ResolutionError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""
    blocked = sorted({m for modules in BLOCK.values() for m in modules})
    result = _run_without(blocked, code, private_home, *BLOCK)
    assert result.returncode == 0, result.stderr
    messages = json.loads(result.stdout.strip().splitlines()[-1])
    for name in BLOCK:
        message = messages[name]
        assert message is not None, f"{name} resolved although its package is missing"
        assert "\n" not in message, message
        assert f"pip install 'lstm-conformance[{PORTS[name]['extra']}]'" in message, message
        assert "No module named" in message, message


@pytest.mark.slow
def test_pytest_without_the_port_package_is_a_usage_error(private_home: Path) -> None:
    code = "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
    result = _run_without(["keras"], code, private_home, "--lstm-impl=keras", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "conformance/suite")
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error
    errors = [line for line in result.stderr.splitlines() if "lstm-conformance:" in line]
    assert len(errors) == 1 and "pip install 'lstm-conformance[keras]'" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_list_shows_a_missing_port_with_its_extra(private_home: Path) -> None:
    code = "import sys; from conformance.cli import main; sys.exit(main(['list']))"
    result = _run_without(["keras"], code, private_home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pip install 'lstm-conformance[keras]'" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


# ----------------------------------------------------------------------------- capabilities
@pytest.mark.parametrize("name", list(PORTS))
def test_capabilities_are_what_the_docstring_says(name: str) -> None:
    cls = _load(name)
    port = PORTS[name]
    caps: Capabilities = cls.lstm_conformance_capabilities
    assert set(caps.dtypes) == port["dtypes"]
    assert set(FEATURES) - set(caps.features) == port["lacks"]
    assert caps.errors == "raises"
    doc = sys.modules[cls.__module__].__doc__
    for feature in port["lacks"]:
        assert DOC_WORDS[feature] in doc, f"{name} lacks {feature} but its docstring does not say so"
    for dtype in ("float64", "float16", "bfloat16"):
        if dtype not in caps.dtypes:
            assert dtype in doc, f"{name} does not declare {dtype} but its docstring does not say why"


# ----------------------------------------------------------------------------- expected failures
@pytest.fixture(scope="module")
def suite_ids(private_home: Path) -> list[str]:
    """Every test id the conformance suite collects (the same for every implementation)."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "--lstm-impl=numpy", "conformance/suite"], cwd=REPO, env=_env(private_home),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return [expected.short_id(line.strip()) for line in result.stdout.splitlines() if "::" in line]


def _declared_file(name: str) -> Path:
    module, _, attr = PORTS[name]["path"].partition(":")
    source = REPO / (module.replace(".", "/") + ".py")
    text = source.read_text()
    assert f'lstm_conformance_expected_failures = "expected/{name}.txt"' in text, f"{source.name} does not declare its file"
    return EXPECTED_DIR / f"{name}.txt"


def test_every_expected_failures_file_belongs_to_a_port() -> None:
    from conformance.process_ports import REGISTERED  # the process ports' files: tests/test_process_ports.py

    assert {p.stem for p in EXPECTED_DIR.glob("*.txt")} == set(PORTS) | set(REGISTERED)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PORTS))
def test_expected_failures_parse_and_name_tests_the_port_runs(name: str, suite_ids: list[str]) -> None:
    check_expected_entries(expected.load(_declared_file(name)), PORTS[name], suite_ids)  # raises without a reason


def check_expected_entries(entries: list, caps: dict, suite_ids: list[str]) -> None:
    """Each entry says why, names tests of the suite, and none a test the port skips as unsupported
    (``caps``: the port's ``dtypes`` and the features it ``lacks``)."""
    from conformance.bad_calls import CALL_FAULTS, call_fault_requirements, fault_ids
    from conformance.strategies import focus_requirements

    faults = dict(zip(fault_ids(CALL_FAULTS), CALL_FAULTS))
    for entry in entries:
        assert len(entry.reason) >= 20, f"{entry.where}: say why, and cite the upstream issue where there is one"
        matched = [i for i in suite_ids if i.startswith(entry.prefix)]
        assert matched, f"{entry.where}: {entry.prefix!r} matches no test of the suite"
        if entry.when:  # a case-property entry spans many tests, each of which still runs
            continue
        for test_id in matched:  # a test the port skips as unsupported cannot be an expected failure
            function, _, param = test_id.partition("[")
            param = param.rstrip("]")
            if function.endswith("::test_matches_torch"):
                features, dtype = focus_requirements(param)
                needed = features | ({f"dtype {dtype}"} if dtype else set())
            elif function.endswith("errors_match_torch") and param in faults:
                needed = call_fault_requirements(faults[param], packed="packed_call" in function)
            else:
                needed = set()
            absent = {f for f in needed if f in caps["lacks"] or (f.startswith("dtype ") and f[6:] not in caps["dtypes"])}
            assert not absent, f"{entry.where}: {test_id} needs {sorted(absent)}, which the port does not declare"


# ----------------------------------------------------------------------------- the weight mapping
def _gates_swapped(weights: dict) -> dict:
    """A classic porting bug: the input and forget gate blocks exchanged in every weight and bias."""
    def swap(array: np.ndarray) -> np.ndarray:
        i, f, g, o = np.split(array, 4, axis=0)
        return np.concatenate([f, i, g, o], axis=0)

    return {k: swap(v) if k.startswith(("weight_ih", "weight_hh", "bias_")) else v for k, v in weights.items()}


def _cases(caps: Capabilities, name: str) -> list[Case]:
    """A dense multi-layer case with hx, and where declared a packed unsorted bidirectional one."""
    known = expected.load(EXPECTED_DIR / f"{name}.txt")
    float64_diverges = any(tuple(entry.when) == (("dtype", "=", "float64"),) for entry in known)  # every float64 case
    dtype = "float64" if "float64" in caps.dtypes and not float64_diverges else "float32"
    cases = [Case(LSTMConfig(input_size=3, hidden_size=5, num_layers=2, batch_first=True, dtype=dtype),
                  Call(seq_len=6, batch=3, with_hx=True, seed=1), weight_seed=7)]
    if {"packed_unsorted", "bidirectional"} <= caps.features:
        cases.append(Case(LSTMConfig(input_size=2, hidden_size=4, bidirectional=True),
                          Call(seq_len=5, batch=3, packing="pack_padded_sequence", lengths=(3, 5, 2),
                               enforce_sorted=False, with_hx=True, seed=2), weight_seed=3))
    return cases


@pytest.mark.parametrize("name", list(PORTS))
def test_the_adapter_conforms_and_a_wrong_weight_mapping_is_flagged(name: str) -> None:
    cls = _load(name)
    cases = _cases(cls.lstm_conformance_capabilities, name)
    for case in cases:
        check_forward(make_candidate(cls, name=name), case)  # the real mapping conforms

    def wrong_init(self: Any, config: LSTMConfig, weights: dict) -> None:
        cls.__init__(self, config, _gates_swapped(weights))

    wrong = type(f"GatesSwapped{cls.__name__}", (cls,), {"__init__": wrong_init, "__module__": cls.__module__})
    with pytest.raises(ConformanceFailure) as failure:
        check_forward(make_candidate(wrong, name=f"{name} with i and f swapped"), cases[0])
    assert any(p.kind == "values" for p in failure.value.problems), failure.value


# ----------------------------------------------------------------------------- defects behind undeclared axes
def _torch_model(config: LSTMConfig, seed: int = 0) -> Any:
    import torch

    torch.manual_seed(seed)
    kwargs = config.torch_kwargs()
    return torch.nn.LSTM(**kwargs, dtype=getattr(torch, config.dtype))


def _weights(model: Any) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_keras_still_computes_float64_in_float32() -> None:
    """keras-team/keras#23704.  If this fails, Keras computes float64 in float64: drop its `when dtype=float64` entry."""
    import torch

    cls = _load("keras")
    config = LSTMConfig(input_size=4, hidden_size=6, dtype="float64")
    model = _torch_model(config)
    x = np.random.default_rng(0).standard_normal((7, 2, 4))
    output, _ = cls(config, _weights(model)).forward(x, None, training=False)
    reference, _ = model(torch.from_numpy(x))
    error = float(np.abs(output - reference.detach().numpy()).max())
    assert output.dtype == np.float64
    assert 1e-10 < error < 1e-5, f"float64 error {error:.1e}: the defect changed; revisit expected/keras.txt"


def test_onnxruntime_still_has_no_float64_lstm() -> None:
    """ONNX Runtime's CPU LSTM kernel does not run double.  If this fails, declare float64."""
    cls = _load("onnxruntime")
    config = LSTMConfig(input_size=2, hidden_size=3, dtype="float64")
    adapter = cls(config, _weights(_torch_model(config)))  # the graph loads; the kernel refuses to run
    with pytest.raises(Exception, match="LSTM operator does not support double"):
        adapter.forward(np.zeros((4, 2, 2)), None, training=False)


def test_quantizable_still_cannot_load_bidirectional_multi_layer_weights() -> None:
    """pytorch/pytorch#89357.  If this fails, drop the `when bidirectional=True, num_layers>=2` entry."""
    cls = _load("torch-quantizable")
    config = LSTMConfig(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    with pytest.raises(RuntimeError, match="size mismatch"):
        cls(config, _weights(_torch_model(config)))
    single = LSTMConfig(input_size=3, hidden_size=4, bidirectional=True)  # one layer works
    check_forward(make_candidate(cls), Case(single, Call(seq_len=4, batch=2)))


def test_quantizable_still_makes_float32_zero_states_for_float64() -> None:
    """Without hx a float64 model meets float32 zero states.  If this fails, drop the `when dtype=float64` entry."""
    cls = _load("torch-quantizable")
    config = LSTMConfig(input_size=3, hidden_size=4, dtype="float64")
    adapter = cls(config, _weights(_torch_model(config)))
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    with pytest.raises(RuntimeError, match="dtype"):
        adapter.forward(x, None, training=False)
    state = np.zeros((1, 2, 4))
    check_forward(make_candidate(cls), Case(config, Call(seq_len=5, batch=2, with_hx=True)))  # with hx it works
    assert adapter.forward(x, (state, state), training=False)[0].dtype == np.float64


@pytest.mark.slow
def test_paddle_still_crashes_without_biases(private_home: Path) -> None:
    """PaddlePaddle/Paddle#70231 (a segfault in the fused kernel).  If this fails, declare no_bias for paddle."""
    _load("paddle")
    code = """
import numpy as np, torch
from conformance.arrays import LSTMConfig
from implementations.paddle_lstm import PaddleLSTM
torch.manual_seed(0)
weights = {k: v.detach().numpy() for k, v in torch.nn.LSTM(3, 4, bias=False).state_dict().items()}
output, _ = PaddleLSTM(LSTMConfig(3, 4, bias=False), weights).forward(np.zeros((5, 2, 3), np.float32), None, training=False)
print("returned", output.shape)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(private_home), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0 and "returned" not in result.stdout, (
        "Paddle now runs a model without biases: check the result and declare no_bias for PaddleLSTM")
    assert "Segmentation fault" in result.stderr or result.returncode < 0, result.stderr[-2000:]


# ----------------------------------------------------------------------------- gradients
#: The adapters whose backward() is checked here (those that declare gradients).
GRADIENT_PORTS = ["flax", "keras", "paddle", "torch-quantizable"]


def _gradient_cases(caps: Capabilities, name: str) -> list[Case]:
    """:func:`_cases` with the input and states requiring grad; the packed bidirectional case without hx
    (with it, Paddle's weight_hh_reverse gradient is an expected failure, checked below); Paddle's in
    training mode (its eval-mode backward is an expected failure, checked below; these models have no
    dropout, so training mode computes the same function)."""
    cases = [case.replace(requires_grad=True, hx_requires_grad=case.call.with_hx) for case in _cases(caps, name)]
    cases = [case.replace(with_hx=False) if case.call.packed else case for case in cases]
    return [case.replace(training=True) for case in cases] if name == "paddle" else cases


def _gradient_gates_swapped(cls: type) -> type:
    """The adapter with a wrong backward mapping: the i and f gate blocks of each parameter gradient exchanged."""
    def backward(self: Any, *args: Any, **kwargs: Any) -> dict:
        found = cls.backward(self, *args, **kwargs)
        return {**found, **_gates_swapped({k: v for k, v in found.items() if k not in ("input", "h0", "c0")})}

    return type(f"GradientGatesSwapped{cls.__name__}", (cls,), {"backward": backward, "__module__": cls.__module__})


@pytest.mark.parametrize("name", GRADIENT_PORTS)
def test_the_adapter_gradients_conform_and_a_wrong_gradient_mapping_is_flagged(name: str) -> None:
    from conformance.checks import check_gradients

    cls = _load(name)
    assert cls.lstm_conformance_capabilities.gradients is True
    cases = _gradient_cases(cls.lstm_conformance_capabilities, name)
    for case in cases:
        check_gradients(make_candidate(cls, name=name), case)  # the real mapping's gradients conform
    with pytest.raises(ConformanceFailure) as failure:
        check_gradients(make_candidate(_gradient_gates_swapped(cls), name=f"{name} with i and f swapped"), cases[0])
    assert failure.value.problems and all(p.kind == "gradient" for p in failure.value.problems), failure.value


def test_paddle_still_cannot_differentiate_an_eval_mode_call() -> None:
    """PaddlePaddle/Paddle#49015.  If this fails, drop paddle's `test_gradients.py::  when training=False` entry."""
    _load("paddle")
    import paddle

    model = paddle.nn.LSTM(3, 4, time_major=True)
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32), stop_gradient=False)
    output, _ = model(x)
    with pytest.raises(RuntimeError, match="holds no memory"):
        paddle.grad([output], [x, *model.parameters()], [paddle.ones_like(output)], allow_unused=True)
    model.train()  # the same function (no dropout) in training mode: differentiable
    again, _ = model(x)
    assert np.array_equal(again.numpy(), output.numpy())
    paddle.grad([again], [x, *model.parameters()], [paddle.ones_like(again)], allow_unused=True)


def test_paddle_still_gets_the_reverse_weight_hh_gradient_wrong_with_sequence_length() -> None:
    """If this fails, drop paddle's `when bidirectional=True, packed=True, with_hx=True, proj_size=0` entry."""
    from conformance.checks import check_gradients

    cls = _load("paddle")
    call = Call(seq_len=3, batch=2, packing="pack_padded_sequence", lengths=(3, 1), with_hx=True,
                training=True)  # no dropout: eval mode's function, whose backward Paddle refuses (above)
    case = Case(LSTMConfig(input_size=1, hidden_size=2, bidirectional=True), call)
    with pytest.raises(ConformanceFailure) as failure:
        check_gradients(make_candidate(cls), case)
    assert {p.tensor for p in failure.value.problems} == {"weight_hh_l0_reverse"}, failure.value
    check_gradients(make_candidate(cls), case.replace(lengths=(3, 3)))  # equal lengths: right
    check_gradients(make_candidate(cls), case.replace(with_hx=False))  # zero h0: right
    check_gradients(make_candidate(cls), case.replace(proj_size=1))  # the LSTMCell path: right


def test_paddle_still_scales_float64_dropout_by_a_float32_probability() -> None:
    """If this fails, drop paddle's `when dtype=float64, training=True, dropout>0, num_layers>=2` entry."""
    cls = _load("paddle")
    config = LSTMConfig(input_size=2, hidden_size=3, num_layers=2, dropout=0.062, dtype="float64")
    case = Case(config, Call(seq_len=3, batch=4, training=True))
    with pytest.raises(ConformanceFailure, match="no legal dropout mask"):
        check_forward(make_candidate(cls), case)
    check_forward(make_candidate(cls), case.replace(dropout=0.5))  # p exact in float32: right


def test_paddle_dropout_of_one_still_drops_nan() -> None:
    """If this fails, drop paddle's `when proj_size>0, training=True, dropout=1.0, has_nan=True` entry."""
    _load("paddle")
    import paddle

    x = paddle.to_tensor(np.array([np.nan, 1.0], dtype=np.float32))
    assert np.array_equal(paddle.nn.functional.dropout(x, 1.0, training=True).numpy(), [0.0, 0.0])
