"""The layers of ``conformance`` (docs/architecture.md, "Layers"): every module is placed in one, and the
import-linter contracts in pyproject.toml hold, and fail on an import that breaks them."""

from __future__ import annotations

import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import conformance

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is in the dev extra")


def _placed() -> set[str]:
    """The modules named in pyproject.toml's layers contract."""
    text = (REPO / "pyproject.toml").read_text()
    layers = text.split('type = "layers"', 1)[1].split("]", 1)[0]
    return set(re.findall(r"conformance\.\w+", layers))


def test_every_module_has_a_layer() -> None:
    modules = {f"conformance.{m.name}" for m in pkgutil.iter_modules(conformance.__path__)}
    unplaced = modules - _placed() - {"conformance.__main__", "conformance.suite"}
    assert not unplaced, f"modules in no layer of pyproject.toml's layers contract: {sorted(unplaced)}"
    assert not _placed() - modules, f"layers name modules that do not exist: {sorted(_placed() - modules)}"


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", "pyproject.toml", "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_contracts_hold() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("module, line, contract", [
    ("compare.py", "from . import plugin", "Each module imports only the layers below it"),
    ("children.py", "import numpy", "The process layer is standard library only"),
    ("gradients.py", "from . import isolation", "Only the service, the runner and the plugin reach the worker machinery"),
])
def test_an_import_against_the_layers_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    """Inside a function too: an import hidden there counts like any other."""
    shutil.copytree(REPO / "conformance", tmp_path / "conformance", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / "conformance" / module, "a") as source:
        source.write(f"\n\ndef _hidden() -> None:\n    {line}  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0, result.stdout[-3000:]
    assert f"{contract} BROKEN" in result.stdout, result.stdout[-3000:]
