"""One writer per run folder: ``RunLock`` (a lock file holding the writer's PID) and the ``run_lock`` context manager.

Without it a ``--resume`` started beside a still-running trainer appends to the same ``history.jsonl`` and
overwrites the same checkpoints (seen: 5 history lines for 3 epochs). The lock is a file ``<run>/.lock`` created
with ``O_CREAT | O_EXCL`` (atomic on local file systems), holding JSON ``{pid, host, started, command, proc_start}``.

- A second writer gets :class:`RunLockedError` naming the holder's PID, host, start time and command.
- A lock left by a process that no longer exists on this host (killed, crashed machine) is taken over, with a
  warning. ``proc_start`` (the process start time from ``/proc``) tells a live holder from a new process that
  happens to reuse its PID.
- A lock from another host cannot be checked: it is treated as held; the error says which file to delete.

``run_lock(run_dir)`` also cleans up a failed start: if it created the folder and the block raises before
``lock.mark_started()`` is called, the folder is removed, so no empty run folder is left to block the next attempt.
Only the main process of a distributed run should take the lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

__all__ = ["RunLock", "RunLockedError", "run_lock", "LOCK_NAME"]

LOCK_NAME = ".lock"
PathLike = Union[str, os.PathLike]


class RunLockedError(RuntimeError):
    """Another live process holds the run folder's lock."""


def _proc_start(pid: int) -> Optional[int]:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc/<pid>/stat`` field 22), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError as e:  # pragma: no cover - platform specific
        return e.errno != errno.ESRCH
    return True


class RunLock:
    """Exclusive lock on a run folder.

    Args:
        run_dir: the run folder (created by :meth:`acquire` if absent; :attr:`created` says whether it was).
        command: recorded in the lock for the error another writer sees (default: this process's command line).

    ``acquire()`` / ``release()``, or use it as a context manager (see also :func:`run_lock`).
    """

    def __init__(self, run_dir: PathLike, command: Optional[str] = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command if command is not None else " ".join(sys.argv)
        self.created = False
        self.held = False
        self.started = False
        self.took_over: Optional[Dict[str, Any]] = None  #: the stale holder's record, when one was taken over

    # -- holder records ----------------------------------------------------------------------------------------
    def _record(self) -> Dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": self.command,
            "proc_start": _proc_start(os.getpid()),
        }

    def holder(self) -> Optional[Dict[str, Any]]:
        """The current lock file's record (None if there is no lock; ``{"unreadable": text}`` if it is corrupt)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            rec = json.loads(text)
            if not isinstance(rec, dict) or not isinstance(rec.get("pid"), int):
                raise ValueError
            return rec
        except ValueError:
            return {"unreadable": text[:200]}

    @staticmethod
    def is_stale(rec: Dict[str, Any]) -> bool:
        """True when the holder is certainly gone: same host and its PID is dead or now belongs to another process."""
        if "unreadable" in rec:
            return False  # could be a writer between create and write: never steal on a guess
        if rec.get("host") != socket.gethostname():
            return False
        pid = int(rec["pid"])
        if not _pid_alive(pid):
            return True
        then, now = rec.get("proc_start"), _proc_start(pid)
        return then is not None and now is not None and then != now

    # -- acquire / release -------------------------------------------------------------------------------------
    def acquire(self) -> RunLock:
        if self.held:
            return self
        if not self.run_dir.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.created = True
        for _ in range(5):  # a stale lock removed by a concurrent taker: try again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                rec = self.holder()
                if rec is None:
                    continue  # released between our open and read
                if rec.get("pid") == os.getpid() and rec.get("host") == socket.gethostname():
                    raise RunLockedError(
                        f"{self.run_dir} is already locked by this process (pid {os.getpid()})"
                    ) from None
                if not self.is_stale(rec):
                    raise RunLockedError(self._held_message(rec)) from None
                # Move the stale file aside atomically: of several takers only one rename succeeds.
                aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
                try:
                    os.replace(self.path, aside)
                except FileNotFoundError:
                    continue
                try:
                    os.unlink(aside)
                except OSError:
                    pass
                self.took_over = rec
                warnings.warn(
                    f"{self.run_dir}: taking over the lock of process {rec.get('pid')} ({rec.get('command', '?')!r}, "
                    f"started {rec.get('started', '?')}), which no longer runs",
                    stacklevel=2,
                )
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._record(), f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise RunLockedError(f"{self.run_dir}: could not take the lock {self.path} (it keeps changing hands)")

    def _held_message(self, rec: Dict[str, Any]) -> str:
        if "unreadable" in rec:
            who = f"an unreadable lock file ({rec['unreadable']!r})"
        else:
            who = (
                f"process {rec['pid']} on {rec.get('host', '?')} (started {rec.get('started', '?')}: "
                f"{rec.get('command', '?')!r})"
            )
        other_host = "unreadable" not in rec and rec.get("host") != socket.gethostname()
        return (
            f"{self.run_dir} is being written by {who}. Two writers in one run folder corrupt its history and "
            "checkpoints: wait for it to finish, stop it, or use another --output. "
            + (
                f"If you are sure it no longer runs, delete {self.path}."
                if other_host or "unreadable" in rec
                else f"(The lock is {self.path}; it is taken over automatically once that process has exited.)"
            )
        )

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if not self.held:
            return
        rec = self.holder()
        if rec is not None and rec.get("pid") == os.getpid():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- failed starts -----------------------------------------------------------------------------------------
    def mark_started(self) -> None:
        """Call once the run has begun in earnest (e.g. after the config is written and the first epoch starts):
        from then on a failure keeps the folder (its logs explain the failure)."""
        self.started = True

    def remove_if_failed_start(self) -> bool:
        """Remove the run folder if this lock created it and :meth:`mark_started` was never called."""
        if self.created and not self.started and self.run_dir.is_dir():
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return True
        return False


@contextlib.contextmanager
def run_lock(run_dir: PathLike, command: Optional[str] = None) -> Iterator[RunLock]:
    """Hold the lock of ``run_dir`` for the block; on an exception before ``lock.mark_started()``, remove the folder
    if the lock created it. Typical use in the trainer::

        with run_lock(run_dir) as lock:      # RunLockedError if another process writes there
            ...validate data, build the model (may fail: no folder is left behind)...
            write config.yaml; lock.mark_started()
            ...train...
    """
    lock = RunLock(run_dir, command).acquire()
    try:
        yield lock
    except BaseException:
        lock.release()
        lock.remove_if_failed_start()
        raise
    else:
        lock.release()
