"""One path layer for every file fno-jax writes or reads, local or on Google Cloud Storage (`gs://bucket/key`).

Workdirs (config.json, metrics.jsonl, summary.json, the lock, event files), checkpoints' side files, stored
datasets' JSON files, pretrained bundles and sweep directories go through these functions instead of
`os.path`/`open`/`shutil`; orbax and tensorstore reach the same paths by themselves (orbax through etils.epath and
tensorstore's gcs driver; datasets' zarr arrays through `tensorstore_kvstore`).

    from fno_jax.storage import paths
    root = paths.abspath(workdir)                 # a local path made absolute; "gs://..." left alone
    paths.write_json(paths.join(root, "config.json"), config)
    paths.append_lines(paths.join(root, "metrics.jsonl"), [json.dumps(record)])

A path is remote iff it starts with `gs://`. Local paths behave as the project's files always have: a whole-file
write goes to a temporary file beside the target, is fsync'd and renamed over it, so a reader sees the old file or
the new one. A `gs://` object write is one upload, which GCS makes visible whole or not at all, so it is atomic
without a temporary object. What GCS cannot do, and what is done instead:
  - append: an object cannot grow. `append_lines` rewrites it whole, conditional on the generation it read
    (`ifGenerationMatch`), retrying if another writer got in between: O(file size) bytes and two requests per call,
    so callers batch records (`fno_jax.storage.workdir.MetricsLog`).
  - rename: there is none for prefixes ("directories"). `move` copies every object server-side, then deletes the
    originals: not atomic; a crash in between leaves both copies (`fno_jax.checkpoint` first removes the marker
    that makes an orbax step count).
  - directories: a prefix exists while an object lies under it. `makedirs` does nothing on GCS, and an empty
    "directory" does not exist there: callers test for content (a file), never for an empty folder.
  - locks: no flock; `fno_jax.storage.lease`.

Backends: etils.epath (gcsfs, through fsspec) for reading, writing and listing; gcsfs for server-side copies and
deletes; google-cloud-storage for the generation-conditional writes (`read_with_generation`, `write_if_generation`),
whose public API names the preconditions. Credentials are Application Default Credentials, as for any Google client.
All of them honour STORAGE_EMULATOR_HOST (tests/gcs_emulator.py). gcsfs's listing cache is turned off at import
(unless configured otherwise): it would hide files that another process or client wrote or removed. A `gs://` path
without the `gcs` extra installed raises ImportError naming the extra.
"""

from __future__ import annotations

import contextlib
import functools
import glob as globlib
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable
from typing import Any

from fno_jax.runtime.cli_errors import UserError

__all__ = [
    "ConcurrentUpdateError",
    "GcsPathError",
    "GcsUnavailableError",
    "abspath",
    "append_lines",
    "basename",
    "copytree",
    "dirname",
    "exists",
    "glob",
    "is_remote",
    "isdir",
    "isfile",
    "join",
    "listdir",
    "makedirs",
    "move",
    "normpath",
    "read_bytes",
    "read_json",
    "read_text",
    "read_with_generation",
    "relpath",
    "remove",
    "rmtree",
    "split_gcs",
    "tensorstore_kvstore",
    "write_bytes",
    "write_if_generation",
    "write_json",
    "write_text",
]

_SCHEME = "gs://"
# Appends that lose the race this many times in a row give up (another writer appends continuously).
_APPEND_ATTEMPTS = 20


class GcsUnavailableError(UserError, ImportError):
    """A `gs://` path was used without the packages that reach GCS (the `gcs` extra)."""


class GcsPathError(UserError, ValueError):
    """A `gs://` URL that names no bucket."""


class ConcurrentUpdateError(RuntimeError):
    """A conditional write found the object changed since it was read (HTTP 412 from GCS)."""


def _configure_gcsfs() -> None:
    """gcsfs answers listings, and `exists`/`isdir` on prefixes, from a cache that its own writes update but another
    process's (or tensorstore's, or google-cloud-storage's) never do: a step another process saved, or a file it
    removed, would stay invisible or visible for the life of this process. Off, unless the user configured it."""
    with contextlib.suppress(ImportError):
        import fsspec.config

        fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)


_configure_gcsfs()


# ---- names ----------------------------------------------------------------------------------------------------


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a `gs://` URL (everything else is a local path)."""
    return os.fspath(path).startswith(_SCHEME)


def abspath(path: str | os.PathLike) -> str:
    """A local path made absolute; a `gs://` URL unchanged but for trailing slashes (`os.path.abspath` would turn it
    into ./gs:/...); GcsPathError for `gs://` without a bucket."""
    path = os.fspath(path)
    if is_remote(path):
        split_gcs(path)  # GcsPathError for a URL without a bucket
        return path.rstrip("/")
    return os.path.abspath(path)


def join(path: str | os.PathLike, *parts: str) -> str:
    path = os.fspath(path)
    return posixpath.join(path, *parts) if is_remote(path) else os.path.join(path, *parts)


def dirname(path: str | os.PathLike) -> str:
    """The parent of `path`; for `gs://bucket/x` that is `gs://bucket`, which has no parent of its own."""
    path = os.fspath(path)
    if not is_remote(path):
        return os.path.dirname(path)
    bucket, key = split_gcs(path)
    return f"{_SCHEME}{bucket}/{posixpath.dirname(key)}".rstrip("/")


def basename(path: str | os.PathLike) -> str:
    """The last component of `path` (trailing slashes ignored)."""
    path = os.fspath(path)
    return posixpath.basename(path.rstrip("/")) if is_remote(path) else os.path.basename(os.path.normpath(path))


def normpath(path: str | os.PathLike) -> str:
    """`path` with `.` and `..` components resolved (GCS keys taken literally otherwise)."""
    path = os.fspath(path)
    if not is_remote(path):
        return os.path.normpath(path)
    bucket, key = split_gcs(path)
    key = posixpath.normpath(key) if key else ""
    return f"{_SCHEME}{bucket}/{key}".rstrip("/") if key not in ("", ".") else f"{_SCHEME}{bucket}"


def relpath(path: str | os.PathLike, start: str | os.PathLike) -> str | None:
    """`path` relative to `start`; None when there is no relative path (one local and one on GCS, or two buckets)."""
    path, start = abspath(path), abspath(start)
    if is_remote(path) != is_remote(start):
        return None
    if not is_remote(path):
        return os.path.relpath(path, start)
    (bucket, key), (start_bucket, start_key) = split_gcs(path), split_gcs(start)
    return posixpath.relpath("/" + key, "/" + start_key) if bucket == start_bucket else None


def split_gcs(path: str | os.PathLike) -> tuple[str, str]:
    """("bucket", "key/inside/bucket") of a `gs://` URL; ValueError for anything else."""
    path = os.fspath(path)
    if not is_remote(path):
        raise ValueError(f"{path} is not a gs:// URL")
    bucket, _, key = path[len(_SCHEME) :].partition("/")
    if not bucket:
        raise GcsPathError(f"{path} names no bucket; write gs://BUCKET/PATH.")
    return bucket, key.strip("/")


def tensorstore_kvstore(path: str | os.PathLike) -> dict[str, Any]:
    """The tensorstore kvstore spec of a directory: the file driver locally, the gcs driver (which honours
    TENSORSTORE_GCS_HTTP_URL) for `gs://`."""
    path = os.fspath(path)
    if is_remote(path):
        bucket, key = split_gcs(path)
        return {"driver": "gcs", "bucket": bucket, "path": key + "/" if key else ""}
    return {"driver": "file", "path": os.path.abspath(path)}


# ---- clients --------------------------------------------------------------------------------------------------


def _require_gcs_packages() -> None:
    """GcsUnavailableError saying what to install when a gs:// path is used without the `gcs` extra."""
    import importlib.util

    missing = [name for name in ("gcsfs", "google.cloud.storage") if importlib.util.find_spec(name) is None]
    if missing:
        raise GcsUnavailableError(
            f"gs:// paths need the packages {', '.join(missing)}, which are not installed: pip install 'fno-jax[gcs]'."
        )


def _epath(path: str):
    from etils import epath

    _require_gcs_packages()
    return epath.Path(path)


def _gcsfs():
    import fsspec

    _require_gcs_packages()
    return fsspec.filesystem("gcs")


@functools.lru_cache(maxsize=4)
def _storage_client(emulator: str | None):
    """A google-cloud-storage client; one per emulator address, since the client reads it when made."""
    del emulator  # the cache key only
    _require_gcs_packages()
    from google.cloud import storage

    return storage.Client()


def _blob(path: str):
    bucket, key = split_gcs(path)
    return _storage_client(os.environ.get("STORAGE_EMULATOR_HOST")).bucket(bucket).blob(key)


# ---- queries --------------------------------------------------------------------------------------------------


def exists(path: str | os.PathLike) -> bool:
    """A file, a directory, or (GCS) a prefix with at least one object under it."""
    path = os.fspath(path)
    return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    return _epath(path).is_dir() if is_remote(path) else os.path.isdir(path)


def isfile(path: str | os.PathLike) -> bool:
    """A file (GCS: an object of exactly this name)."""
    path = os.fspath(path)
    return _epath(path).is_file() if is_remote(path) else os.path.isfile(path)


def listdir(path: str | os.PathLike) -> list[str]:
    """Sorted names of the entries of a directory (GCS: of the objects and prefixes one level below)."""
    path = os.fspath(path)
    if is_remote(path):
        return sorted(p.name for p in _epath(path).iterdir())
    return sorted(os.listdir(path))


def glob(pattern: str | os.PathLike) -> list[str]:
    """Sorted paths matching a pattern of `*`, `?` and `[...]` components (no `**`: on GCS it would list the
    whole bucket below the first wildcard)."""
    pattern = os.fspath(pattern)
    if "**" in pattern:
        raise ValueError(f"glob does not take '**' ({pattern}); list one level at a time")
    if not is_remote(pattern):
        return sorted(globlib.glob(pattern))
    bucket, key = split_gcs(pattern)
    return sorted(str(p) for p in _epath(f"{_SCHEME}{bucket}").glob(key))


# ---- whole files ----------------------------------------------------------------------------------------------


def read_bytes(path: str | os.PathLike) -> bytes:
    path = os.fspath(path)
    if is_remote(path):
        return _epath(path).read_bytes()
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(read_bytes(path))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` by `data` so that a reader sees the old content or the new, never part of one.

    Local: a temporary file beside it, fsync'd, then renamed over it (`os.replace`). GCS: one upload, made
    visible by GCS only when complete. Parent folders are created locally (GCS has none to create)."""
    path = os.fspath(path)
    if is_remote(path):
        _gcsfs().pipe_file(path, bytes(data))
        return
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".{os.uname().nodename}.{os.getpid()}.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = True) -> None:
    """`obj` as indented JSON, replacing `path` whole (see `write_bytes`)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


# ---- conditional writes (GCS generations) ---------------------------------------------------------------------


def read_with_generation(path: str) -> tuple[bytes | None, int]:
    """(content, generation) of a `gs://` object, read consistently; (None, 0) when it does not exist.

    Generation 0 means "absent" in GCS preconditions, so `write_if_generation(path, data, 0)` creates only."""
    from google.api_core import exceptions

    for _ in range(_APPEND_ATTEMPTS):
        blob = _blob(path)
        try:
            blob.reload()
        except exceptions.NotFound:
            return None, 0
        generation = int(blob.generation)  # before the download, which resets it from the response's headers
        try:  # the content of exactly that generation: 412 if it was replaced in between
            return blob.download_as_bytes(if_generation_match=generation), generation
        except (exceptions.PreconditionFailed, exceptions.NotFound):
            continue
    raise ConcurrentUpdateError(f"{path} changes faster than it can be read")


def write_if_generation(path: str, data: bytes, generation: int) -> int:
    """Write `data` to the `gs://` object `path` only if its generation is still `generation` (0: only if it does
    not exist); returns the new generation. ConcurrentUpdateError when another write got there first."""
    from google.api_core import exceptions

    blob = _blob(path)
    try:
        blob.upload_from_string(bytes(data), if_generation_match=int(generation))
    except exceptions.PreconditionFailed as err:
        raise ConcurrentUpdateError(f"{path} changed since generation {generation} was read") from err
    return int(blob.generation)


def append_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Append `lines` (each without its newline) to a text file, e.g. records to metrics.jsonl.

    Local: an ordinary append, fsync'd. GCS: objects cannot grow, so the object is read and rewritten whole with
    the lines added, on condition that nobody rewrote it in between (retried if somebody did): two requests and
    O(file size) bytes per call, hence batch records rather than append one per step."""
    path = os.fspath(path)
    text = "".join(line + "\n" for line in lines)
    if not text:
        return
    if not is_remote(path):
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return
    for _ in range(_APPEND_ATTEMPTS):
        old, generation = read_with_generation(path)
        try:
            write_if_generation(path, (old or b"") + text.encode("utf-8"), generation)
            return
        except ConcurrentUpdateError:
            continue
    raise ConcurrentUpdateError(f"could not append to {path}: {_APPEND_ATTEMPTS} other writes got in first")


# ---- trees ----------------------------------------------------------------------------------------------------


def makedirs(path: str | os.PathLike) -> None:
    """Create a local directory and its parents (exist_ok); nothing on GCS, where prefixes need no creating."""
    path = os.fspath(path)
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def remove(path: str | os.PathLike, *, missing_ok: bool = True) -> None:
    """Delete one file (object)."""
    path = os.fspath(path)
    try:
        if is_remote(path):
            _gcsfs().rm_file(path)
        else:
            os.remove(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def rmtree(path: str | os.PathLike, *, missing_ok: bool = True) -> None:
    """Delete a directory (GCS: every object under the prefix) and everything in it."""
    path = os.fspath(path)
    if not exists(path):
        if missing_ok:
            return
        raise FileNotFoundError(path)
    if is_remote(path):
        _gcsfs().rm(_objects_under(path), recursive=False)
    else:
        shutil.rmtree(path)


def _objects_under(path: str) -> list[str]:
    """Every object of a `gs://` file or prefix, as gs:// URLs."""
    fs = _gcsfs()
    found = fs.find(path)
    return [p if p.startswith(_SCHEME) else _SCHEME + p for p in found]


def copytree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy the directory `src` to `dst`, which must not exist; either may be local or on GCS (between two `gs://`
    paths the objects are copied server-side)."""
    src, dst = abspath(src), abspath(dst)
    if exists(dst):
        raise FileExistsError(f"cannot copy {src} to {dst}: it exists")
    if not is_remote(src) and not is_remote(dst):
        shutil.copytree(src, dst)
        return
    if is_remote(src):
        sources = _objects_under(src)
        if not sources:
            raise FileNotFoundError(src)
        targets = [dst + s[len(src) :] for s in sources]
        if is_remote(dst):
            _gcsfs().copy(sources, targets)
        else:
            for source, target in zip(sources, targets, strict=True):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                _gcsfs().get_file(source, target)
        return
    for directory, _, files in os.walk(src):
        for name in files:
            local = os.path.join(directory, name)
            _gcsfs().put_file(local, dst + "/" + os.path.relpath(local, src).replace(os.sep, "/"))


def move(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move a file or directory to `dst`, which must not exist; both local, or both on GCS.

    Local: a rename (`shutil.move` across file systems). GCS: every object copied server-side (no bytes pass
    through this host), then the originals deleted. Not atomic there: a crash in between leaves both, and the
    source is still whole; a caller that needs the source to stop counting first removes the object that makes
    it count (for an orbax step: its commit_success.txt) before calling this."""
    src, dst = os.fspath(src), os.fspath(dst)
    if is_remote(src) != is_remote(dst):
        raise ValueError(f"move between local and GCS paths is not supported ({src} -> {dst}); copy, then delete")
    if exists(dst):
        raise FileExistsError(f"cannot move {src} to {dst}: it exists")
    if not is_remote(src):
        shutil.move(src, dst)
        return
    sources = _objects_under(src)
    if not sources:
        raise FileNotFoundError(src)
    prefix = src.rstrip("/")
    targets = [dst.rstrip("/") + s[len(prefix) :] for s in sources]
    fs = _gcsfs()
    fs.copy(sources, targets)  # rewriteTo: server-side
    fs.rm(sources)
