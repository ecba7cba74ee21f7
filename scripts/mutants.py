"""How many mutants of the bundled NumPy port the suite kills: an anchor no one here wrote.

cosmic-ray (``pip install cosmic-ray==8.7.0``, in any environment: it only edits files) lists every
mutant of ``implementations/numpy_lstm.py``; this script takes a uniform sample of them with a fixed
seed, applies each to a copy of the checkout, runs the suite on the ``dev`` profile against the
mutated port (with ``-x`` and a fresh hypothesis database per mutant), and writes one JSON line per
mutant: killed (the suite failed), survived (it passed) or timeout.  A survivor is then read by a
person: equivalent to the original, or a gap in the suite.

    python scripts/mutants.py --sample 100 --seed 1 --jobs 2 --out mutants.jsonl

Run from the checkout; the suite runs with this interpreter (the project's ``.venv``), cosmic-ray
from ``--cosmic-ray`` (default: the one on PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TARGET = "implementations/numpy_lstm.py"
SUITE = [sys.executable, "-m", "pytest", "--lstm-impl=numpy", "--lstm-profile=dev", "-x", "-q",
         "-p", "no:cacheprovider", "conformance/suite"]
CONFIG = f"""[cosmic-ray]
module-path = "{TARGET}"
timeout = 900.0
excluded-modules = []
test-command = "true"

[cosmic-ray.distributor]
name = "local"
"""


def _checkout_files(root: Path) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    return [line for line in listed.splitlines() if (root / line).is_file()]


def _copy(root: Path, files: list[str], into: Path) -> None:
    for name in files:
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, into / name)


def _mutants(cosmic_ray: str, base: Path, work: Path) -> list[tuple[str, int, int]]:
    """Every mutant cosmic-ray makes of the target: (operator, occurrence, line)."""
    (work / "cr.toml").write_text(CONFIG)
    session = work / "session.sqlite"
    subprocess.run([cosmic_ray, "init", str(work / "cr.toml"), str(session)], cwd=base, check=True,
                   capture_output=True)
    with sqlite3.connect(session) as db:
        return db.execute("select operator_name, occurrence, start_pos_row from mutation_specs "
                          "order by job_id").fetchall()


def _run_one(cosmic_ray: str, root: Path, files: list[str], work: Path, mutant: tuple[str, int, int],
             timeout: float) -> dict:
    operator, occurrence, line = mutant
    folder = Path(tempfile.mkdtemp(dir=work))
    try:
        _copy(root, files, folder)
        original = (folder / TARGET).read_text()
        subprocess.run([cosmic_ray, "apply", TARGET, operator, str(occurrence)], cwd=folder, check=True,
                       capture_output=True)
        mutated = (folder / TARGET).read_text()
        changed = [f"- {a}\n+ {b}" for a, b in zip(original.splitlines(), mutated.splitlines()) if a != b]
        env = dict(os.environ, PYTHONPATH=str(folder), HOME=str(folder), CI="")
        start = time.monotonic()
        try:
            result = subprocess.run(SUITE, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
            outcome = "survived" if result.returncode == 0 else "killed"
            tail = result.stdout[-800:]
        except subprocess.TimeoutExpired:
            outcome, tail = "timeout", ""
        return dict(operator=operator, occurrence=occurrence, line=line, change=changed, outcome=outcome,
                    seconds=round(time.monotonic() - start, 1), tail=tail)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=100, help="mutants to run (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sample (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run side by side (default 1)")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds per mutant (default 1500)")
    parser.add_argument("--out", default="mutants.jsonl", help="JSON lines written (default mutants.jsonl)")
    parser.add_argument("--cosmic-ray", default="cosmic-ray", help="the cosmic-ray command")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    files = _checkout_files(root)
    with tempfile.TemporaryDirectory(prefix="lstm-mutants-") as scratch:
        work = Path(scratch)
        base = work / "base"
        _copy(root, files, base)
        everything = _mutants(args.cosmic_ray, base, work)
        chosen = [everything[i] for i in sorted(random.Random(args.seed).sample(range(len(everything)),
                                                                                min(args.sample, len(everything))))]
        print(f"{len(everything)} mutants of {TARGET}; running {len(chosen)} (seed {args.seed})", flush=True)
        counts: dict[str, int] = {}
        with open(args.out, "w") as out, ThreadPoolExecutor(args.jobs) as pool:
            runs = pool.map(lambda m: _run_one(args.cosmic_ray, root, files, work, m, args.timeout), chosen)
            for record in runs:
                counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
                out.write(json.dumps(record) + "\n")
                out.flush()
                print(f"{record['outcome']:8} line {record['line']:4} {record['operator']} ({record['seconds']} s)",
                      flush=True)
    print(", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
