"""The one logging set-up of every entry point (a run, a sweep, the quickstart, the generate job).

Everything logs through absl (`from absl import logging`). Process 0 shows INFO, the other processes of a
multi-host job only warnings and errors; the libraries' own INFO chatter (orbax writes dozens of lines per
checkpoint, and notices about read-only pretrained directories) is hidden, their warnings and errors still show
(orbax's errors only: fno-jax reports checkpoint problems itself).
"""

import logging as pylogging

import jax
from absl import logging

_LIBRARIES = ("/orbax/", "/jax/", "/jaxlib/", "/flax/", "/tensorstore/")
# orbax warns about every read-only manager (each fine-tuning run reads its pretrained checkpoints that way);
# fno-jax reports checkpoint problems itself, so orbax shows only its errors.
_QUIET_UNTIL_ERROR = ("/orbax/",)


def _not_library_info(record) -> bool:
    if any(p in record.pathname for p in _QUIET_UNTIL_ERROR):
        return record.levelno >= logging.converter.STANDARD_ERROR
    return record.levelno >= logging.converter.STANDARD_WARNING or not any(p in record.pathname for p in _LIBRARIES)


def configure_logging() -> None:
    """Call once at program start, after the distributed runtime (if any) is initialized."""
    logging.set_verbosity(logging.INFO if jax.process_index() == 0 else logging.WARNING)
    handler = logging.get_absl_handler()
    if _not_library_info not in handler.filters:
        handler.addFilter(_not_library_info)
    # "12:34:56 message" ("W 12:34:56 ..." for warnings and errors) instead of absl's thread ids and file lines.
    handler.setFormatter(_Formatter())


class _Formatter(pylogging.Formatter):
    def format(self, record) -> str:
        time = self.formatTime(record, "%H:%M:%S")
        level = "" if record.levelno < pylogging.WARNING else f"{record.levelname[0]} "
        prefix = f"[process {jax.process_index()}] " if jax.process_count() > 1 else ""
        return f"{level}{time} {prefix}{record.getMessage()}"
