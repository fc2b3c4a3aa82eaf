"""Command-line errors: an expected error is one line naming the problem and the fix, exit status 2, no traceback;
anything else keeps its traceback. One subprocess per entry point and behaviour."""

import errno
import os

import pytest
from conftest import main_cli, run_python

from fno_jax.config import ConfigError
from fno_jax.runtime.cli_errors import EXIT_EXPECTED, exit_on_expected_errors
from fno_jax.storage.workdir import WorkdirLockedError


def assert_one_line(result, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == EXIT_EXPECTED, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_bad_config_value_is_one_line(tmp_path):
    result = run_python(main_cli(tmp_path / "run", "--config.model.modes=0"), check=False)
    assert_one_line(result, "experiments.main: error: ConfigError: config.model.modes=0 must be >= 1")
    assert not os.path.exists(tmp_path / "run")


def test_a_nan_learning_rate_is_refused_before_the_workdir_exists(tmp_path):
    result = run_python(main_cli(tmp_path / "run", "--config.train.learning_rate=nan"), check=False)
    assert_one_line(result, "config.train.learning_rate=nan is not a finite number")
    assert not os.path.exists(tmp_path / "run")


def test_the_sweep_reports_a_bad_config_argument_in_one_line(tmp_path):
    config = "--config=experiments/configs/rq1_data_size.py:poisson,no_such_scale"
    result = run_python(["-m", "experiments.sweep", config, f"--workdir={tmp_path}", "--dry_run"], check=False)
    assert_one_line(result, "experiments.sweep: error: flag --config=", "no_such_scale")


def test_the_quickstart_reports_a_mistyped_key_in_one_line(tmp_path):
    result = run_python(["-m", "experiments.quickstart", f"--workdir={tmp_path}", "--config.seedz=2"], check=False)
    assert_one_line(result, "experiments.quickstart: error: a --config.KEY override names no key", "seedz")


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ConfigError("config.x=1 is wrong; use 2."), "prog: error: ConfigError: config.x=1 is wrong; use 2."),
        (WorkdirLockedError("workdir w is in use\nby another run"), "WorkdirLockedError: workdir w is in use by"),
        (PermissionError(errno.EACCES, "Permission denied", "/root/x"),
         "PermissionError: Permission denied: /root/x; choose a path you can write to."),
    ],
)  # fmt: skip
def test_expected_errors_exit_2_with_one_line(error, line, capsys):
    with pytest.raises(SystemExit) as exit_info, exit_on_expected_errors("prog"):
        raise error
    assert exit_info.value.code == EXIT_EXPECTED
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and line in err, err


@pytest.mark.parametrize("error", [RuntimeError("a bug"), ValueError("a bug"), PermissionError("no path named")])
def test_unexpected_errors_keep_their_traceback(error):
    with pytest.raises(type(error)), exit_on_expected_errors("prog"):
        raise error
