"""A checksum inside a JSON object, so that a changed byte in a stored file is an error, never a different value.

A dataset's metadata.json and a checkpoint's metadata hold what data and model mean (sizes, normalization
statistics, the task): a damaged byte that still parses (a digit of a median, a count) would silently change
results. `seal` adds `"checksum": "sha256:<hex>"` over the object's canonical JSON (sorted keys, no spaces), as a
reader parses it back; `verify` recomputes it. Files written before checksums existed have none and are accepted
as they are (`verify` returns False), so old datasets and checkpoints keep loading.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from fno_jax.runtime.cli_errors import UserError

__all__ = ["CHECKSUM_KEY", "ChecksumError", "seal", "verify"]

CHECKSUM_KEY = "checksum"


class ChecksumError(UserError, ValueError):
    """A JSON object's content does not match its checksum: it was changed or damaged after it was written."""


def _digest(obj: Mapping[str, Any]) -> str:
    content = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def seal(obj: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` (JSON types only: parse it back first if unsure) with its checksum added."""
    return {**obj, CHECKSUM_KEY: _digest(obj)}


def verify(obj: Mapping[str, Any], what: str) -> bool:
    """True when `obj` carries a matching checksum, False when it carries none; raises `ChecksumError` naming
    `what` (e.g. the file) when it does not match."""
    if CHECKSUM_KEY not in obj:
        return False
    if obj[CHECKSUM_KEY] != _digest(obj):
        raise ChecksumError(f"{what} does not match its checksum: it was changed or damaged after it was written.")
    return True
