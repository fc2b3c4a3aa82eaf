"""Command-line errors: an expected error prints one line naming the problem and the fix, and exits with status 2.

Expected errors are the ones a user causes and can fix: a config value, a dataset, a pretrained model that does not
fit the run, a workdir in use by another run, a path that is missing or not writable (a full disk too), a checkpoint,
dataset or bundle that cannot be read or was damaged, a run stopped by a non-finite loss, a device layout that cannot
take the run. Every such error type derives from `UserError` (its messages say what to change, so a traceback would
only hide them); an OS error about a path the user named counts too. Anything else is a bug and keeps its traceback.
Every entry point (`experiments.main`, `experiments.sweep`, `experiments.quickstart`, `fno_jax.export`,
`fno_jax.verify`) goes through `exit_on_expected_errors` (`run_absl_main` for the absl ones, which also reports a
bad flag in one line).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "EXIT_EXPECTED",
    "UserError",
    "exit_on_expected_errors",
    "exit_on_flag_errors",
    "is_expected",
    "one_line",
    "run_absl_main",
]

EXIT_EXPECTED = 2
# OS errors about a path the user named: reported with the path and a hint, without a traceback.
_PATH_ERRNOS = {
    errno.ENOENT: "check that the path exists",
    errno.ENOTDIR: "check that the path exists",
    errno.EACCES: "choose a path you can write to",
    errno.EPERM: "choose a path you can write to",
    errno.EROFS: "choose a path on a writable file system",
    errno.ENOSPC: "free some space or choose another disk",
    errno.EISDIR: "give a file, not a directory",
}


class UserError(Exception):
    """An error the user causes and can fix, whose message says how: reported in one line by the command-line
    entry points (exit status 2). Mixed into the concrete types (`ConfigError(UserError, ValueError)`, ...)."""


def _is_path_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in _PATH_ERRNOS and err.filename is not None


def is_expected(err: BaseException) -> bool:
    return _is_path_error(err) or isinstance(err, UserError)


def one_line(err: BaseException) -> str:
    """`TypeName: message` on one line; an OS error about a path gets the path and what to do."""
    if _is_path_error(err):
        message = f"{err.strerror}: {os.fspath(err.filename)}; {_PATH_ERRNOS[err.errno]}."
    else:
        message = str(err)
    return f"{type(err).__name__}: {' '.join(message.split())}"


@contextlib.contextmanager
def exit_on_expected_errors(prog: str) -> Iterator[None]:
    """Inside, an expected error is printed as `prog: error: TypeName: message` (one line on stderr) and the
    program exits with status 2; any other exception propagates with its traceback."""
    try:
        yield
    except Exception as err:
        if not is_expected(err):
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_EXPECTED)


def _flag_error_line(err: BaseException) -> str:
    """One line for a command-line flag that cannot be parsed.

    absl's own flag errors carry a message; ml_collections reports a mistyped `--config.KEY` as a KeyError or
    AttributeError (with its "Did you mean" hint), and an exception in a config file's get_config() as a flag error
    whose message embeds a traceback, of which only the exception's own line is kept.
    """
    text = str(err)
    if "Traceback (most recent call last)" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        text = text.split("Traceback (most recent call last)")[0] + lines[-1]
    if isinstance(err, KeyError | AttributeError):
        inner: object = err
        while isinstance(inner, BaseException) and inner.args:  # AttributeError(KeyError("'key'\nDid you mean ..."))
            inner = inner.args[0]
        text = f"a --config.KEY override names no key of the config: {inner}"
    return " ".join(text.split())


@contextlib.contextmanager
def exit_on_flag_errors(prog: str) -> Iterator[None]:
    """Around absl flag parsing (and a config flag's definition, which parses its default file and any --config.KEY
    overrides at once): a flag that cannot be parsed, or an expected error, is one line and exit status 2."""
    from absl import flags

    try:
        with exit_on_expected_errors(prog):
            yield
    # Raised while flags are parsed, these come from what was typed, not from a bug in the program.
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as err:
        print(f"{prog}: error: {_flag_error_line(err)} (see --helpfull)", file=sys.stderr)
        sys.exit(EXIT_EXPECTED)


def run_absl_main(main: Callable[[Sequence[str]], None], prog: str) -> None:
    """`absl.app.run(main)` with expected errors, and flags that cannot be parsed (a mistyped --config.KEY, a value
    of the wrong type, an unknown config ARG), reported in one line with exit status 2."""
    from absl import app, flags

    def parse(argv: Sequence[str]) -> list[str]:
        with exit_on_flag_errors(prog):
            return flags.FLAGS(argv)

    def guarded(argv: Sequence[str]) -> None:
        with exit_on_expected_errors(prog):
            main(argv)

    app.run(guarded, flags_parser=parse)
