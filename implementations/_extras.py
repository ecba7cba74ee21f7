"""The one-line error an adapter module raises when its port's package is not installed."""

from __future__ import annotations

#: registry name -> (extra, pinned packages), as in pyproject.toml's optional dependencies.
EXTRAS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("onnxruntime", "onnxruntime==1.32.0 onnx==1.23.2"),
    "flax": ("jax", "jax==0.10.2 jaxlib==0.10.2 flax==0.12.8"),
    "keras": ("keras", "keras==3.15.1"),
    "paddle": ("paddle", "paddlepaddle==3.3.1"),
}


def missing_port(name: str, exc: ImportError) -> ImportError:
    """``ImportError: No module named 'keras'; the keras port needs pip install 'lstm-conformance[keras]' ...``"""
    extra, packages = EXTRAS[name]
    return ImportError(f"{exc}; the {name} port needs its extra: pip install 'lstm-conformance[{extra}]' "
                       f"(or {packages}) after torch")
