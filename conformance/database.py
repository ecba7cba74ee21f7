"""The shared example database: where a campaign's failures are kept for every other run to replay.

``--lstm-database URL`` (or ``$LSTM_CONFORMANCE_DATABASE``) names it: a folder (hypothesis'
``DirectoryBasedExampleDatabase``) or ``redis://host:port/db`` (hypothesis' ``RedisExampleDatabase``,
from the ``redis`` extra).  The suite's tests use it beside the session's own database, which keeps
a developer's failures (``MultiplexedDatabase``); with ``--lstm-database-read-only`` they read it and
write nothing to it (``ReadOnlyDatabase``).

A shared database lives on another machine or a mount and can go away at any time.  :class:`Shared`
wraps it so that hypothesis never sees its errors: it is checked at start, and the first error it
raises turns it off for the rest of the run, each time with a one-line warning (given to the
``warn`` callable); the run goes on with the local database (where the session has one).
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.parse import urlsplit

from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase, MultiplexedDatabase, ReadOnlyDatabase

from .options import OptionError

__all__ = ["ENV_VAR", "KEY_PREFIX", "Location", "Shared", "combined", "given", "parse"]

ENV_VAR = "LSTM_CONFORMANCE_DATABASE"
#: Where the suite's examples live in a Redis database: apart from other projects' hypothesis examples.
KEY_PREFIX = b"lstm-conformance-example:"
#: Seconds to connect to Redis and to wait for an answer, and retries after a failed command:
#: an unreachable server costs a run (1 + RETRIES) * TIMEOUT_S once, then it is turned off.
TIMEOUT_S = 5.0
RETRIES = 1
_REDIS_SCHEMES = ("redis", "rediss")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_WANTED = "a folder or redis://host:port/db"


@dataclass(frozen=True)
class Location:
    """A shared database as the user named it: a folder, or a Redis URL."""

    url: str
    kind: str  # "folder" or "redis"

    def __str__(self) -> str:
        """The location as shown in the header and warnings: a Redis password is left out."""
        if self.kind != "redis":
            return self.url
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        user = f"{parts.username}:" if parts.username else ":"
        return self.url.replace(f"{parts.netloc.rpartition('@')[0]}@", f"{user}***@", 1)

    def open(self, read_only: bool) -> tuple[ExampleDatabase, Callable[[], object]]:
        """The hypothesis database, and a check that raises where it cannot be used now."""
        if self.kind == "folder":
            path = Path(self.url)
            folder: ExampleDatabase = DirectoryBasedExampleDatabase(path)
            return (ReadOnlyDatabase(folder) if read_only else folder), lambda: _check_folder(path, read_only)
        return _open_redis(self.url, read_only)


def parse(option: str, value: Any) -> Location:
    """``value`` as a shared database's location, or :class:`OptionError` with a one-line message.

    Anything without a ``scheme://`` is a folder (made when first written); a URL must be ``redis://``
    or ``rediss://`` (TLS) with a host, a port and a database number that are numbers if given, and
    needs the redis package."""
    text = str(value).strip() if value is not None else ""
    if not text:
        raise OptionError(f"{option} must be {_WANTED}, got {value!r}")
    if not _URL.match(text):
        if Path(text).exists() and not Path(text).is_dir():
            raise OptionError(f"{option} must be {_WANTED}; {text!r} is a file")
        return Location(text, "folder")
    scheme = text.partition("://")[0].lower()
    if scheme not in _REDIS_SCHEMES:
        raise OptionError(f"{option} must be {_WANTED}: unknown scheme {scheme + '://'!r} in {_shown(text)!r}")
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises ValueError where the port is not a number
    except ValueError:
        raise OptionError(f"{option}: the port in {_shown(text)!r} is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise OptionError(f"{option}: {_shown(text)!r} names no host (redis://host:port/db)")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise OptionError(f"{option}: the database in {_shown(text)!r} must be a number (redis://host:port/db)")
    if parts.query or parts.fragment:
        raise OptionError(f"{option}: {_shown(text)!r} has a query or fragment; give redis://host:port/db")
    if importlib.util.find_spec("redis") is None:
        raise OptionError(f"{option} {_shown(text)} needs the redis package: pip install 'lstm-conformance[redis]'")
    return Location(text, "redis")


def given(option: Optional[str], option_name: str, read_only: bool, seed: Any,
          seed_name: str) -> Optional[tuple[Location, str]]:
    """The shared database a run asks for, and where it was named: ``option`` (the value of the option
    called ``option_name``), else ``$LSTM_CONFORMANCE_DATABASE``; None for none.

    :class:`OptionError` for a bad location, for read-only without a database, and for a database with
    a fixed seed: hypothesis turns its database off in a run with a fixed seed (such a run reproduces;
    it neither replays nor saves examples), which would leave the shared database unused without a word."""
    origin = option_name
    if option is None and os.environ.get(ENV_VAR):
        option, origin = os.environ[ENV_VAR], f"${ENV_VAR}"
    if option is None:
        if read_only:
            raise OptionError(f"{option_name}-read-only needs a shared database: {option_name} URL or ${ENV_VAR}")
        return None
    location = parse(origin, option)
    if seed is not None:
        raise OptionError(f"{seed_name} turns hypothesis' example database off, so the shared database ({origin}) "
                          "would be neither read nor written: leave one of them out (a campaign's runs each draw "
                          "their own seed)")
    return location, origin


def _shown(url: str) -> str:
    return str(Location(url, "redis")) if "@" in url else url


def _check_folder(path: Path, read_only: bool) -> None:
    """Raise where ``path`` cannot be used: a run that only reads needs the folder (a share not mounted
    would replay nothing without a word); a run that writes needs its nearest existing folder writable
    (hypothesis' folder database skips a failed write silently)."""
    if read_only and not path.is_dir():
        raise FileNotFoundError(f"{path} is not there to read")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{existing} is not a folder")
    wanted = os.R_OK | os.X_OK | (0 if read_only else os.W_OK)
    if not os.access(existing, wanted):
        raise PermissionError(f"{existing} is not {'readable' if read_only else 'writable'}")


def _open_redis(url: str, read_only: bool) -> tuple[ExampleDatabase, Callable[[], object]]:
    import redis
    from hypothesis.extra.redis import RedisExampleDatabase
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    class ReadingRedis(RedisExampleDatabase):
        """RedisExampleDatabase's fetch also renews the key's expiry (EXPIRE, a write): this one only
        reads, so that a read-only run writes nothing and works with a Redis user that may only read."""

        def fetch(self, key: bytes) -> Iterable[bytes]:
            yield from self.redis.smembers(KEY_PREFIX + key)  # type: ignore[misc]  # bytes: the client decodes nothing

    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
                                  retry=Retry(NoBackoff(), RETRIES))
    if read_only:
        return ReadOnlyDatabase(ReadingRedis(client, key_prefix=KEY_PREFIX)), client.ping
    return RedisExampleDatabase(client, key_prefix=KEY_PREFIX), client.ping


class Shared(ExampleDatabase):
    """A shared database that cannot fail the run.

    :meth:`check` tries it at start; then its first error on any operation turns it off: from then on
    it reads nothing and writes nothing.  Each time, ``warn`` gets one line naming the database, what
    failed and the error; hypothesis sees no exception, and the local database beside it goes on.
    """

    def __init__(self, location: Location, read_only: bool, warn: Callable[[str], None]) -> None:
        super().__init__()
        self.location, self.read_only, self._warn = location, read_only, warn
        self._db: Optional[ExampleDatabase] = None
        self._check: Callable[[], object] = lambda: None
        try:
            self._db, self._check = location.open(read_only)
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, the run goes on
            self._fail("cannot be opened", exc)

    def __repr__(self) -> str:
        return f"Shared({str(self.location)!r}, read_only={self.read_only})"

    @property
    def usable(self) -> bool:
        """Whether the database is still in use (no error so far)."""
        return self._db is not None

    def check(self) -> bool:
        """Try the database now (a Redis PING; a folder's permissions); whether it can be used."""
        if self._db is not None:
            try:
                self._check()
            except Exception as exc:  # noqa: BLE001 - whatever the client raises, the run goes on
                self._fail("is unusable", exc)
        return self.usable

    def _fail(self, what: str, exc: BaseException) -> None:
        self._db = None
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        self._warn(f"lstm-conformance: warning: the shared example database {self.location} {what} "
                   f"({type(exc).__name__}{': ' + reason if reason else ''}); the run goes on without it")

    def fetch(self, key: bytes) -> Iterable[bytes]:
        if self._db is None:
            return
        try:
            yield from self._db.fetch(key)
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, the run goes on
            self._fail("failed on reading examples", exc)

    def save(self, key: bytes, value: bytes) -> None:
        self._write("save", key, value)

    def delete(self, key: bytes, value: bytes) -> None:
        self._write("delete", key, value)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self._write("move", src, dest, value)

    def _write(self, operation: str, *args: bytes) -> None:
        if self._db is None:
            return
        try:
            getattr(self._db, operation)(*args)
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, the run goes on
            self._fail("failed on writing an example", exc)

    def _start_listening(self) -> None:
        """Nothing to listen to: changes other machines make are read when a test starts."""

    def _stop_listening(self) -> None:
        """See :meth:`_start_listening`."""


def combined(local: Optional[ExampleDatabase], shared: Shared) -> ExampleDatabase:
    """What the suite's tests use: the local database (the session's own) and the shared one."""
    return shared if local is None else MultiplexedDatabase(local, shared)
