"""Checks of option values given on a command line, shared by the pytest plugin and the CLI.

Each check takes the option's name as the user typed it and its value (a string from a command
line, or an already-converted value), and returns the converted value or raises
:class:`OptionError` with a one-line message that names the option, the value and what is
allowed.  The caller turns that into its own usage error (pytest's, or the CLI's exit status 2).

For argparse command lines, :func:`argparse_type` makes a check a ``type=`` and
:class:`OneLineParser` prints every usage error as that one line.  :func:`check_writable` says why a
file named by an option cannot be written, before a long run rather than after it.
"""

from __future__ import annotations

import argparse
import functools
import math
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

__all__ = ["OneLineParser", "OptionError", "argparse_type", "check_writable", "non_negative_int", "positive_float",
           "positive_int"]


class OptionError(ValueError):
    """A bad option value; ``str()`` is the one-line message for the user."""


def _number(option: str, value: Any, kind: type, wanted: str) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise OptionError(f"{option} must be {wanted}, got {value!r}") from None
    if kind is float and not math.isfinite(number):
        raise OptionError(f"{option} must be {wanted}, got {value!r}")
    return number


def positive_int(option: str, value: Any) -> int:
    """A whole number of 1 or more (examples per test, workers)."""
    number = _number(option, value, int, "a whole number of 1 or more")
    if number < 1:
        raise OptionError(f"{option} must be a whole number of 1 or more, got {value!r}")
    return number


def non_negative_int(option: str, value: Any) -> int:
    """A whole number of 0 or more (a seed)."""
    number = _number(option, value, int, "a whole number of 0 or more")
    if number < 0:
        raise OptionError(f"{option} must be a whole number of 0 or more, got {value!r}")
    return number


def positive_float(option: str, value: Any) -> float:
    """A finite number above 0 (seconds)."""
    number = _number(option, value, float, "a number of seconds above 0")
    if number <= 0:
        raise OptionError(f"{option} must be a number of seconds above 0, got {value!r}")
    return number


def argparse_type(check: Callable[[str, Any], Any], option: str) -> Callable[[str], Any]:
    """``check`` for ``option``, as an argparse ``type=``: a bad value becomes argparse's usage error.

    argparse itself starts the message with ``argument OPTION:``, so the option's name is not repeated.
    """

    def convert(text: str) -> Any:
        try:
            return check(option, text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{option} ")) from None

    convert.__name__ = getattr(check, "__name__", "value")
    return convert


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error reported on one line (no usage block) and exit status 2.

    The line reads ``ERROR_NAME: error: MESSAGE ERROR_HINT``; the parsers of sub-commands made through
    :meth:`add_subparsers` report the same way, so a whole command line speaks with one voice.
    """

    def __init__(self, *args: Any, error_name: str = "", error_hint: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error_name = error_name or self.prog
        self.error_hint = error_hint

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", functools.partial(
            type(self), error_name=self.error_name, error_hint=self.error_hint))
        return super().add_subparsers(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.error_name}: error: {message}{self.error_hint}\n")


def check_writable(path: Optional[str], option: str = "") -> Optional[str]:
    """A one-line reason why ``path`` (given as ``option``, e.g. ``--json``) cannot be written, or None."""
    if path is None:
        return None
    target, named = Path(path), f"{option} {path}" if option else path
    if target.is_dir():
        return f"cannot write {named}: it is a folder"
    if not target.parent.is_dir():
        return f"cannot write {named}: folder {target.parent} does not exist"
    try:
        with open(target, "a"):
            pass
    except OSError as exc:
        return f"cannot write {named}: {exc.strerror}"
    return None
