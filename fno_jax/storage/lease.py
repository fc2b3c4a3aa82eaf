"""The workdir lock, and the sweep's lock, for a `gs://` directory: a lease object.

Local directories keep `fcntl.flock` (`fno_jax.storage.workdir`, `experiments.sweep`): the kernel releases it when
its holder dies, even by SIGKILL. GCS has no flock.

What it has is a precondition on every write: `ifGenerationMatch=0` creates an object only if
none exists (HTTP 412 otherwise), and `ifGenerationMatch=G` replaces it only if it is still generation G. A lease
is built from those two:

    acquire   create WORKDIR/.lock with ifGenerationMatch=0. If one exists, it is still held unless stale; a stale
              one is replaced with ifGenerationMatch=<the generation read>, so of two processes taking over the
              same stale lease exactly one succeeds.
    renew     a heartbeat thread rewrites the object every ttl/3 with ifGenerationMatch=<our last generation>; a
              412 means somebody took the lease over (we were stale: paused, partitioned) and the lease is `lost`.
              The holder calls `check()` before it writes (a checkpoint, metrics), and stops on LeaseLostError.
    release   delete with ifGenerationMatch=<our generation>, so a lease taken over since is left alone.
    stale     its last renewal, the object's server-side `updated` time, is more than its ttl ago by this host's
              clock (ttl >> clock skew: 60 s by default, heartbeat every 20 s); or it names this very machine and
              PID namespace (same boot id) and a PID that no longer runs: a run killed on this host is resumed at
              once instead of after the ttl.

What a lease cannot do that flock does: a holder killed by SIGKILL on another host keeps its lease until the ttl
runs out (a resumed run on another host waits up to ttl_s, `acquire(wait_s=...)`); and a holder paused for longer
than the ttl (SIGSTOP, a VM migration) can find its lease taken, which it learns at its next `check()`, not before:
between its last check and its write the other run may already write. Keep ttl_s well above the longest pause of a
healthy run. Tests need an emulator that honours ifGenerationMatch (fake-gcs-server; gcp-storage-emulator ignores
preconditions, tests/gcs_emulator.py); nothing here has run against real GCS, which documents the same semantics.

    lease = Lease("gs://bucket/run/.lock", ttl_s=60, info={"command": ...})
    lease.acquire(wait_s=0)      # LeaseHeldError naming the holder when a live run has it
    lease.start_heartbeat()
    ...; lease.check(); write ...  # LeaseLostError once another run took it over
    lease.release()
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

from fno_jax.runtime.cli_errors import UserError
from fno_jax.storage import paths

__all__ = ["Lease", "LeaseHeldError", "LeaseLostError"]


class LeaseHeldError(UserError, RuntimeError):
    """Another live holder has the lock."""


class LeaseLostError(UserError, RuntimeError):
    """The lease was taken over by another process (ours had gone stale)."""


def _linux_identity() -> dict[str, str]:
    """This kernel instance and PID namespace: two hosts (or containers) that share a hostname differ here."""
    out = {}
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as f:
            out["boot_id"] = f.read().strip()
        out["pid_ns"] = os.readlink("/proc/self/ns/pid")
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class Lease:
    """A lease on the `gs://` object `path` (e.g. gs://bucket/run/.lock); see the module docstring."""

    def __init__(self, path: str, *, ttl_s: float = 60.0, info: dict[str, Any] | None = None):
        if not paths.is_remote(path):
            raise ValueError(f"a Lease lives on GCS; {path} is local (lock it with fcntl.flock)")
        self.path = path
        self.ttl_s = float(ttl_s)
        self.info = dict(info or {})
        self.token = uuid.uuid4().hex
        self.generation: int | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- what the object says ---------------------------------------------------------------------------------
    def _body(self) -> bytes:
        holder = {
            "token": self.token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **_linux_identity(),
            "ttl_s": self.ttl_s,
            "renewed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(sys.argv)[:300],
            **self.info,
        }
        return json.dumps(holder).encode()

    def _read(self) -> tuple[dict[str, Any] | None, int, float]:
        """(holder, generation, server-side time of the last write in s since the epoch); (None, 0, 0) if absent."""
        from google.api_core import exceptions

        blob = paths._blob(self.path)
        try:
            blob.reload()
            generation, updated = int(blob.generation), blob.updated  # before the download resets them
            data = blob.download_as_bytes(if_generation_match=generation)
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            return None, 0, 0.0  # absent, or replaced while we read: the caller tries again
        try:
            holder = json.loads(data)
        except ValueError:
            holder = {}  # a damaged lease: treated as anybody's, stale after its (default) ttl
        return holder if isinstance(holder, dict) else {}, generation, updated.timestamp() if updated else 0.0

    @staticmethod
    def _stale(holder: dict[str, Any], updated: float, default_ttl: float) -> bool:
        ttl = float(holder.get("ttl_s", default_ttl))
        if time.time() - updated > ttl:
            return True
        identity = _linux_identity()
        same_machine = identity and all(holder.get(k) == v for k, v in identity.items())
        return bool(same_machine and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]))

    def holder(self) -> dict[str, Any] | None:
        """What the current lease object says (who holds it, since when), or None."""
        return self._read()[0]

    # ---- acquire / renew / release ----------------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take the lease if it is free or stale; False if a live holder has it."""
        for _ in range(5):
            try:
                self.generation = paths.write_if_generation(self.path, self._body(), 0)
                self.lost = False
                return True
            except paths.ConcurrentUpdateError:
                pass
            holder, generation, updated = self._read()
            if holder is None:
                continue  # released (or replaced) between our create and our read: try again
            if holder.get("token") == self.token:  # our own create, retried by the client after a lost answer
                self.generation, self.lost = generation, False
                return True
            if not self._stale(holder, updated, self.ttl_s):
                return False
            try:
                self.generation = paths.write_if_generation(self.path, self._body(), generation)
                self.lost = False
                return True
            except paths.ConcurrentUpdateError:
                return False  # another process took the stale lease over first
        return False

    def acquire(self, *, wait_s: float = 0.0, poll_s: float = 1.0) -> None:
        """Take the lease, waiting up to `wait_s` for a live holder to release it or go stale; LeaseHeldError
        naming the holder otherwise."""
        deadline = time.monotonic() + wait_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                holder = self.holder() or {}
                who = ", ".join(f"{k} {holder[k]}" for k in ("host", "pid", "renewed", "command") if k in holder)
                raise LeaseHeldError(
                    f"{self.path} is held by another run ({who or 'unknown holder'}); it is released when that run "
                    f"ends, or taken over {holder.get('ttl_s', self.ttl_s):.0f} s after its last renewal."
                )
            time.sleep(poll_s)

    def renew(self) -> None:
        """Rewrite the lease, if it is still ours (LeaseLostError if it is not)."""
        if self.generation is None:
            raise LeaseLostError(f"{self.path} was never acquired")
        try:
            self.generation = paths.write_if_generation(self.path, self._body(), self.generation)
        except paths.ConcurrentUpdateError as err:
            self.lost = True
            raise LeaseLostError(f"the lease {self.path} was taken over by another run") from err

    def check(self) -> None:
        """LeaseLostError if the heartbeat found the lease taken over; call before writing into the directory."""
        if self.lost:
            raise LeaseLostError(
                f"the lease {self.path} was taken over by another run (this one went {self.ttl_s:.0f} s without "
                "renewing it); stop writing here."
            )

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.ttl_s / 3):
                try:
                    self.renew()
                except LeaseLostError:
                    return
                except Exception:  # noqa: BLE001 - a network error: try again at the next beat, before the ttl
                    continue

        self._stop.clear()
        self._thread = threading.Thread(target=beat, name=f"lease {self.path}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and delete the lease, unless another run has taken it over."""
        from google.api_core import exceptions

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.generation is not None and not self.lost:
            with contextlib.suppress(exceptions.PreconditionFailed, exceptions.NotFound):
                paths._blob(self.path).delete(if_generation_match=self.generation)
        self.generation = None

    def __enter__(self) -> Lease:
        self.acquire()
        self.start_heartbeat()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
