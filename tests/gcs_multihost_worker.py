"""One of the two processes of tests/test_gcs.py's 2-process job on a gs:// workdir (1 CPU device each, gloo).

    python tests/gcs_multihost_worker.py GS_ROOT LOCAL_ROOT DATASET   (FNO_JAX_COORDINATOR, ... set; the emulator's
                                                                       variables inherited from the test)

Both processes, in this order:
  not shared  each opens a workdir of its own (LOCAL_ROOT/process<i>, as a local directory on each host would be):
              refused by every process with a one-line WorkdirNotSharedError naming the path;
  shared      the tiny run trained together in GS_ROOT/run from the stored dataset DATASET (gs://, read host-fed:
              each process reads its own rows).
The last line printed is a JSON object with what the test checks.
"""

from __future__ import annotations

import json
import os
import sys


def main(gcs_root: str, local_root: str, dataset: str) -> None:
    from fno_jax.runtime.distributed import maybe_initialize

    assert maybe_initialize()
    import jax

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from conftest import tiny_config

    from fno_jax.runtime.cli_errors import is_expected, one_line
    from fno_jax.storage.workdir import Workdir, WorkdirNotSharedError
    from fno_jax.train import train_and_evaluate

    process = jax.process_index()
    result = {"process": process, "devices": jax.device_count(), "refused": None}
    own = os.path.join(local_root, f"process{process}")
    try:
        with Workdir(own, tiny_config()):
            pass
    except WorkdirNotSharedError as err:
        assert is_expected(err), repr(err)
        result["refused"] = one_line(err)
    summary = train_and_evaluate(tiny_config(**{"data.source": dataset}), f"{gcs_root}/run")
    result["summary"] = {k: summary[k] for k in ("test_rel_l2", "best_step", "devices")}
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:4])
