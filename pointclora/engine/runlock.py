"""One writer per run folder: ``RunLock(run_dir).acquire()`` ... ``release()``.

The lock is a file ``<run>/.lock`` created with O_EXCL holding the owner's PID and host. A second writer gets an
error naming that PID; a lock left by a process that no longer exists (killed) is taken over.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["RunLock", "RunLockedError"]


class RunLockedError(RuntimeError):
    """Another live process is writing this run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    def __init__(self, run_dir: os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid_text, _, host = self.path.read_text().partition(" ")
                    pid = int(pid_text)
                except (OSError, ValueError):
                    pid, host = -1, ""
                if pid > 0 and host.strip() == socket.gethostname() and not _alive(pid):
                    self.path.unlink(missing_ok=True)  # stale: its owner died without releasing
                    continue
                raise RunLockedError(f"{self.path.parent} is being written by another process (PID {pid}, "
                                     f"{host.strip() or 'unknown host'}); wait for it or use another --output") from None  # fmt: skip
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return self
        raise RunLockedError(f"could not lock {self.path.parent}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
