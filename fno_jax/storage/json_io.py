"""JSON files that readers never see half-written, and values as JSON reads them back.

A file is written beside its target under a unique name, then renamed over it (`os.replace` is atomic on POSIX):
a reader sees the old file or the new one, never half of one. The temporary name carries the host and process id
and a random part, so several processes (or hosts on a shared filesystem) writing the same file never collide on
it; the last rename wins, whole. Runs and sweeps are stopped and restarted at any moment, so every JSON file of
the project (config.json, summary.json, dataset metadata, plan.json, results.jsonl, reports) is written this way.
A `gs://` path is written in one upload, which GCS makes visible whole or not at all (`fno_jax.storage.paths`).
"""

import errno
import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from fno_jax.storage import paths

__all__ = ["to_json", "write_json_atomic", "write_jsonl_atomic", "write_text_atomic"]


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace `path` by `text` atomically (`paths.write_bytes`: fsync'd before the rename; on GCS one upload).
    Locally its folder must exist: a file is never the first thing written to a folder that has gone."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not paths.is_remote(path) and not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, "no such folder to write into", directory)
    paths.write_text(path, text)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, sort_keys: bool = True) -> None:
    """Write `obj` as indented JSON to `path` atomically (numpy values become lists/numbers)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=_json_default) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Write one key-sorted JSON object per line to `path`, atomically."""
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True, default=_json_default) + "\n" for r in records))


def to_json(value: Any) -> Any:
    """`value` as plain JSON types (tuples become lists), as a reader of the file will see it."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(obj):
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
