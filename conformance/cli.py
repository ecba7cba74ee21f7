"""The ``lstm-conformance`` command: ``check`` an implementation, ``list`` what is registered."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any, Optional

from .adapters import FEATURES
from .registry import ResolutionError, available, resolve

__all__ = ["main"]


class _Collector:
    """A pytest plugin object that records each test's outcome for the summary table."""

    def __init__(self) -> None:
        self.results: dict[str, tuple[str, str]] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        name = report.nodeid.split("::")[-1]
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            detail = ""
            if report.skipped and isinstance(report.longrepr, tuple):
                detail = str(report.longrepr[2]).removeprefix("Skipped: ")
            elif report.failed:
                detail = str(getattr(report.longrepr, "reprcrash", None) and report.longrepr.reprcrash.message
                             or "failed").splitlines()[0]
            self.results[name] = (report.outcome, detail)


def _check(args: argparse.Namespace) -> int:
    import pytest

    try:
        candidate = resolve(args.impl, origin="command line")
    except ResolutionError as exc:
        print(f"lstm-conformance: error: {exc}", file=sys.stderr)
        return 2
    print(f"checking {candidate.name} ({candidate.path}, {candidate.kind}) against torch.nn.LSTM")
    pytest_args = ["--pyargs", "conformance.suite", f"--lstm-impl={args.impl}", "-q", "--no-header",
                   "-p", "no:cacheprovider", f"--hypothesis-profile={args.profile}",
                   "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    if args.max_examples is not None:
        pytest_args.append(f"--hypothesis-max-examples={args.max_examples}")  # hypothesis' own option
    if args.seed is not None:
        pytest_args.append(f"--hypothesis-seed={args.seed}")
    if args.workers:
        pytest_args += ["-n", str(args.workers)]
    if not args.verbose:
        pytest_args += ["--tb=line"]
    collector = _Collector()
    started = time.perf_counter()
    code = pytest.main(pytest_args, plugins=[collector])
    elapsed = time.perf_counter() - started
    _summary(collector.results, elapsed)
    return int(code)


def _summary(results: dict[str, tuple[str, str]], elapsed: float) -> None:
    if not results:
        return
    width = max(len(name) for name in results)
    print(f"\n{'test':<{width}}  result   detail")
    for name, (outcome, detail) in sorted(results.items()):
        print(f"{name:<{width}}  {outcome:<7}  {detail[:100]}")
    counts = Counter(outcome for outcome, _ in results.values())
    print(f"\n{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped in {elapsed:.1f}s")


def _list(args: argparse.Namespace) -> int:
    for name, path in available().items():
        try:
            candidate = resolve(name)
        except ResolutionError as exc:
            print(f"{name:<12} {path}\n    cannot load: {exc}")
            continue
        caps = candidate.capabilities
        lacks = sorted(set(FEATURES) - caps.features)
        print(f"{name:<12} {path} ({candidate.kind})")
        print(f"    dtypes: {', '.join(sorted(caps.dtypes))}; errors: {caps.errors}; "
              f"unsupported: {', '.join(lacks) or 'nothing'}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="lstm-conformance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="run the conformance suite on one implementation")
    check.add_argument("impl", help="registered name or import path package.module:Class")
    check.add_argument("--profile", choices=["dev", "ci", "thorough"], default="ci")
    check.add_argument("--max-examples", type=int, default=None, help="examples per test")
    check.add_argument("-n", dest="workers", type=int, default=0, help="parallel workers (pytest-xdist)")
    check.add_argument("--seed", type=int, default=None, help="hypothesis seed, to reproduce a run")
    check.add_argument("-v", "--verbose", action="store_true", help="full failure reports")
    check.set_defaults(func=_check)
    lister = sub.add_parser("list", help="registered implementations and their capabilities")
    lister.set_defaults(func=_list)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
