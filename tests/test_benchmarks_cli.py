"""Benchmarks CLI: each subcommand runs at tiny sizes and ends with one JSON line of the promised keys."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import throughput

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"samples_per_s", "step_ms_median", "compile_s", "device", "peak_bytes"}


def _last_json(capsys, argv):
    assert throughput.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert REQUIRED <= set(result)
    assert result["samples_per_s"] > 0 and result["step_ms_median"] > 0 and result["compile_s"] > 0
    return result


@pytest.mark.parametrize("impl", ["fft"])  # "dft", the default, runs in the other cases
def test_train_tiny(capsys, impl):
    argv = ["train", "--resolution", "8", "--batch", "2", "--width", "4", "--modes", "2", "--depth", "2"]
    result = _last_json(capsys, [*argv, "--fc-dim", "8", "--steps", "2", "--spectral-impl", impl, "--json"])
    assert result["benchmark"] == "train" and result["spectral_impl"] == impl and result["batch"] == 2
    # The timed step is the real one: Adam moved the params, so the loss is finite and reported.
    assert result["final_loss"] > 0
    # samples/s is the batch over the median step time.
    assert result["samples_per_s"] == pytest.approx(2e3 / result["step_ms_median"], rel=1e-9)


def test_train_remat_compile_only_reports_memory(capsys):
    # Compile-only: XLA's memory analysis of the remat step, no timing (the CPU backend reports it).
    argv = ["train", "--resolution", "8", "--batch", "2", "--width", "4", "--modes", "2", "--depth", "2"]
    assert throughput.main([*argv, "--fc-dim", "8", "--remat", "--compile-only", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["remat"] is True and result["spectral_impl"] == "dft" and result["samples_per_s"] is None
    assert result["compiled_temp_bytes"] > 0 and result["compiled_argument_bytes"] > 0


def test_train_bfloat16_tiny(capsys):
    argv = ["train", "--resolution", "8", "--batch", "2", "--width", "4", "--modes", "2", "--depth", "1"]
    result = _last_json(capsys, [*argv, "--fc-dim", "8", "--steps", "1", "--dtype", "bfloat16", "--json"])
    assert result["dtype"] == "bfloat16"


def test_infer_tiny(capsys):
    argv = ["infer", "--resolution", "8", "--batch", "2", "--width", "4", "--modes", "2", "--depth", "1"]
    result = _last_json(capsys, [*argv, "--fc-dim", "8", "--steps", "2", "--json"])
    assert result["benchmark"] == "infer"


def test_generate_tiny(capsys):
    argv = ["generate", "--pde", "poisson", "--resolution", "16", "--batch", "4", "--repeats", "2", "--json"]
    _last_json(capsys, argv)


def test_train_torch_baseline_tiny(capsys):
    pytest.importorskip("torch")
    argv = ["train", "--resolution", "8", "--batch", "2", "--width", "4", "--modes", "2", "--depth", "1"]
    result = _last_json(capsys, [*argv, "--fc-dim", "8", "--steps", "2", "--baseline", "--json"])
    assert result["torch_samples_per_s"] > 0 and result["speedup_vs_torch"] > 0


def test_bad_flags_are_named():
    argv = ["train", "--resolution", "8", "--modes", "5", "--steps", "1"]
    with pytest.raises(ValueError, match="--modes 5"):
        throughput.main(argv)
    assert throughput.main(["nonsense"]) == 2


def test_module_entry_point_runs():
    # The documented command line itself (a fresh process): last line is the JSON object.
    cmd = [sys.executable, "-m", "benchmarks.throughput", "infer", "--resolution", "8", "--batch", "1"]
    cmd += ["--width", "2", "--modes", "2", "--depth", "1", "--fc-dim", "4", "--steps", "1", "--json"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, timeout=120).stdout
    assert REQUIRED <= set(json.loads(out.strip().splitlines()[-1]))


def test_flop_model_counts_dense_layers_exactly():
    from benchmarks.flops import train_step_cost

    rows = {r["part"]: r for r in train_step_cost(8, width=4, modes=2, depth=2, fc_dim=6, channels=3)}
    # Dense on 64 points: 2 * 64 * 4 * 4 per layer forward; backward doubles it.
    assert rows["pointwise x2"]["fwd_flops"] == 2 * 2 * 64 * 4 * 4
    assert rows["pointwise x2"]["train_flops"] == 3 * rows["pointwise x2"]["fwd_flops"]
    assert rows["total"]["train_flops"] == sum(r["train_flops"] for p, r in rows.items() if p != "total")
