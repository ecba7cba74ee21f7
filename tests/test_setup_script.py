"""scripts/setup.sh and scripts/check.sh, run against a stand-in Python that records what pip is asked.

The stand-in makes a ``.venv/bin/python`` that logs each call instead of installing anything, so
these tests see the steps the scripts announce and the pip command lines, in seconds and offline.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

#: ``python3`` for the scripts: ``-m venv DIR`` makes DIR/bin/python, which logs its arguments.
FAKE_PYTHON = r'''#!/usr/bin/env bash
if [ "$1" = "--version" ]; then echo "Python 3.99.0"; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin"
    cat > "$3/bin/python" <<'STUB'
#!/usr/bin/env bash
if [ "$1" = "--version" ]; then echo "Python 3.99.0"; exit 0; fi
echo "$*" >> "$(dirname "$0")/../calls.log"
STUB
    cat > "$3/bin/lstm-conformance" <<'STUB'
#!/usr/bin/env bash
echo "lstm-conformance $*" >> "$(dirname "$0")/../calls.log"
STUB
    chmod +x "$3/bin/python" "$3/bin/lstm-conformance"
    exit 0
fi
echo "unexpected: $*" >&2; exit 3
'''


def _checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    for script in ("setup.sh", "check.sh"):
        shutil.copy(REPO / "scripts" / script, root / "scripts" / script)
    (root / "pyproject.toml").write_text('[project]\nname = "lstm-conformance"\n')
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return root


def _run(root: Path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {"PATH": "/usr/bin:/bin", "PYTHON": str(root.parent / "python"), **env}
    result = subprocess.run(["bash", str(root / "scripts" / script), *args], env=environ,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _calls(root: Path) -> list[str]:
    log = root / ".venv" / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.slow
def test_setup_says_each_step_and_lets_pip_show_progress_without_bars_in_a_log(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    result = _run(root, "setup.sh")
    steps = [line for line in result.stdout.splitlines() if line.startswith("setup: ")]
    assert len(steps) == 4, result.stdout
    assert "creating .venv with Python 3.99.0" in steps[0]
    assert "installing torch==2.13.0" in steps[1]
    assert "installing this project" in steps[2] and "[test]" in steps[2]
    assert steps[3].startswith("setup: done")
    torch, project = _calls(root)
    assert torch.split()[-1] == "torch==2.13.0" and project.split()[-2:] == ["-e", ".[test]"]
    for call in (torch, project):
        words = call.split()
        assert words[:3] == ["-m", "pip", "install"]
        assert "--quiet" not in words and "-q" not in words  # pip says what it collects and installs
        assert "--progress-bar off" in call  # stdout is not a terminal here


@pytest.mark.slow
def test_setup_run_again_installs_nothing_until_something_changes(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    _run(root, "setup.sh")
    again = _run(root, "setup.sh")
    assert again.stdout.splitlines() == [
        "setup: .venv is up to date (torch==2.13.0, lstm-conformance[test]); remove .venv to set it up afresh"]
    assert len(_calls(root)) == 2
    with_extra = _run(root, "setup.sh", "keras")  # another extra: installed, into the same .venv
    assert "using the existing .venv" in with_extra.stdout
    assert _calls(root)[-1].split()[-2:] == ["-e", ".[test,keras]"]
    (root / "pyproject.toml").write_text('[project]\nname = "lstm-conformance"\nversion = "2"\n')
    _run(root, "setup.sh", "keras")  # pyproject.toml changed: installed again
    assert len(_calls(root)) == 6


@pytest.mark.slow
def test_check_uses_the_ci_profile_unless_the_user_asks_for_another(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    _run(root, "check.sh")
    _run(root, "check.sh", "--profile", "thorough", "-n", "2")
    plain, asked = [call for call in _calls(root) if call.startswith("lstm-conformance")]
    assert plain == "lstm-conformance check numpy --profile ci"
    # argparse keeps the last --profile: the user's
    assert asked == "lstm-conformance check numpy --profile ci --profile thorough -n 2"


#: ``npm`` for the scripts: logs its arguments and folder, and makes node_modules as ``npm ci`` would.
FAKE_NPM = r'''#!/usr/bin/env bash
echo "$* in $(pwd)" >> "$NPM_LOG"
mkdir -p node_modules
'''


@pytest.mark.slow
def test_setup_installs_a_javascript_port_by_npm_ci_from_its_lockfile_once(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    folder = root / "implementations" / "js" / "tfjs"
    folder.mkdir(parents=True)
    (folder / "package-lock.json").write_text('{"lockfileVersion": 3}')
    tools = tmp_path / "tools"
    tools.mkdir()
    for name, text in (("npm", FAKE_NPM), ("node", "#!/usr/bin/env bash\n")):
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    log = tmp_path / "npm.log"
    env = {"PATH": f"{tools}:/usr/bin:/bin", "NPM_LOG": str(log)}
    result = _run(root, "setup.sh", "tfjs", **env)
    assert "installing the tfjs port's npm packages" in result.stdout
    assert log.read_text().splitlines() == [
        f"ci --ignore-scripts --no-audit --no-fund --loglevel=error in {folder}"]
    assert _calls(root)[-1].split()[-2:] == ["-e", ".[test]"]  # not a pip extra
    again = _run(root, "setup.sh", "tfjs", **env)
    assert "implementations/js/tfjs/node_modules is up to date" in again.stdout
    assert len(log.read_text().splitlines()) == 1
    (folder / "package-lock.json").write_text('{"lockfileVersion": 3, "changed": true}')
    _run(root, "setup.sh", "tfjs", **env)  # a new lockfile: installed again
    assert len(log.read_text().splitlines()) == 2
