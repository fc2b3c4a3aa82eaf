"""What a run leaves on disk, and how it is written safely: the workdir (its lock, config identity, metrics.jsonl,
summary.json and the `RunMeta` saved with each checkpoint), TensorBoard event files (`metric_writer`), atomic JSON
(`json_io`), integrity seals (`integrity`), model cards of pretrained bundles (`model_card`) and the package version
recorded in all of them (`version`). Checkpoints themselves are `fno_jax.checkpoint`.

Local paths and `gs://` alike go through `paths` (GCS locks: `lease`; event files on GCS: `gcs_events`).

May import: numpy, ml_collections, tensorboardX, etils.epath, gcsfs and google-cloud-storage (for gs://), and
fno_jax's `runtime`, `model`, `config` and the metric catalogue (`fno_jax.training.metrics`, what a summary and a card
hold). Submodules are imported by name.
"""
