"""TensorBoard event files written to `gs://` through the path layer (`fno_jax.storage.metric_writer` uses it).

tensorboardX writes `gs://` logdirs by itself, through google-cloud-storage: it keeps the whole event file in
memory and uploads all of it at every flush (fno-jax flushes after each logged record), and once more when the
writer is garbage-collected (`GCSRecordWriter.__del__`), which blocks for google-cloud-storage's 120 s retry
deadline when the bucket is gone by then (a test's emulator, stopped at the end of the session).

`use_path_layer()` replaces that writer, for every `gs://` logdir of this process, by `RecordWriter` below: the same
in-memory file, uploaded whole (one object write: readers see the file of the last upload) at most every
`min_interval_s` and always at close, and nothing at garbage collection. A run killed in between loses the events
since the last upload; metrics.jsonl and the checkpoints are the run's record, the event files a view of it.

    from fno_jax.storage import gcs_events
    gcs_events.use_path_layer()
    SummaryWriter("gs://bucket/run", ...)     # as before
"""

from __future__ import annotations

import io
import time

from fno_jax.storage import paths

__all__ = ["RecordWriter", "use_path_layer"]


class RecordWriter:
    """A file object for one event file at `path` (gs://...): buffered in memory, uploaded whole."""

    def __init__(self, path: str, min_interval_s: float):
        self.path = path
        self.min_interval_s = float(min_interval_s)
        self._buffer = io.BytesIO()
        self._uploaded = -1  # bytes at the last upload
        self._last = float("-inf")

    def write(self, data: bytes) -> None:
        self._buffer.write(data)

    def flush(self) -> None:
        if time.monotonic() - self._last >= self.min_interval_s:
            self._upload()

    def close(self) -> None:
        self._upload()

    def _upload(self) -> None:
        if self._buffer.tell() != self._uploaded:
            paths.write_bytes(self.path, self._buffer.getvalue())
            self._uploaded = self._buffer.tell()
        self._last = time.monotonic()


class _Factory:
    def __init__(self, min_interval_s: float):
        self.min_interval_s = min_interval_s

    def open(self, path: str) -> RecordWriter:
        return RecordWriter(path, self.min_interval_s)

    def directory_check(self, path: str) -> None:
        del path  # GCS has no directories to create


def use_path_layer(min_interval_s: float = 30.0) -> None:
    """Have tensorboardX write `gs://` event files with `RecordWriter` (uploads at most every `min_interval_s`)."""
    from tensorboardX import record_writer

    record_writer.register_writer_factory("gs", _Factory(min_interval_s))
