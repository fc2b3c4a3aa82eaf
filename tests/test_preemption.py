"""The preemption guard: signals recorded, not fatal; one stop step for every process; exit statuses 143 and 130.

The whole-run behaviour (a checkpoint at the step reached, bitwise resume) is in tests/test_reliability.py.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import FAST_COMPILE, REPO
from test_distributed import _free_port

from fno_jax.runtime.preemption import Preempted, PreemptionGuard, exit_on_preemption


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_is_recorded_and_becomes_the_exit_status(signum, code):
    before = signal.getsignal(signum)
    with pytest.raises(SystemExit) as exit_info, exit_on_preemption(), PreemptionGuard() as guard:
        assert not guard.should_stop(1)
        os.kill(os.getpid(), signum)  # does not end the process: the guard records it
        assert guard.requested and guard.should_stop(2)
        raise guard.preempted(2)
    assert exit_info.value.code == code
    stop = exit_info.value.__cause__
    assert isinstance(stop, Preempted) and (stop.signum, stop.step) == (signum, 2)
    assert str(stop).startswith("preempted at step 2; run the same command to resume")
    assert signal.getsignal(signum) is before


def test_a_second_ctrl_c_aborts_at_once_and_repeated_sigterms_are_absorbed():
    with PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.received == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt), PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.should_stop(1)
        os.kill(os.getpid(), signal.SIGINT)


def test_bad_use_is_refused():
    with pytest.raises(ValueError, match="sync_every must be >= 1"):
        PreemptionGuard(sync_every=0)
    with pytest.raises(RuntimeError, match="before should_stop"):
        PreemptionGuard().preempted(3)


_WORKER = r"""
import json, sys, time
from fno_jax.runtime.distributed import maybe_initialize
assert maybe_initialize()
from fno_jax.runtime.preemption import PreemptionGuard, exit_on_preemption

SYNC_EVERY = 4
with exit_on_preemption(), PreemptionGuard(sync_every=SYNC_EVERY) as guard:
    guard.should_stop(SYNC_EVERY)  # compiles the agreement
    t0 = time.perf_counter()
    for i in range(50):
        assert not guard.should_stop(SYNC_EVERY * (i + 2))
    cost_ms = (time.perf_counter() - t0) / 50 * 1e3
    print(json.dumps({"ready": True, "agreement_ms": cost_ms}), flush=True)
    step = 0
    while not guard.should_stop(step := step + 1):
        time.sleep(0.001 * (1 + guard.requested))  # the two processes run at different speeds
    print(json.dumps({"stop": step, "signalled_here": guard.requested}), flush=True)
    raise guard.preempted(step)
"""


def _next_record(proc) -> dict:
    """The next line of `proc`'s stdout that is a JSON object (libraries may print other lines)."""
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
    return {}


@pytest.mark.slow
def test_processes_agree_on_the_stop_step(tmp_path):
    """SIGTERM to one of two processes: both stop at the same step, a multiple of sync_every, with status 143."""
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            FNO_JAX_COORDINATOR=f"127.0.0.1:{port}",
            FNO_JAX_NUM_PROCESSES="2",
            FNO_JAX_PROCESS_ID=str(pid),
        )
        env["XLA_FLAGS"] = FAST_COMPILE  # one device per process
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _WORKER],
                cwd=REPO,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
        )
    try:
        ready = [_next_record(proc) for proc in procs]
        assert all(r.get("ready") for r in ready), [proc.stderr.read()[-2000:] for proc in procs]
        procs[1].send_signal(signal.SIGTERM)
        outs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [proc.returncode for proc in procs] == [143, 143], [err[-2000:] for _, err in outs]
    stops = [json.loads([line for line in out.splitlines() if line.startswith("{")][-1]) for out, _ in outs]
    assert stops[0]["stop"] == stops[1]["stop"] and stops[0]["stop"] % 4 == 0
    assert [s["signalled_here"] for s in stops] == [False, True]
    print("agreement cost (ms):", [round(r["agreement_ms"], 3) for r in ready])
