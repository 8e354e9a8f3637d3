"""One writer at a time per episode store: an exclusive flock on the store's folder, held while the writer lives.

The kernel drops a flock when the process holding it ends, however it ends (kill -9 included), so a lock
is never left behind. What a writer leaves is its record (pid, host, start time) in the store's
attributes: a second writer is refused with it, and a writer that finds the record of one that ended
without closing the store reports it and takes over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import weakref
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class WriterRecord:
    """Who writes a store: kept in its `writer` attribute while the writer has it open."""

    pid: int
    host: str
    #: When the writer opened the store, ISO 8601 in UTC.
    started: str

    @classmethod
    def mine(cls) -> WriterRecord:
        """The record of this process, starting now."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(pid=os.getpid(), host=socket.gethostname(), started=now)

    @classmethod
    def from_attribute(cls, value: Any) -> WriterRecord | None:
        """The record in a `writer` attribute; None where there is none or it is not one."""
        try:
            return cls(pid=int(value["pid"]), host=str(value["host"]), started=str(value["started"]))
        except (TypeError, KeyError, ValueError):
            return None

    @classmethod
    def read(cls, path: Path) -> WriterRecord | None:
        """The record in the store at `path` (its zarr.json read as plain JSON); None where there is none."""
        try:
            attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        except (OSError, ValueError, AttributeError):
            return None
        return cls.from_attribute(attrs.get("writer") if isinstance(attrs, dict) else None)

    def to_attribute(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, writing since {self.started}"

    def is_running(self) -> bool:
        """Whether the writer's process still runs (unknown, so True, for another host)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class WriterLock:
    """An exclusive flock on a store's folder, released by `release` or when this object is collected."""

    def __init__(self, fd: int) -> None:
        self._release = weakref.finalize(self, os.close, fd)

    @classmethod
    def try_acquire(cls, path: Path) -> WriterLock | None:
        """The lock on folder `path`, or None if another writer (in this process or another) holds it."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        return cls(fd)

    def release(self) -> None:
        """Give the lock up (closing the folder's descriptor); a second call does nothing."""
        self._release()
