"""Train, fine-tune or evaluate one FNO run, or write a dataset (configs with job = "generate").

    python -m experiments.main --config=experiments/configs/pretrain.py:poisson --workdir=runs/pretrain_poisson \
        [--config.train.num_steps=1000 ...]

Running the same command again on the same workdir resumes from the latest checkpoint. SIGTERM or SIGINT during
training saves a checkpoint at the step reached and exits with status 143 or 130. An expected error (a bad config
value, a missing dataset, a pretrained model that does not fit, a workdir in use, ...) prints one line that says what
to change and exits with status 2 (`fno_jax.runtime.cli_errors`).
"""

from absl import app, flags
from ml_collections import config_flags

from fno_jax.runtime.cli_errors import run_absl_main
from fno_jax.runtime.distributed import maybe_initialize
from fno_jax.runtime.log_setup import configure_logging
from fno_jax.runtime.preemption import exit_on_preemption

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Run configuration file (path[:arg]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    maybe_initialize()
    configure_logging()
    if FLAGS.config.get("job", "train") == "generate":
        from fno_jax.data.build import generate_dataset

        generate_dataset(FLAGS.config, FLAGS.workdir)
    else:
        from fno_jax.train import train_and_evaluate

        with exit_on_preemption():  # Preempted -> exit status 143 (SIGTERM) or 130 (SIGINT)
            train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    run_absl_main(main, "experiments.main")
