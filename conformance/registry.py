"""Resolving which implementation to check.

An implementation is named in one of four ways, tried in this order:

1. ``--lstm-impl`` (or the CLI argument): an import path ``package.module:Class``, a name, or a process
   port (a program speaking the process protocol: :mod:`conformance.process_ports`);
2. the environment variable ``LSTM_CONFORMANCE_IMPL``, with the same syntax;
3. otherwise the bundled NumPy port, ``numpy``.

A name is looked up among the bundled implementations, then among the entry points of the
group ``lstm_conformance.implementations`` that installed packages declare.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib import metadata
from typing import Any, Optional

from . import process_ports
from .candidates import Candidate, make_candidate

__all__ = ["BUILTIN", "ENV_VAR", "ENTRY_POINT_GROUP", "ResolutionError", "available", "resolve"]

ENV_VAR = "LSTM_CONFORMANCE_IMPL"
ENTRY_POINT_GROUP = "lstm_conformance.implementations"
DEFAULT = "numpy"

#: Implementations that ship with the suite, by registry name.
BUILTIN: dict[str, str] = {
    "numpy": "implementations.numpy_lstm:NumpyLSTM",
    "torch": "torch.nn:LSTM",
}


class ResolutionError(Exception):
    """The implementation could not be found or loaded; the message is one line for the user."""


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """Every selectable name with the import path it stands for."""
    names = {name: ep.value for name, ep in _entry_points().items()}
    names.update({name: str(path) for name, path in process_ports.REGISTERED.items()})
    names.update(BUILTIN)
    return dict(sorted(names.items()))


def load_path(path: str) -> Any:
    """Import ``package.module:Attr`` (``package.module.Attr`` is accepted too)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ResolutionError(f"'{path}' is not an import path of the form package.module:Class")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # let `--lstm-impl mypkg.lstm:MyLSTM` find mypkg in the current folder
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the import raises, the user sees why
        raise ResolutionError(f"cannot import '{module_name}' for '{path}': {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ResolutionError(f"module '{module_name}' has no attribute '{attr}' (from '{path}')") from None
    return obj


def resolve(spec: Optional[str] = None, origin: Optional[str] = None) -> Candidate:
    """Turn a name or import path into a :class:`Candidate`, recording where it came from."""
    if not spec:
        env = os.environ.get(ENV_VAR)
        spec, origin = (env, f"environment variable {ENV_VAR}") if env else (DEFAULT, "default")
    origin = origin or "argument"
    if process_ports.is_process_spec(spec):
        return _resolve_process_port(spec, origin)
    if spec in BUILTIN:
        name, path, where = spec, BUILTIN[spec], f"{origin}, bundled implementation"
        target = load_path(path)
    elif ":" not in spec and spec in _entry_points():
        ep = _entry_points()[spec]
        dist = getattr(ep, "dist", None)
        name, path = spec, ep.value
        where = f"{origin}, entry point of {dist.name if dist else 'an installed package'}"
        try:
            target = ep.load()
        except Exception as exc:  # noqa: BLE001 - whatever the entry point raises, the user sees why
            raise ResolutionError(f"entry point '{spec}' ({path}) failed to load: {type(exc).__name__}: {exc}") from None
    elif ":" in spec or "." in spec:
        name, path, where = spec, spec, f"{origin}, import path"
        target = load_path(spec)
    else:
        known = ", ".join(available()) or "none"
        raise ResolutionError(f"unknown implementation '{spec}'; known names: {known}; "
                              "or give an import path such as mypkg.lstm:MyLSTM, or a program: "
                              "exec:COMMAND or a port.json manifest")
    try:
        return make_candidate(target, name=name, origin=where, path=path)
    except (TypeError, ValueError) as exc:
        raise ResolutionError(f"'{spec}': {exc}") from None


def _resolve_process_port(spec: str, origin: str) -> Candidate:
    """A program speaking the process protocol, as an adapter (one handshake now, to learn its capabilities)."""
    try:
        port = process_ports.parse_spec(spec)
        target = process_ports.adapter_class(port)
    except process_ports.SpecError as exc:
        raise ResolutionError(str(exc)) from None
    where = (f"{origin}, {port.source}: {port.describe()}, {target.hello.describe()}, "
             f"protocol {process_ports.PROTOCOL_VERSION}")
    return make_candidate(target, name=port.name, origin=where, path=port.spec)
