"""Ports in any language: an executable that speaks the process protocol, checked as an adapter.

A process port is named in one of three ways (``--lstm-impl``, ``LSTM_CONFORMANCE_IMPL``, the CLI):

* a registered name (:data:`REGISTERED`: ``tfjs``, ``onnxruntime-node``), which stands for a manifest;
* a manifest, a JSON file (``--lstm-impl=path/to/port.json``): the command line, its working folder,
  environment variables, a start-up time limit, the expected-failures file, and files it requires
  with the command that installs them (:func:`load_manifest`);
* a command line: ``--lstm-impl="exec:node my_port.js"``, run in the current folder.

Resolving it starts the program once for the handshake (``start``: the protocol version, the port's
name and version, its capabilities) and makes a :class:`ProcessAdapter` subclass carrying them.  Cases
then run as for any adapter (in the worker process, which re-resolves the spec): the adapter's
constructor makes sure the program runs, ``forward`` and ``backward`` send one request each (the
model's ``construct``, its config and weights, goes with the first), and the reply becomes arrays, or
the exception the port named, so every check, the error
policy, expected failures, hints and reproducers apply unchanged.  The program runs once per process
that uses it (:class:`Session`), restarted after a crash, a time-out or a malformed reply; such a
failure propagates as a :class:`~conformance.processes.ProcessFailure` and the case fails as a crash,
with what the process did.

The messages are specified in ``docs/process-protocol.md``; their JSON parts must satisfy
``docs/process-protocol.schema.json``, which the validating mode (``--lstm-validate-protocol``, or the
environment variable :data:`VALIDATE_ENV`) checks for every message, both ways.
"""

from __future__ import annotations

import builtins
import json
import os
import shlex
import shutil
import time
import weakref
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, cast

import numpy as np

from . import schema, timing, wire
from .adapters import Adapter, ArrayInput, ArrayResult, Capabilities
from .arrays import LSTMConfig, PackedArrays
from .isolation import DEFAULT_TIMEOUT, RETRY_FACTOR
from .processes import ChildProcess, ProcessFailure, ProtocolError

__all__ = ["EXEC_PREFIX", "PROTOCOL_VERSION", "REGISTERED", "SCHEMA_PATH", "TIMEOUT_ENV", "VALIDATE_ENV",
           "Hello", "PortError", "PortSpec", "PortUnsupported", "ProcessAdapter", "SpecError", "adapter_class",
           "is_process_spec", "load_manifest", "parse_spec", "stop_sessions"]

PROTOCOL_VERSION = 1
EXEC_PREFIX = "exec:"
#: The per-case time limit (``--lstm-timeout``), as the pytest plugin passes it to the worker processes.
TIMEOUT_ENV = "LSTM_CONFORMANCE_TIMEOUT"
#: Set to 1 (``--lstm-validate-protocol``): every message is checked against the schema.
VALIDATE_ENV = "LSTM_CONFORMANCE_VALIDATE_PROTOCOL"
_IMPLEMENTATIONS = Path(__file__).resolve().parent.parent / "implementations"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "process-protocol.schema.json"
#: Registered process ports: name -> manifest.
REGISTERED: dict[str, Path] = {
    "tfjs": _IMPLEMENTATIONS / "js" / "tfjs" / "port.json",
    "onnxruntime-node": _IMPLEMENTATIONS / "js" / "onnxruntime-node" / "port.json",
}
DEFAULT_STARTUP_TIMEOUT = 30.0
_MANIFEST_KEYS = {"name", "command", "folder", "environment", "startup_timeout", "expected_failures", "requires"}


class SpecError(ValueError):
    """A process port that cannot be resolved: a bad manifest, a missing program or package, a failed
    handshake.  The message is one line, naming the fix where there is one."""


class PortError(Exception):
    """Base of the exceptions a port names that are not Python's built-in ones (``Error``, ``RangeError``)."""


class PortUnsupported(NotImplementedError):
    """The port answered ``unsupported`` to a request."""


# ----------------------------------------------------------------------------- naming a port
@dataclass(frozen=True)
class PortSpec:
    """How to run a port: what ``--lstm-impl`` named, resolved."""

    spec: str  # what the worker processes resolve again: a registered name, a manifest's path, "exec:..."
    name: str
    argv: tuple[str, ...]
    folder: str
    environment: tuple[tuple[str, str], ...] = ()
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    expected_failures: Optional[str] = None
    requires: tuple[tuple[str, str], ...] = ()  # (path relative to folder, the command that installs it)
    source: str = ""  # "registered process port", "manifest ...", "command line"

    def describe(self) -> str:
        """``node port.js in implementations/js/tfjs``, for the header and messages."""
        folder = Path(self.folder)
        if folder != Path.cwd() and Path.cwd() in folder.parents:  # below the current folder: shorter
            folder = folder.relative_to(Path.cwd())
        return f"{shlex.join(self.argv)} in {folder}"


def is_process_spec(spec: str) -> bool:
    """Whether ``spec`` names a process port (a registered one, a ``.json`` manifest, or ``exec:``)."""
    return spec in REGISTERED or spec.startswith(EXEC_PREFIX) or spec.endswith(".json")


def parse_spec(spec: str) -> PortSpec:
    """The :class:`PortSpec` for a registered name, a manifest path or an ``exec:`` command line."""
    if spec.startswith(EXEC_PREFIX):
        try:
            argv = tuple(shlex.split(spec[len(EXEC_PREFIX):]))
        except ValueError as exc:
            raise SpecError(f"'{spec}': the command line does not parse: {exc}") from None
        if not argv:
            raise SpecError(f"'{spec}' names no command; write exec:PROGRAM ARGUMENTS, e.g. exec:node my_port.js")
        return PortSpec(spec, spec, argv, os.getcwd(), source="command line")
    if spec in REGISTERED:
        return load_manifest(REGISTERED[spec], spec=spec, source="registered process port")
    path = Path(spec).resolve()
    return load_manifest(path, spec=str(path), source=f"manifest {spec}")


def load_manifest(path: Path, spec: str, source: str) -> PortSpec:
    """A port's manifest: a JSON object (JSON, not TOML: ``tomllib`` needs Python 3.11, the suite 3.10)::

        {"name": "tfjs", "command": ["node", "port.js"], "folder": ".", "environment": {"K": "V"},
         "startup_timeout": 30, "expected_failures": "../../expected/tfjs.txt",
         "requires": [{"path": "node_modules/@tensorflow/tfjs", "install": "bash scripts/setup.sh tfjs"}]}

    Only ``command`` is required; ``folder`` (default: the manifest's folder) and the other paths are
    relative to the manifest's folder and to ``folder``.  An unknown key is an error (a typo would
    otherwise be ignored).
    """
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read the port manifest {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"the port manifest {path} is not valid JSON: {exc}") from None
    problem = _manifest_problem(data)
    if problem:
        raise SpecError(f"the port manifest {path}: {problem}")
    here = path.parent
    folder = (here / data.get("folder", ".")).resolve()
    expected = data.get("expected_failures")
    return PortSpec(spec, data.get("name", path.parent.name), tuple(data["command"]), str(folder),
                    tuple(sorted(data.get("environment", {}).items())),
                    float(data.get("startup_timeout", DEFAULT_STARTUP_TIMEOUT)),
                    str((here / expected).resolve()) if expected else None,
                    tuple((item["path"], item["install"]) for item in data.get("requires", [])), source)


def _manifest_problem(data: Any) -> str:
    if not isinstance(data, dict):
        return "must be a JSON object"
    unknown = sorted(set(data) - _MANIFEST_KEYS)
    if unknown:
        return f"unknown key(s) {unknown}; known: {sorted(_MANIFEST_KEYS)}"
    command = data.get("command")
    if not (isinstance(command, list) and command and all(isinstance(a, str) and a for a in command)):
        return "'command' must be a non-empty list of strings (the program and its arguments)"
    environment = data.get("environment", {})
    if not (isinstance(environment, dict) and all(isinstance(v, str) for v in environment.values())):
        return "'environment' must be an object of strings"
    timeout = data.get("startup_timeout", DEFAULT_STARTUP_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        return "'startup_timeout' must be a number of seconds above 0"
    for key in ("name", "folder", "expected_failures"):
        if key in data and not isinstance(data[key], str):
            return f"'{key}' must be a string"
    requires = data.get("requires", [])
    if not (isinstance(requires, list) and all(isinstance(r, dict) and set(r) == {"path", "install"}
                                               and all(isinstance(v, str) for v in r.values()) for r in requires)):
        return "'requires' must be a list of {\"path\": ..., \"install\": ...} objects"
    return ""


def check_runnable(port: PortSpec) -> None:
    """The program is on PATH and the files the port requires are there; else a one-line SpecError."""
    program = port.argv[0]
    path = dict(os.environ, **dict(port.environment)).get("PATH")
    if shutil.which(program, path=path) is None and not (Path(port.folder) / program).is_file():
        hint = " (Node.js 20 or later: https://nodejs.org)" if program == "node" else ""
        raise SpecError(f"the process port '{port.name}' runs `{program}`, which is not on PATH{hint}")
    for required, install in port.requires:
        if not (Path(port.folder) / required).exists():
            raise SpecError(f"the process port '{port.name}' needs {required} in {port.folder}, which is not "
                            f"there: run {install}")


# ----------------------------------------------------------------------------- the handshake
@dataclass(frozen=True)
class Hello:
    """What a port said in its handshake."""

    port: Mapping[str, str]
    capabilities: Capabilities

    def describe(self) -> str:
        extra = ", ".join(self.port[k] for k in ("language", "runtime") if self.port.get(k))
        return f"{self.port['name']} {self.port['version']}" + (f" ({extra})" if extra else "")


def _capabilities(declared: Any, child: ChildProcess) -> Capabilities:
    """The capabilities a ``started`` reply declares; anything unknown is a protocol error."""
    if not isinstance(declared, dict):
        child.fail(ProtocolError, f"declared capabilities {declared!r}; expected an object")
    try:
        features, dtypes = declared["features"], declared["dtypes"]
        if not (isinstance(features, list) and isinstance(dtypes, list)):
            raise ValueError("features and dtypes must be lists of names")
        unknown = sorted(set(dtypes) - {"float16", "bfloat16", "float32", "float64"})
        if unknown:
            raise ValueError(f"unknown dtypes {unknown}; known: float16, bfloat16, float32, float64")
        gradients = declared["gradients"]
        if not isinstance(gradients, bool):
            raise ValueError(f"gradients must be true or false, got {gradients!r}")
        return Capabilities(frozenset(features), frozenset(dtypes), declared["errors"], gradients, False)
    except KeyError as exc:
        child.fail(ProtocolError, f"declared capabilities without {exc}")
    except (TypeError, ValueError) as exc:
        child.fail(ProtocolError, f"declared capabilities the suite does not know: {exc}")


# ----------------------------------------------------------------------------- one running port
def _request_timeout() -> float:
    """How long a reply is awaited: the per-case limit and its retry's (``conformance.isolation``), so that
    in a worker the worker's own limit always ends a hang first; inline, a hang still ends."""
    try:
        limit = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        limit = DEFAULT_TIMEOUT
    return (1 + RETRY_FACTOR) * limit


@lru_cache(maxsize=1)
def _schema() -> dict:
    try:
        return json.loads(SCHEMA_PATH.read_text())
    except OSError as exc:
        raise RuntimeError(f"the protocol's schema {SCHEMA_PATH} cannot be read ({exc.strerror}); the validating "
                           "mode runs from a checkout of lstm-conformance") from None


def _validating() -> bool:
    return os.environ.get(VALIDATE_ENV, "") not in ("", "0")


class Session:
    """One port program serving this process: requests and replies, restarts, the models it holds.

    A model is sent to the program with the first request that uses it (``construct``, then that
    request, in one write; the replies are read in order): one wake-up of the program per call, and a
    program restarted since (after a crash) gets the model again the same way.
    """

    def __init__(self, port: PortSpec) -> None:
        self.port = port
        self.child = ChildProcess(port.argv, port.folder, dict(port.environment), name=f"port process '{port.name}'")
        self.next_id = 0
        self.next_model = 0
        self.hello: Optional[Hello] = None
        self.models: dict[int, dict] = {}  # model -> its construct request, while an adapter holds it
        self.built: set[int] = set()  # the models the running program holds
        self.released: list[int] = []  # models it holds that no adapter needs: released with the next construct
        self.validate = _validating()

    # ---------------------------------------------------------------- lifecycle
    def ensure_started(self) -> Hello:
        """A running program that has answered the handshake (started now if there is none)."""
        if self.child.running and self.hello is not None:
            return self.hello
        check_runnable(self.port)
        self.child.start()
        self.built.clear()  # the models of a previous run died with it
        self.released.clear()
        reply, = self._exchange([({"type": "start", "protocol": PROTOCOL_VERSION}, ("started",), "the handshake")],
                                timeout=self.port.startup_timeout)
        version = reply.get("protocol")
        if version != PROTOCOL_VERSION:
            self.child.fail(ProtocolError, f"speaks protocol version {version!r}; this suite speaks "
                                           f"{PROTOCOL_VERSION} (docs/process-protocol.md)")
        port = reply.get("port")
        if not (isinstance(port, dict) and isinstance(port.get("name"), str) and isinstance(port.get("version"), str)):
            self.child.fail(ProtocolError, f"described itself as {port!r}; expected {{\"name\": ..., \"version\": ...}}")
        self.hello = Hello(dict(port), _capabilities(reply.get("capabilities"), self.child))
        return self.hello

    def stop(self) -> None:
        """Send ``stop`` (the program exits), then make sure it has."""
        if self.child.running:
            try:
                self.child.send([self._frame({"type": "stop", "id": self._id()})], timeout=1.0)
            except ProcessFailure:
                pass
        self.child.stop()
        self.hello = None

    # ---------------------------------------------------------------- requests
    def define(self, config: LSTMConfig, weights: Mapping[str, np.ndarray]) -> int:
        """A model for the program, built there with the first request that uses it (see the class)."""
        model = self.next_model
        self.next_model += 1
        self.models[model] = {"type": "construct", "model": model,
                              "config": {f.name: getattr(config, f.name) for f in fields(config)},
                              "weights": dict(weights)}
        return model

    def release(self, model: int) -> None:
        """Forget a model: called when its adapter is garbage."""
        self.models.pop(model, None)
        if model in self.built:
            self.built.discard(model)
            self.released.append(model)

    def request(self, message: dict, expected: tuple[str, ...], doing: str) -> dict:
        """Send a request (after its model's ``construct`` where the program does not hold it yet) and
        return its reply of an ``expected`` type; an ``error`` reply raises the exception the port named,
        ``unsupported`` raises :class:`PortUnsupported`."""
        self.ensure_started()
        answers = ("error", "unsupported")
        batch = [(message, (*expected, *answers), doing)]
        model = message.get("model")
        if model is not None and model not in self.built:
            construct = {**self.models[model], "release": self.released}
            self.released = []
            batch.insert(0, (construct, ("constructed", *answers), "construct"))
        started_at, started = time.time(), time.perf_counter()
        replies = self._exchange(batch, _request_timeout())
        if timing.ENABLED:  # the protocol's cost: the round trip less the port's own time, where it says it
            own = sum(r["seconds"] for r in replies if isinstance(r.get("seconds"), (int, float))
                      and not isinstance(r.get("seconds"), bool) and r["seconds"] >= 0)
            timing.record(timing.PROTOCOL, started_at, max(0.0, time.perf_counter() - started - own))
        for (_, _, what), reply in zip(batch, replies):
            if reply["type"] == "error":
                error = _port_exception(reply.get("error"), self.child)
                if what == "construct":
                    error.args = (f"while constructing the model: {error.args[0]}",)
                raise error
            if reply["type"] == "unsupported":
                raise PortUnsupported(f"the port '{self.port.name}' does not support this {what} request: "
                                      f"{reply.get('reason', '')}")
            if what == "construct" and model is not None:  # (a construct request is sent for a model)
                self.built.add(model)
        return replies[-1]

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _frame(self, message: dict) -> bytes:
        body = wire.encode(message)
        if self.validate:  # the suite's own messages must satisfy the schema it publishes
            _check_schema(wire.document(body), "request", self.child, sent=True)
        return body

    def _exchange(self, batch: list[tuple[dict, tuple[str, ...], str]], timeout: float) -> list[dict]:
        """Send the requests of ``batch`` (message, the reply types expected, what it does) in one write,
        and read their replies in order, each checked: it decodes, it is of an expected type, it answers
        that request."""
        ids = [self._id() for _ in batch]
        self.child.send([self._frame({**message, "id": i}) for (message, _, _), i in zip(batch, ids)], timeout)
        return [self._reply(self.child.receive(timeout), request_id, expected, doing)
                for (_, expected, doing), request_id in zip(batch, ids)]

    def _reply(self, body: bytes, request_id: int, expected: tuple[str, ...], doing: str) -> dict:
        try:
            if self.validate:
                _check_schema(wire.document(body), "reply", self.child)
            reply = wire.decode(body)
        except wire.WireError as exc:
            self.child.fail(ProtocolError, f"sent a malformed reply to {doing}: {exc}; the frame: {_excerpt(body)}")
        if not isinstance(reply, dict) or reply.get("type") not in expected:
            kind = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
            self.child.fail(ProtocolError, f"replied {kind!r} to {doing}; expected one of "
                                           f"{', '.join(map(repr, expected))}; the frame: {_excerpt(body)}")
        if reply.get("id") != request_id:
            self.child.fail(ProtocolError, f"replied to request {reply.get('id')!r}, but the request awaiting a reply "
                                           f"is {request_id} ({doing}): a reply to a request that was not made")
        return reply


def _check_schema(document: Any, kind: str, child: ChildProcess, sent: bool = False) -> None:
    root = _schema()
    try:
        schema.validate(document, root["$defs"][kind], root)
    except schema.SchemaViolation as exc:
        if sent:
            raise RuntimeError(f"lstm-conformance sent a {kind} its schema rejects: {exc}") from None
        child.fail(ProtocolError, f"sent a {kind} the protocol's schema rejects: {exc}")


def _excerpt(body: bytes, limit: int = 200) -> str:
    return repr(body[:limit]) + (f" ... ({len(body)} bytes)" if len(body) > limit else "")


@lru_cache(maxsize=None)
def _named_exception(name: str) -> type:
    """The exception class for a name a port gave: Python's built-in one, or a PortError subclass."""
    found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, Exception) and name.isidentifier():
        return found
    return type(name if name.isidentifier() else "PortError", (PortError,), {"__module__": "port"})


def _port_exception(error: Any, child: ChildProcess) -> Exception:
    if not (isinstance(error, dict) and isinstance(error.get("type"), str) and error["type"]
            and isinstance(error.get("message"), str)):
        child.fail(ProtocolError, f"sent an error reply without a type and message: {error!r}")
    return _named_exception(error["type"])(error["message"])


_SESSIONS: dict[str, Session] = {}


def session_for(port: PortSpec) -> Session:
    """This process's session of ``port`` (one program per port per process)."""
    session = _SESSIONS.get(port.spec)
    if session is None or session.port != port:
        session = _SESSIONS[port.spec] = Session(port)
    return session


def stop_sessions() -> None:
    """Stop every port program this process runs."""
    for session in _SESSIONS.values():
        session.stop()
    _SESSIONS.clear()


# ----------------------------------------------------------------------------- the adapter
def _sequence(value: Any) -> Any:
    """An input or output as the wire carries it: an array, or a packed batch's four parts."""
    if isinstance(value, PackedArrays):
        return dict(value._asdict())
    return value


def _from_wire(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == set(PackedArrays._fields):
        return PackedArrays(**value)
    return value


class ProcessAdapter(Adapter):
    """An adapter whose port is a program speaking the process protocol (see the module docstring).

    :func:`adapter_class` makes a subclass per port, with the capabilities of its handshake.
    """

    port: ClassVar[PortSpec]
    hello: ClassVar[Hello]

    def __init__(self, config: LSTMConfig, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__(config, weights)
        self._session = session_for(self.port)
        self._session.ensure_started()  # a program that cannot start fails the construction
        self._model = self._session.define(config, self.weights)
        weakref.finalize(self, self._session.release, self._model)

    def _call(self, input: Any, hx: Any) -> dict:
        if hx is not None and not isinstance(hx, np.ndarray):
            hx = list(hx) if isinstance(hx, (tuple, list)) else hx
        return {"model": self._model, "input": _sequence(input), "hx": hx}

    def forward(self, input: ArrayInput, hx: Optional[Any], *, training: bool) -> ArrayResult:
        reply = self._session.request({"type": "forward", **self._call(input, hx), "training": bool(training)},
                                      ("result",), "forward")
        missing = [name for name in ("output", "h_n", "c_n") if name not in reply]
        if missing:
            self._session.child.fail(ProtocolError, f"sent a result without {', '.join(missing)}")
        return _from_wire(reply["output"]), (reply["h_n"], reply["c_n"])

    def backward(self, input: ArrayInput, hx: Optional[Any], cotangents: Mapping[str, np.ndarray], *,
                 training: bool) -> dict[str, np.ndarray]:
        reply = self._session.request({"type": "backward", **self._call(input, hx), "training": bool(training),
                                       "cotangents": dict(cotangents)}, ("gradients",), "backward")
        gradients = reply.get("gradients")
        if not isinstance(gradients, dict):
            self._session.child.fail(ProtocolError, f"sent gradients {gradients!r}; expected an object of arrays")
        return gradients


def adapter_class(port: PortSpec) -> type[ProcessAdapter]:
    """Resolve ``port``: check it can run, handshake once (the program then stops), and return a
    :class:`ProcessAdapter` subclass with its capabilities.  Raises a one-line :class:`SpecError`."""
    check_runnable(port)
    session = Session(port)
    try:
        hello = session.ensure_started()
    except ProcessFailure as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        stderr = f" (stderr: {lines[-1]})" if len(lines) > 1 else ""
        raise SpecError(f"the process port '{port.name}' ({port.describe()}) failed its handshake: "
                        f"{lines[0].rstrip(':')}{stderr}") from None
    finally:
        session.stop()
    attributes = {"port": port, "hello": hello, "lstm_conformance_capabilities": hello.capabilities, "__module__": __name__,
                  "__doc__": f"The process port {port.name}: {hello.describe()}, run as {port.describe()}."}
    if port.expected_failures:
        attributes["lstm_conformance_expected_failures"] = port.expected_failures
    return cast("type[ProcessAdapter]", type(f"ProcessPort_{_identifier(port.name)}", (ProcessAdapter,), attributes))


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name) or "port"

