"""An exclusive lock on a workdir, so two runs never write the same checkpoints.

`fcntl.flock` on `workdir/.lock`: the kernel releases it when the holding process dies, even by SIGKILL, so a
crashed run never leaves a stale lock behind. The file records who holds it, for the error message.
"""

import fcntl
import json
import os
import socket
import sys
import time


class WorkdirLockedError(RuntimeError):
    """Another live process holds the workdir."""


class WorkdirLock:
    def __init__(self, workdir: str | os.PathLike):
        self.path = os.path.join(os.fspath(workdir), ".lock")
        self._file = None

    def acquire(self) -> "WorkdirLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown process"
            f.close()
            raise WorkdirLockedError(
                f"workdir {os.path.dirname(self.path)} is in use by another run ({holder}); wait for it to finish, "
                "stop it, or choose another --workdir."
            ) from None
        f.seek(0)
        f.truncate()
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:300],
        }
        f.write(json.dumps(info))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
