"""The one-line error an adapter module raises when its port's package is not installed."""

from __future__ import annotations

from implementations.real_ports import REAL_PORTS

#: registry name -> (extra, pinned packages), from the real ports' table (implementations/real_ports.py).
EXTRAS: dict[str, tuple[str, str]] = {port.name: (port.extra, " ".join(port.pip)) for port in REAL_PORTS if port.extra}


def missing_port(name: str, exc: ImportError) -> ImportError:
    """``ImportError: No module named 'keras'; the keras port needs pip install 'lstm-conformance[keras]' ...``"""
    extra, packages = EXTRAS[name]
    return ImportError(f"{exc}; the {name} port needs its extra: pip install 'lstm-conformance[{extra}]' "
                       f"(or {packages}) after torch")
