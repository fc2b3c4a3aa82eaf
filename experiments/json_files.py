"""JSON files a sweep and its report write: whole or not at all.

A sweep is stopped and restarted at any moment, and several shards share one folder, so every file is written to
a temporary name beside its target and renamed over it (`os.replace` is atomic on POSIX): a reader sees the old
file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

__all__ = ["to_json", "write_json", "write_jsonl"]


def to_json(value: Any) -> Any:
    """`value` as plain JSON types (tuples become lists), as a reader of the file will see it."""
    return json.loads(json.dumps(value))


def _write_text(path: str | os.PathLike, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, value: Any, *, sort_keys: bool = True) -> None:
    """Write `value` as indented JSON to `path`, atomically."""
    _write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Write one JSON object per line to `path`, atomically."""
    _write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
