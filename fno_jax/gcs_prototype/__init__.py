"""PROTOTYPE of `gs://` support (branch `gcs`): a path layer for local and GCS paths, and a lease for the workdir
and sweep locks on GCS. Not used by the rest of fno_jax yet; docs/GCS_NOTES.md says what works against a local
emulator and how these are meant to be folded into the package."""

from fno_jax.gcs_prototype import lease, paths

__all__ = ["lease", "paths"]
