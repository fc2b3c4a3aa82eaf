"""What a run's workdir holds, and who writes it.

    WORKDIR/config.json       the run config; a workdir holding another run's identity (task, data, model, ...) is
                              refused, so two different runs never mix checkpoints
    WORKDIR/metrics.jsonl     one JSON record per logging step (training loss, gradient norm, validation metrics)
    WORKDIR/events.out.tfevents.*  the same, and images, for TensorBoard (`fno_jax.storage.metric_writer`)
    WORKDIR/checkpoints/      orbax checkpoints (`fno_jax.checkpoint`), each with a `RunMeta`
    WORKDIR/summary.json      test metrics, written at the end
    WORKDIR/.lock             held while a run is writing (`fcntl.flock`: released by the kernel when the process
                              dies, even by SIGKILL, so a crashed run never leaves a stale lock). On a filesystem
                              without flock (e.g. Lustre mounted without `flock`) the run starts with a warning that
                              the lock is not enforced

A workdir may be a local path or `gs://bucket/path` (every file goes through `fno_jax.storage.paths`). On GCS:
  - the lock is a lease object (`fno_jax.storage.lease`): created only if absent, renewed every 20 s by process 0,
    taken over once its holder has not renewed it for 60 s (at once when the holder was a process of this machine
    that is gone). A run that finds its lease taken over stops before its next write (`LeaseLostError`);
  - metrics.jsonl cannot be appended to, only rewritten: records are kept in memory and written (one read and one
    conditional rewrite) before every checkpoint, at most every 30 s otherwise, and at the end. A killed run loses
    the records since the last write, which a resumed run drops anyway (they are past its checkpoint).

Across processes, process 0 alone writes, truncates or removes these files and holds the lock (checkpoints are
saved collectively by orbax); the other processes wait at a barrier (`fno_jax.runtime.distributed.barrier`) after each
such write, so none of them reads a file before process 0 has finished with it, and every process learns whether
process 0 got the lock. A job of several processes first checks that they all see the same workdir: process 0 writes
a random token into WORKDIR/.shared_check, and every process reads it back after a barrier; a directory that is
local to each host is refused (`WorkdirNotSharedError`) before anything else is written there.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from fno_jax.config import ConfigError, with_defaults
from fno_jax.model.normalization import NormStats
from fno_jax.runtime.cli_errors import UserError
from fno_jax.runtime.distributed import all_processes, barrier, each_process, from_main_process, is_main_process
from fno_jax.storage import paths
from fno_jax.storage.integrity import verify
from fno_jax.storage.json_io import write_json_atomic, write_text_atomic
from fno_jax.storage.lease import Lease, LeaseHeldError, LeaseLostError
from fno_jax.storage.version import package_version

# Config sections that define what a workdir's checkpoints are; changing them on a resume is an error.
IDENTITY_KEYS = ("seed", "task", "task_ranges", "task_options", "data", "model", "init_from", "init_step")
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
SHARED_CHECK_FILE = ".shared_check"
# The workdir lease on GCS: renewed every LEASE_TTL_S / 3 by process 0, taken over when LEASE_TTL_S old.
LEASE_TTL_S = 60.0
# On GCS, records are written at the latest this long after the first unwritten one (and before every checkpoint).
METRICS_FLUSH_S = 30.0
# flock errors that mean "this filesystem has no flock", not "someone holds the lock" (that is BlockingIOError).
_NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


class WorkdirLockedError(UserError, RuntimeError):
    """Another live process holds the workdir."""


class WorkdirNotSharedError(UserError, RuntimeError):
    """The processes of one job do not see the same workdir (a local directory on each host)."""


@dataclasses.dataclass(frozen=True)
class RunMeta:
    """What a checkpoint says about the model it holds; saved (as JSON) with every checkpoint.

    Properties:
      model: the architecture keys (`fno_jax.config.MODEL_SIZE_KEYS`) and their values.
      layout: the input-channel layout (`fno_jax.model.channels.LAYOUTS`).
      norm_stats: the normalization statistics the model's inputs are scaled with.
      task_spec: the solvers task the run trained on (`task.spec()`).
      config: the complete run config.
      provenance: package and jax versions, seed, pretrained source, creation time.
    """

    model: dict[str, int]
    layout: str
    norm_stats: NormStats
    task_spec: dict[str, Any]
    config: dict[str, Any]
    provenance: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["norm_stats"] = self.norm_stats.to_dict()
        return json.loads(json.dumps(out))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunMeta:
        """Inverse of `to_json` (a checksum, when present, must match: `fno_jax.storage.integrity`); ValueError
        otherwise."""
        if not isinstance(data, dict):
            raise ValueError(f"checkpoint metadata must be a JSON object, got {type(data).__name__}.")
        verify(data, "checkpoint metadata")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data]
        if missing:
            raise ValueError(f"checkpoint metadata lacks {missing}; it was not written by this version of fno-jax.")
        fields = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        wrong = [k for k in ("model", "task_spec", "config", "provenance") if not isinstance(fields[k], dict)]
        if wrong or not isinstance(fields["layout"], str) or not isinstance(fields["norm_stats"], dict):
            raise ValueError(f"checkpoint metadata has fields of the wrong type ({wrong or ['layout/norm_stats']}).")
        fields["norm_stats"] = NormStats.from_dict(data["norm_stats"])
        return cls(**fields)


def provenance(config: ml_collections.ConfigDict, init_step: int | None) -> dict[str, Any]:
    return {
        "package_version": package_version(),
        "seed": int(config.seed),
        "jax_version": jax.__version__,
        "init_from": config.init_from,
        "init_step": init_step,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class MetricsLog:
    """metrics.jsonl: appended by process 0; on resume, records past the restored step are dropped.

    `keep_until` and `clear` are called by every process together: process 0 changes the file, the others wait.
    Locally each record is appended at once. On GCS, where an append rewrites the whole object, records wait in
    memory until `flush()` (the run calls it before each checkpoint and at the end) or until METRICS_FLUSH_S have
    passed; `before_write` (the workdir lease's check) runs before each such write.
    """

    def __init__(self, path: str, before_write: Callable[[], None] | None = None):
        self.path = path
        self.remote = paths.is_remote(path)
        self.before_write = before_write or (lambda: None)
        self._pending: list[str] = []
        self._pending_since = 0.0

    def append(self, record: dict[str, Any]) -> None:
        if not is_main_process():
            return
        if not self.remote:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            return
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(json.dumps(record))
        if time.monotonic() - self._pending_since >= METRICS_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Write the records kept in memory (GCS; locally every record is written at once)."""
        if self._pending and is_main_process():
            self.before_write()
            paths.append_lines(self.path, self._pending)
            self._pending = []

    def keep_until(self, step: int) -> None:
        """Drop records of steps after `step` (written by a run that died after its last checkpoint)."""
        if is_main_process() and paths.exists(self.path):
            lines = [line + "\n" for line in paths.read_text(self.path).splitlines() if line.strip()]
            kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
            if len(kept) != len(lines):
                self.before_write()
                write_text_atomic(self.path, "".join(kept))
        barrier("metrics_keep_until")

    def clear(self) -> None:
        """Remove the file (a run that starts from step 0)."""
        self._pending = []
        if is_main_process() and paths.exists(self.path):
            self.before_write()
            paths.remove(self.path)
        barrier("metrics_clear")


class Workdir:
    """A run's directory, locked for the run's lifetime (`with Workdir(path, config) as wd: ...`); local or gs://."""

    def __init__(self, path: str | os.PathLike, config: ml_collections.ConfigDict):
        self.path = paths.abspath(path)
        self.config = config
        self.metrics = MetricsLog(paths.join(self.path, METRICS_FILE), before_write=self.check_lock)
        self._lock_file = None
        self._locked = False
        self._lease = None

    def __enter__(self) -> Workdir:
        paths.makedirs(self.path)
        lock_error = None
        if is_main_process():
            try:
                self._lock()
            except Exception as err:  # noqa: BLE001 - re-raised below, once the other processes know
                lock_error = err
        # Every process learns whether process 0 got the lock, so none goes on alone into a busy workdir.
        if not all_processes(lock_error is None):
            raise lock_error or WorkdirLockedError(
                f"workdir {self.path} is in use by another run (process 0 could not lock it; see its error)."
            )
        try:
            self._check_shared()
            self._write_config()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is None:
                self.metrics.flush()
            elif not isinstance(exc, LeaseLostError):  # keep what the run logged, without hiding its error
                try:
                    self.metrics.flush()
                except Exception as err:  # noqa: BLE001
                    logging.warning("could not write the last metrics records to %s: %s", self.metrics.path, err)
        finally:
            self._unlock()

    def check_lock(self) -> None:
        """LeaseLostError when another run has taken this workdir's lease over (GCS; a flock cannot be lost)."""
        if self._lease is not None:
            self._lease.check()

    def _lock(self) -> None:
        lock_path = paths.join(self.path, LOCK_FILE)
        if paths.is_remote(lock_path):
            self._lock_remote(lock_path)
            return
        f = open(lock_path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._locked = True
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown process"
            f.close()
            raise WorkdirLockedError(
                f"workdir {self.path} is in use by another run ({holder}); wait for it to finish, stop it, or choose "
                "another --workdir."
            ) from None
        except OSError as err:
            if err.errno not in _NO_FLOCK:
                f.close()
                raise
            # A filesystem without flock (Lustre mounted without `flock`, some NFS setups): refusing to start would
            # make the workdir unusable, so run unlocked and say so.
            logging.warning(
                "cannot lock %s: the filesystem does not support flock (%s). The workdir lock is NOT enforced: make "
                "sure no other run uses this workdir (on Lustre, mount with -o flock to enforce it).",
                lock_path,
                os.strerror(err.errno),
            )
            self._locked = False
        f.seek(0)
        f.truncate()
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        f.write(json.dumps({**holder, "command": " ".join(sys.argv)[:300]}))
        f.flush()
        self._lock_file = f

    def _lock_remote(self, lock_path: str) -> None:
        """The lease `lock_path` (GCS), held with a heartbeat until `_unlock`."""
        lease = Lease(lock_path, ttl_s=LEASE_TTL_S, info={"since": time.strftime("%Y-%m-%d %H:%M:%S")})
        try:
            lease.acquire()
        except LeaseHeldError:
            holder = lease.holder() or {}
            who = json.dumps({k: holder[k] for k in ("pid", "host", "renewed", "command") if k in holder})
            raise WorkdirLockedError(
                f"workdir {self.path} is in use by another run ({who}); wait for it to finish, stop it, or choose "
                f"another --workdir (a run killed on another host holds it until {LEASE_TTL_S:.0f} s after its "
                "last renewal)."
            ) from None
        lease.start_heartbeat()
        self._lease = lease

    def _unlock(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._lock_file is not None:
            if self._locked:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _check_shared(self) -> None:
        """Refuse a workdir that the processes of a multi-process job do not share (WorkdirNotSharedError): process
        0 writes a fresh token into it, and every process must read that token back."""
        if jax.process_count() == 1:
            return
        token_path = paths.join(self.path, SHARED_CHECK_FILE)
        token = from_main_process(lambda: np.frombuffer(uuid.uuid4().bytes, np.float64), 2).tobytes().hex()
        if is_main_process():
            self.check_lock()
            paths.write_text(token_path, token)
        barrier("workdir_shared_check")
        try:
            seen = paths.read_text(token_path).strip()
        except (FileNotFoundError, OSError):
            seen = None
        outcomes = each_process(seen == token)
        if not all(outcomes):
            others = [i for i, ok in enumerate(outcomes) if not ok]
            raise WorkdirNotSharedError(
                f"workdir {self.path} is not shared by the processes of this job: process(es) {others} do not see "
                f"the file process 0 wrote there ({SHARED_CHECK_FILE}); use a directory every host sees (a shared "
                "filesystem or gs://)."
            )

    def _write_config(self) -> None:
        """config.json; a workdir that already holds another run's identity is refused."""
        path = paths.join(self.path, CONFIG_FILE)
        new = json.loads(self.config.to_json())
        if paths.exists(path):
            old = with_defaults(json.loads(paths.read_text(path)))
            changed = [k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
            if changed:
                k = changed[0]
                raise ConfigError(
                    f"workdir {self.path} holds a run with a different config.{k} ({old.get(k)!r} there, "
                    f"{new.get(k)!r} now); use a new --workdir, or the same config to resume."
                )
        if is_main_process():
            self.check_lock()
            write_json_atomic(path, new)
        barrier("workdir_config")

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json (process 0); every process returns once it is on disk, so any of them may read it then."""
        self.metrics.flush()
        if is_main_process():
            self.check_lock()
            write_json_atomic(paths.join(self.path, SUMMARY_FILE), summary)
        barrier("workdir_summary")
