"""What a failed restore means: only unreadable steps are moved aside; anything else stops the run, nothing moved.

A tiny state saved by orbax on one process (no training), restored through `fno_jax.checkpoint.restore_latest` (a
group of one run) onto a target with shardings (`fno_jax.runtime.parallel.abstract_arrays`), as `fno_jax.train` and
the multi-host job do.
"""

import os

import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from multihost_worker import corrupt_step, race_template

from fno_jax.checkpoint import Checkpointer, CheckpointError, CheckpointMismatchError, restore_latest
from fno_jax.runtime.parallel import abstract_arrays, make_parallel

STATE = {"params": {"w": np.zeros((2, 3), np.float32)}, "opt_state": {"mu": np.zeros(3, np.float32)}}


def _target(state=STATE):
    return abstract_arrays(state, NamedSharding(make_parallel().mesh, P()))


@pytest.fixture
def workdir(tmp_path):
    """Steps 1 (good) and 2 (every array file overwritten with garbage)."""
    race_template(str(tmp_path))
    return str(tmp_path)


def test_unreadable_newest_step_is_moved_aside_and_the_previous_restored(workdir):
    ckpt = Checkpointer(workdir)
    step, (state,), _ = restore_latest([ckpt], _target())
    assert step == 1 and ckpt.steps() == [1]
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.arange(6.0).reshape(2, 3))
    assert os.listdir(os.path.join(workdir, "broken_checkpoints")) == ["2"]
    ckpt.close()


def test_checkpoint_of_another_state_stops_the_run_and_moves_nothing(workdir):
    other = {"params": {"w": np.zeros((4, 3), np.float32)}, "opt_state": STATE["opt_state"]}
    ckpt = Checkpointer(workdir)
    broken = os.path.join(workdir, "checkpoints", "2")
    os.rename(broken, broken + ".aside")  # step 1 is now the newest: readable, but of another shape
    ckpt.manager.reload()
    with pytest.raises(CheckpointMismatchError, match=r"holds another params .*\(2, 3\).*\(4, 3\).*new --workdir"):
        restore_latest([ckpt], _target(other))
    assert ckpt.steps() == [1] and not os.path.exists(os.path.join(workdir, "broken_checkpoints"))
    ckpt.close()


def test_no_readable_checkpoint_stops_the_run_instead_of_starting_over(workdir):
    corrupt_step(os.path.join(workdir, "checkpoints", "1"))
    ckpt = Checkpointer(workdir)
    expected = r"no checkpoint step common to every run can be read .*\[1, 2\].* rather than start again"
    with pytest.raises(CheckpointError, match=expected):
        restore_latest([ckpt], _target())
    assert sorted(os.listdir(os.path.join(workdir, "broken_checkpoints"))) == ["1", "2"]
    ckpt.close()


def test_out_of_memory_is_not_a_read_error(workdir, monkeypatch):
    ckpt = Checkpointer(workdir)

    def exhausted(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.00GiB.")

    monkeypatch.setattr(ckpt.manager, "restore", exhausted)
    with pytest.raises(CheckpointError, match=r"not a read error, so nothing was moved; give the run more memory"):
        restore_latest([ckpt], _target())
    assert ckpt.steps() == [1, 2]
    ckpt.close()


def test_a_target_without_shardings_is_refused(workdir):
    import jax

    bare = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), STATE)
    ckpt = Checkpointer(workdir, read_only=True)
    with pytest.raises(ValueError, match="without a sharding; build it with DataParallel.abstract_state"):
        restore_latest([ckpt], bare)
    assert ckpt.steps() == [1, 2]
    ckpt.close()
