"""Every file that names the real ports agrees with implementations/real_ports.py, and each check can fail.

The checks themselves are in tests/real_port_sources.py; here they run on the checkout's files (each
problem one line naming the file and the port), then on copies altered as a forgetful change would
leave them (a pin bumped in one place only, a port left out of a list), where each must report it.
"""

from __future__ import annotations

import dataclasses

import pytest

from conformance import process_ports
from conformance.registry import BUILTIN
from implementations._extras import EXTRAS, missing_port
from implementations.real_ports import BY_NAME, REAL_PORTS, RealPort

from . import real_port_sources as sources
from .conftest import REPO

IMPLEMENTATIONS = REPO / "implementations"
PYTHON_PORTS = [port for port in REAL_PORTS if not port.is_process]
PROCESS_PORTS = [port for port in REAL_PORTS if port.is_process]


def _text(path: str) -> str:
    return (REPO / path).read_text()


def _altered(text: str, old: str, new: str) -> str:
    """``text`` with the first ``old`` replaced: the alteration must find what it alters."""
    assert old in text, f"the alteration's text {old!r} is not there"
    return text.replace(old, new, 1)


def _install_table() -> str:
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_ports_install_table",
                                                  REPO / "scripts" / "real_ports_install_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.markdown_table()


def _adapter_source(port: RealPort) -> str:
    return _text(port.target.partition(":")[0].replace(".", "/") + ".py")


def _npm_files(port: RealPort) -> tuple[str, str, str]:
    folder = "implementations/" + port.target.rpartition("/")[0]
    return _text(f"{folder}/package.json"), _text(f"{folder}/package-lock.json"), _text(f"{folder}/port.js")


def _missing_keras() -> str:
    return str(missing_port("keras", ModuleNotFoundError("No module named 'keras'")))


def _one_problem(problems: list[str], *fragments: str) -> None:
    assert len(problems) == 1, problems
    assert "\n" not in problems[0] and all(fragment in problems[0] for fragment in fragments), problems


def _reports(problems: list[str], *fragments: str) -> None:
    assert any(all(fragment in problem for fragment in fragments) for problem in problems), problems
    assert all("\n" not in problem for problem in problems), problems


# ----------------------------------------------------------------------------- the table
def test_the_table_names_each_port_once_with_its_expected_failures_file() -> None:
    assert len(BY_NAME) == len(REAL_PORTS)
    for port in REAL_PORTS:
        assert (IMPLEMENTATIONS / port.expected_failures).is_file(), port.name


def test_a_row_that_contradicts_itself_is_refused() -> None:
    keras = BY_NAME["keras"]
    for bad in (dict(pip=()), dict(extra=None), dict(pip=("keras>=3",)), dict(npm=("keras@3",)),
                dict(target="implementations/keras_lstm.py")):
        with pytest.raises(ValueError, match="keras"):
            dataclasses.replace(keras, **bad)


def test_the_missing_package_error_is_made_from_the_table() -> None:
    assert EXTRAS == {port.name: (port.extra, " ".join(port.pip)) for port in REAL_PORTS if port.extra}
    assert "pip install 'lstm-conformance[keras]' (or keras==3.15.1) after torch" in _missing_keras()


# ----------------------------------------------------------------------------- the checkout agrees
def test_pyproject_agrees_with_the_table() -> None:
    assert sources.check_pyproject(_text("pyproject.toml"), REAL_PORTS, BUILTIN) == []


def test_tox_agrees_with_the_table() -> None:
    assert sources.check_tox(_text("tox.ini"), REAL_PORTS) == []


def test_the_scripts_agree_with_the_table() -> None:
    assert sources.check_setup_sh(_text("scripts/setup.sh"), REAL_PORTS) == []
    assert sources.check_test_ports_sh(_text("scripts/test-ports.sh"), REAL_PORTS) == []
    assert sources.check_port_table_sh(_text("scripts/port-table.sh"), REAL_PORTS) == []
    assert sources.check_ci_run(_text(".ci/run"), REAL_PORTS) == []


@pytest.mark.parametrize("port", PYTHON_PORTS, ids=lambda port: port.name)
def test_each_adapter_agrees_with_the_table(port: RealPort) -> None:
    assert sources.check_adapter(_adapter_source(port), port) == []


@pytest.mark.parametrize("port", PROCESS_PORTS, ids=lambda port: port.name)
def test_each_process_port_agrees_with_the_table(port: RealPort) -> None:
    assert sources.check_manifest(_text(f"implementations/{port.target}"), port) == []
    assert sources.check_npm(*_npm_files(port), port) == []


def test_the_registered_process_ports_are_the_tables() -> None:
    assert sources.check_registered(process_ports.REGISTERED, IMPLEMENTATIONS, REAL_PORTS) == []


def test_the_docs_agree_with_the_table() -> None:
    doc = _text("docs/real-ports.md")
    assert sources.check_install_table(doc, _install_table()) == []
    assert sources.check_ports_named(doc, REAL_PORTS, "docs/real-ports.md") == []
    assert sources.check_error_example(doc, _missing_keras()) == []
    assert sources.check_ports_named(_text("README.md"), REAL_PORTS, "README.md", "## Real ports") == []


# ----------------------------------------------------------------------------- each check can fail
def test_a_pin_changed_in_the_table_alone_is_reported() -> None:
    ports = [dataclasses.replace(port, pip=("keras==3.16.0",)) if port.name == "keras" else port
             for port in REAL_PORTS]
    problems = sources.check_pyproject(_text("pyproject.toml"), ports, BUILTIN)
    _reports(problems, "pyproject.toml: keras: extra [keras] is ['keras==3.15.1'], the table says ['keras==3.16.0']")
    _reports(problems, "pyproject.toml: keras: extra [all] lacks keras==3.16.0")
    keras = next(port for port in ports if port.name == "keras")
    _one_problem(sources.check_adapter(_adapter_source(keras), keras), "implementations/keras_lstm.py: keras:",
                 "keras==3.16.0")


@pytest.mark.parametrize("old, new, fragments", [
    ('keras = ["keras==3.15.1"]', 'keras = ["keras==3.15.0"]', ("keras: extra [keras] is ['keras==3.15.0']",)),
    ('    "paddlepaddle==3.3.1",\n', "", ("paddle: extra [all] lacks paddlepaddle==3.3.1",)),
    ('"jax==0.10.2", "jaxlib==0.10.2", "flax==0.12.8",\n    "keras', '"jax==0.10.2", "jaxlib==0.10.2", '
     '"flax==0.12.7",\n    "keras', ("flax: extra [all] lacks flax==0.12.8",)),
    ('"jax==0.10.2", "jaxlib==0.10.2", "flax==0.12.8",\n    "keras', '"jax==0.10.2", "jaxlib==0.10.2", '
     '"flax==0.12.7",\n    "keras', ("flax: extra [all] holds flax==0.12.7, which no other extra lists",)),
    ('paddle = "implementations.paddle_lstm:PaddleLSTM"', 'paddle = "implementations.paddle_lstm:Paddle"',
     ("paddle: entry point is implementations.paddle_lstm:Paddle",)),
    ('torch-quantizable = "implementations', 'mxnet = "mx:LSTM"\ntorch-quantizable = "implementations',
     ("mxnet: entry point mx:LSTM names no port",)),
    ('torch-quantizable = "implementations', 'tfjs = "implementations.js:Tfjs"\ntorch-quantizable = "implementations',
     ("tfjs: a process port has an entry point",)),
    ('"paddle.*", ', "", ("paddle: the mypy override", "paddle.*")),
])
def test_an_altered_pyproject_is_reported(old: str, new: str, fragments: tuple[str, ...]) -> None:
    problems = sources.check_pyproject(_altered(_text("pyproject.toml"), old, new), REAL_PORTS, BUILTIN)
    _reports(problems, "pyproject.toml: ", *fragments)


@pytest.mark.parametrize("old, new, fragments", [
    ("paddle, torch-quantizable,", "torch-quantizable,", ("paddle: paddle is not in envlist",)),
    ("extras = test, jax", "extras = test", ("flax: [testenv:flax] extras are ['test'], the table says ['jax', 'test']",)),
    ("[testenv:keras]", "[testenv:keras3]", ("keras: no [testenv:keras]", "keras3:", "is no port of the table")),
    ("[testenv:tfjs]\ndescription = the conformance suite on TensorFlow.js's tf.layers.lstm (a process port, Node.js)\n"
     "extras = test\nallowlist_externals = {[js]allowlist_externals}\ncommands_pre = {[js]commands_pre}\n",
     "[testenv:tfjs]\nextras = test\n", ("tfjs: [testenv:tfjs] does not install its npm packages",)),
])
def test_an_altered_tox_ini_is_reported(old: str, new: str, fragments: tuple[str, ...]) -> None:
    problems = sources.check_tox(_altered(_text("tox.ini"), old, new), REAL_PORTS)
    for fragment in fragments:
        _reports(problems, "tox.ini: ", fragment)


def test_altered_scripts_are_reported() -> None:
    setup = _text("scripts/setup.sh")
    _one_problem(sources.check_setup_sh(_altered(setup, "case $extra in tfjs|onnxruntime-node)", "case $extra in tfjs)"),
                                        REAL_PORTS), "scripts/setup.sh: onnxruntime-node: not among")
    _one_problem(sources.check_setup_sh(_altered(setup, "keras, paddle, redis", "keras, redis"), REAL_PORTS),
                 "scripts/setup.sh: paddle: its header does not name paddle")
    test_ports = _text("scripts/test-ports.sh")
    _one_problem(sources.check_test_ports_sh(_altered(test_ports, "keras) extras+=(keras) ;;", "keras) ;;"), REAL_PORTS),
                 "scripts/test-ports.sh: keras: asks setup.sh for [], the table says ['keras']")
    _reports(sources.check_test_ports_sh(_altered(test_ports, "        flax) extras+=(jax) ;;\n", ""), REAL_PORTS),
             "scripts/test-ports.sh: flax: no case for it")
    _one_problem(sources.check_test_ports_sh(_altered(test_ports, "paddle, torch-quantizable,", "torch-quantizable,"),
                                             REAL_PORTS), "scripts/test-ports.sh: paddle: not named")
    _one_problem(sources.check_port_table_sh(_altered(_text("scripts/port-table.sh"), " paddle ", " "), REAL_PORTS),
                 "scripts/port-table.sh: paddle: its default ports")
    ci = _text(".ci/run")
    _one_problem(sources.check_ci_run(_altered(ci, 'LSTM_EXTRAS="onnxruntime keras', 'LSTM_EXTRAS="onnxruntime'),
                                      REAL_PORTS), ".ci/run: keras: LSTM_EXTRAS lacks keras")
    _one_problem(sources.check_ci_run(_altered(ci, "test-ports.sh onnxruntime", "test-ports.sh mxnet onnxruntime"),
                                      REAL_PORTS), ".ci/run: mxnet: tested, but the table has no such port")


def test_altered_port_files_are_reported() -> None:
    keras = BY_NAME["keras"]
    source = _adapter_source(keras)
    _one_problem(sources.check_adapter(_altered(source, '"expected/keras.txt"', '"expected/keras3.txt"'), keras),
                 "implementations/keras_lstm.py: keras: does not declare lstm_conformance_expected_failures")
    _one_problem(sources.check_adapter(_altered(source, 'missing_port("keras", ', 'missing_port("keras3", '), keras),
                 "implementations/keras_lstm.py: keras: does not raise missing_port")
    tfjs = BY_NAME["tfjs"]
    manifest = _text(f"implementations/{tfjs.target}")
    _one_problem(sources.check_manifest(_altered(manifest, 'expected/tfjs.txt"', 'expected/tf.txt"'), tfjs),
                 "implementations/js/tfjs/port.json: tfjs: expected_failures is '../../expected/tf.txt'")
    _one_problem(sources.check_manifest(_altered(manifest, "setup.sh tfjs", "setup.sh"), tfjs),
                 "port.json: tfjs: what it requires")
    package, lock, port_js = _npm_files(tfjs)
    _one_problem(sources.check_npm(_altered(package, '"4.22.0"', '"4.23.0"'), lock, port_js, tfjs),
                 "implementations/js/tfjs/package.json: tfjs: dependencies are {'@tensorflow/tfjs': '4.23.0'}")
    _one_problem(sources.check_npm(package, _altered(lock, '"@tensorflow/tfjs": "4.22.0"', '"@tensorflow/tfjs": "4"'),
                                   port_js, tfjs), "package-lock.json: tfjs:")
    _one_problem(sources.check_npm(package, lock, _altered(port_js, "4.22.0", "4.21.0"), tfjs),
                 "port.js: tfjs: its header does not name @tensorflow/tfjs 4.22.0")
    registered = {name: path for name, path in process_ports.REGISTERED.items() if name != "tfjs"}
    _one_problem(sources.check_registered(registered, IMPLEMENTATIONS, REAL_PORTS),
                 "conformance/process_ports.py: tfjs: REGISTERED has None")


def test_altered_docs_are_reported() -> None:
    doc, table = _text("docs/real-ports.md"), _install_table()
    _one_problem(sources.check_install_table(_altered(doc, "Keras 3.15.1", "Keras 3.15.0"), table),
                 "docs/real-ports.md: keras: its row of the install table")
    rows = table.splitlines()
    swapped = "\n".join(rows[:2] + [rows[3], rows[2]] + rows[4:])
    _one_problem(sources.check_install_table(_altered(doc, table, swapped), table), "docs/real-ports.md: (order)")
    _one_problem(sources.check_ports_named(_altered(doc, "Seven real", "Six real"), REAL_PORTS, "docs/real-ports.md"),
                 "docs/real-ports.md: (count): says Six", "the table has seven")
    readme = _text("README.md")
    _one_problem(sources.check_ports_named(_altered(readme, "`paddle`,", "Paddle,"), REAL_PORTS, "README.md",
                                           "## Real ports"), "README.md: paddle: not named")
    _one_problem(sources.check_error_example(_altered(doc, "(or keras==3.15.1)", "(or keras)"), _missing_keras()),
                 "docs/real-ports.md: (example)")

