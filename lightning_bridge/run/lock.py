"""One writer per run folder. A fit (new or resumed) holds ``<run>/.lock`` (its pid, host and start time) from
before anything is written there until it ends, so that a second process resuming the same folder fails at once
naming the holder, instead of both exiting 0 and leaving a folder mixed from the two (``config.yaml`` from one,
``last.ckpt`` from the other). A lock left by a process that no longer runs (killed, crashed) is taken over,
with a warning saying so."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunFolderBusyError(RuntimeError):
    """Another live process is writing the run folder; the message names it and the lock file."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _started(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot, field 22 of /proc/<pid>/stat), so that a
    pid reused by another process after a crash or a restart is not taken for the lock's holder; None where
    the system does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name, in parentheses, may hold spaces
    return fields[19] if len(fields) > 19 else None


class RunFolderLock:
    """The lock of ``folder``: :meth:`acquire` it before writing, :meth:`release` it when done."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def _holder(self) -> dict[str, Any] | None:
        """The lock's record; None while its writer has not finished writing it, or for a foreign file."""
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # a process on another machine cannot be asked whether it still runs
        if holder["pid"] == os.getpid() or not _alive(holder["pid"]):
            return True
        started = _started(holder["pid"])
        return holder.get("started") is not None and started is not None and started != holder["started"]

    def acquire(self) -> None:
        """Takes the lock; raises :class:`RunFolderBusyError` when a live process holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None or not self._is_stale(holder):
                    raise RunFolderBusyError(self._busy_message(holder)) from None
                self._take_over(holder)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": _started(os.getpid()),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
            self.held = True
            return
        raise RunFolderBusyError(f"{self.folder}: other processes keep taking its lock {self.path}; is another run "
                                 "starting in this folder?")

    def _take_over(self, holder: dict[str, Any]) -> None:
        """Moves the stale lock aside (only one of several processes taking it over can) and deletes it."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another process took it over first; the next attempt sees its lock
        aside.unlink(missing_ok=True)
        log.warning("%s: took over the lock of process %d (since %s), which no longer runs: it was killed or "
                    "crashed (or its pid now belongs to another process); this run writes the folder now", self.path,
                    holder["pid"], holder.get("since", "?"))

    def _busy_message(self, holder: dict[str, Any] | None) -> str:
        if holder is None:
            return (f"{self.folder}: another process is taking its lock {self.path} right now; one run at a time "
                    "writes a run folder")
        where = "" if holder.get("host") == socket.gethostname() else \
            f" on {holder.get('host')} (if that process is gone, delete {self.path})"
        return (f"{self.folder}: process {holder['pid']}{where} is writing this run folder (since "
                f"{holder.get('since', '?')}; lock {self.path}); one run at a time writes a run folder. Wait for it "
                "to end, or resume a copy of the folder")

    def release(self) -> None:
        """Deletes the lock if this process holds it."""
        if self.held:
            self.held = False
            holder = self._holder()
            if holder is not None and holder["pid"] == os.getpid():
                self.path.unlink(missing_ok=True)
