"""The real third-party ports the suite bundles: one row per port, the one home of their facts.

Each row says what the port is registered as, where its adapter or manifest lives, which pip extra
and pinned packages (or npm packages) it needs, the Python modules it imports, what it declares (its
dtypes and the features it lacks) and one line on what it is.  Everything else that names these facts
is either made from this table (``implementations/_extras.py``'s one-line error,
``scripts/real_ports_install_table.py``'s table in ``docs/real-ports.md``) or checked against it by
``tests/test_real_port_sources.py`` (``pyproject.toml``, ``tox.ini``, the scripts, the adapters, the
manifests and npm files, the docs), since those cannot read Python at install time.

The module imports only the standard library, so the install-table script reads it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["BY_NAME", "REAL_PORTS", "RealPort"]


@dataclass(frozen=True)
class RealPort:
    """One real port.

    ``target`` is the adapter's import path (``module:Class``, the entry point ``pyproject.toml``
    registers) for a Python port, or the manifest's path under ``implementations/`` (``js/<name>/port.json``,
    registered in ``conformance/process_ports.py``) for a process port.  ``pip`` holds ``package==version``
    pins, exactly as the extra lists them; ``npm`` holds ``package@version``, as the port's
    ``package.json`` lists them.  ``what`` may name a pinned package's version as ``{package}``."""

    name: str
    target: str
    what: str
    extra: Optional[str] = None
    pip: tuple[str, ...] = ()
    npm: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()  # the top-level Python packages the adapter imports (its extra installs them)
    dtypes: frozenset[str] = frozenset()
    lacks: frozenset[str] = frozenset()  # the features of conformance.adapters.FEATURES it declares absent

    def __post_init__(self) -> None:
        if self.is_process == (":" in self.target):
            raise ValueError(f"{self.name}: target {self.target!r} is neither module:Class nor a port.json manifest")
        if (self.extra is None) != (not self.pip):
            raise ValueError(f"{self.name}: an extra needs pinned packages and pinned packages need an extra")
        if self.npm and not self.is_process:
            raise ValueError(f"{self.name}: npm packages belong to a process port")
        if any("==" not in pin for pin in self.pip) or any(not pin.rpartition("@")[0] for pin in self.npm):
            raise ValueError(f"{self.name}: every package is pinned (pip: name==version, npm: name@version)")

    @property
    def is_process(self) -> bool:
        """A program speaking the process protocol (a manifest), rather than a Python adapter."""
        return self.target.endswith("port.json")

    @property
    def tox_env(self) -> str:
        """The port's tox environment: its name, since tox.ini's ``[port]`` command passes
        ``--lstm-impl={envname}``."""
        return self.name

    @property
    def expected_failures(self) -> str:
        """The port's expected-failures file, relative to ``implementations/``."""
        return f"expected/{self.name}.txt"

    @property
    def pip_versions(self) -> dict[str, str]:
        """pip package -> pinned version, as the extra lists them."""
        return {package: version for package, _, version in (pin.partition("==") for pin in self.pip)}

    @property
    def npm_versions(self) -> dict[str, str]:
        """npm package -> version, as the port's ``package.json`` lists its ``dependencies``."""
        return {package: version for package, _, version in (pin.rpartition("@") for pin in self.npm)}

    @property
    def summary(self) -> str:
        """The one line on what the port is, with its pinned versions filled in."""
        return self.what.format(**self.pip_versions, **self.npm_versions)

    @property
    def install(self) -> str:
        """How a user installs it (after torch), as Markdown."""
        if self.extra:
            return f"`pip install 'lstm-conformance[{self.extra}]'`"
        if self.is_process:
            return f"`bash scripts/setup.sh {self.name}` (`npm ci`)"
        return "nothing (ships with torch)"  # neither an extra nor npm: only the suite's own dependencies


#: The real ports, in the order the documentation lists them.
REAL_PORTS: tuple[RealPort, ...] = (
    RealPort(
        name="onnxruntime", target="implementations.onnxruntime_lstm:OnnxRuntimeLSTM",
        what="ONNX Runtime {onnxruntime}'s `LSTM` operator, CPU, on a graph built with `onnx.helper` (no exporter)",
        extra="onnxruntime", pip=("onnxruntime==1.32.0", "onnx==1.23.2"), modules=("onnx", "onnxruntime"),
        dtypes=frozenset({"float32", "float16"}), lacks=frozenset({"proj_size", "dropout"})),
    RealPort(
        name="flax", target="implementations.flax_lstm:FlaxLSTM",
        what="Flax {flax} NNX `OptimizedLSTMCell` in `nnx.RNN` / `nnx.Bidirectional`, JAX {jax}",
        extra="jax", pip=("jax==0.10.2", "jaxlib==0.10.2", "flax==0.12.8"), modules=("jax", "flax"),
        dtypes=frozenset({"float32", "float64"}), lacks=frozenset({"proj_size", "dropout"})),
    RealPort(
        name="keras", target="implementations.keras_lstm:KerasLSTM",
        what="Keras {keras} `keras.layers.LSTM` on `KERAS_BACKEND=torch`, `use_cudnn=False`, no TensorFlow",
        extra="keras", pip=("keras==3.15.1",), modules=("keras",),
        dtypes=frozenset({"float32", "float64", "float16", "bfloat16"}), lacks=frozenset({"proj_size", "dropout"})),
    RealPort(
        name="paddle", target="implementations.paddle_lstm:PaddleLSTM",
        what="PaddlePaddle {paddlepaddle} `paddle.nn.LSTM`, CPU",
        extra="paddle", pip=("paddlepaddle==3.3.1",), modules=("paddle",),
        dtypes=frozenset({"float32", "float64"}), lacks=frozenset({"no_bias"})),
    RealPort(
        name="torch-quantizable", target="implementations.quantizable_lstm:QuantizableLSTM",
        what="`torch.ao.nn.quantizable.LSTM`, in floating point",
        dtypes=frozenset({"float32", "float64", "float16", "bfloat16"}),
        lacks=frozenset({"proj_size", "packed", "packed_unsorted", "unbatched", "dropout"})),
    RealPort(
        name="tfjs", target="js/tfjs/port.json",
        what="TensorFlow.js {@tensorflow/tfjs} `tf.layers.lstm` (pure JavaScript, CPU) on Node.js, a process port",
        npm=("@tensorflow/tfjs@4.22.0",),
        dtypes=frozenset({"float32"}), lacks=frozenset({"proj_size"})),
    RealPort(
        name="onnxruntime-node", target="js/onnxruntime-node/port.json",
        what="onnxruntime-node {onnxruntime-node}'s `LSTM` operator on the `onnxruntime` port's graphs, a process port",
        npm=("onnxruntime-node@1.30.0",),
        dtypes=frozenset({"float32"}), lacks=frozenset({"proj_size", "dropout"})),
)

#: The same rows by registry name.
BY_NAME: dict[str, RealPort] = {port.name: port for port in REAL_PORTS}
