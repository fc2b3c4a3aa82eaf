"""Benchmarks CLI: each subcommand runs at tiny sizes and ends with one JSON line of the promised keys."""

import json
import os
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


def test_train_autodiff_layers_and_untiled_head(capsys):
    argv = ["train", "--resolution", "8", "--batch", "2", "--width", "4", "--modes", "2", "--depth", "2"]
    argv += ["--fc-dim", "8", "--steps", "1", "--layer-impl", "autodiff", "--head-tile", "0", "--json"]
    result = _last_json(capsys, argv)
    assert result["layer_impl"] == "autodiff" and result["head_tile"] == 0


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


def test_alternate_swaps_the_order_every_round_and_takes_medians():
    from benchmarks.baseline import alternate

    calls = []
    rates = {"ours": iter([10.0, 30.0, 20.0]), "baseline": iter([5.0, 1.0, 9.0])}

    def side(name):
        def run():
            calls.append(name)
            return {"samples_per_s": next(rates[name])}

        return run

    ours, theirs, log = alternate(side("ours"), side("baseline"), 3)
    assert calls == ["ours", "baseline", "baseline", "ours", "ours", "baseline"]
    assert [r["samples_per_s"] for r in ours] == [10.0, 30.0, 20.0]
    assert [r["samples_per_s"] for r in theirs] == [5.0, 1.0, 9.0]
    assert [(e["round"], e["side"]) for e in log][:3] == [(0, "ours"), (0, "baseline"), (1, "baseline")]
    assert all({"load_before", "load_after", "wall_s"} <= set(e) for e in log)
    with pytest.raises(ValueError, match="--rounds"):
        alternate(side("ours"), side("baseline"), 0)


def test_alternate_waits_before_every_run_and_marks_runs_it_gave_up_waiting_for():
    from benchmarks.baseline import alternate

    answers = iter([True, False, True, True])
    calls = []

    def wait():
        calls.append("wait")
        return next(answers)

    ours, theirs, log = alternate(lambda: {"samples_per_s": 2.0}, lambda: {"samples_per_s": 1.0}, 2, wait)
    assert len(calls) == 4 and len(ours) == len(theirs) == 2
    assert [e.get("waited_out", False) for e in log] == [False, True, False, False]


def test_wait_for_quiet_gives_up_after_its_time(monkeypatch):
    from benchmarks import baseline

    monkeypatch.setattr(baseline, "load_average", lambda: [9.0, 9.0, 9.0])
    assert baseline.wait_for_quiet(1.5, max_wait_s=0.0) is False
    monkeypatch.setattr(baseline, "load_average", lambda: [0.5, 1.0, 1.0])
    assert baseline.wait_for_quiet(1.5, max_wait_s=0.0) is True


def test_baseline_flags_never_reach_our_side():
    from benchmarks.baseline import strip_baseline_flags

    argv = ["--batch", "4", "--baseline", "/r", "--baseline-python=/p", "--rounds", "3", "--json", "--steps", "2"]
    assert strip_baseline_flags([*argv, "--quiet-load", "1.5"]) == ["--batch", "4", "--steps", "2"]


def _executable(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_generate_baseline_runs_the_papers_script_in_its_own_process(capsys, tmp_path):
    # A stand-in for the paper's repository: its generator prints its loop time as the real one does.
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "gen_data_poisson.py").write_text(
        "import sys\nassert '--ntrain' in sys.argv and '--n' in sys.argv\nprint('sampling')\nprint('time = 0.5')\n"
    )
    argv = ["generate", "--pde", "poisson", "--resolution", "16", "--batch", "4", "--repeats", "2"]
    argv += ["--baseline", str(tmp_path), "--baseline-python", sys.executable, "--baseline-samples", "8"]
    result = _last_json(capsys, [*argv, "--rounds", "1", "--json"])
    assert result["baseline_samples_per_s"] == pytest.approx(8 / 0.5)
    assert result["speedup"] == pytest.approx(result["samples_per_s"] / result["baseline_samples_per_s"])
    assert [run["side"] for run in result["runs"]] == ["ours", "baseline"]
    assert "--baseline" not in result["ours_command"] and "gen_data_poisson.py" in result["baseline_command"]


def test_train_baseline_uses_the_given_interpreter(capsys, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fno.py").write_text("")
    # The interpreter stand-in answers as benchmarks/paper_model.py does: a JSON line last.
    fake = _executable(
        tmp_path / "python",
        '#!/bin/sh\necho "args: $*"\necho \'{"samples_per_s": 4.0, "step_ms_median": 500.0}\'\n',
    )
    argv = ["train", "--resolution", "8", "--batch", "2", "--width", "4", "--modes", "2", "--depth", "1"]
    argv += ["--fc-dim", "8", "--steps", "1", "--baseline", str(tmp_path), "--baseline-python", fake]
    result = _last_json(capsys, [*argv, "--rounds", "1", "--json"])
    assert result["baseline_samples_per_s"] == 4.0 and result["baseline_step_ms_median"] == 500.0
    assert result["speedup"] == pytest.approx(result["samples_per_s"] / 4.0)
    assert result["benchmark"] == "train" and result["final_loss"] > 0  # our side's own result, from its process
    assert "paper_model.py" in result["baseline_command"] and "--repo" in result["baseline_command"]


def test_baseline_must_be_the_papers_checkout(tmp_path):
    argv = ["train", "--resolution", "8", "--steps", "1", "--baseline"]
    with pytest.raises(ValueError, match="not a directory"):
        throughput.main([*argv, str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="no models/fno.py"):
        throughput.main([*argv, str(tmp_path)])


@pytest.mark.skipif(
    not (os.environ.get("FNO_BASELINE_REPO") and os.environ.get("FNO_BASELINE_PYTHON")),
    reason="set FNO_BASELINE_REPO (the paper's code) and FNO_BASELINE_PYTHON (with torch) to run the paper's model",
)
@pytest.mark.parametrize("mode", ["train", "infer"])
def test_paper_model_driver_runs_the_papers_model(mode):
    cmd = [os.environ["FNO_BASELINE_PYTHON"], str(ROOT / "benchmarks" / "paper_model.py")]
    cmd += ["--repo", os.environ["FNO_BASELINE_REPO"], mode, "--resolution", "8", "--batch", "2", "--width", "4"]
    cmd += ["--modes", "2", "--depth", "2", "--fc-dim", "8", "--steps", "1", "--warmup", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    result = json.loads(out.strip().splitlines()[-1])
    # Same sizes, same parameter count as ours: 4 -> 4 lift, 2 layers of 2 x 4*4*2*2*2 + 4*4 + 4, 4 -> 8 -> 1.
    assert result["num_params"] == (4 * 4 + 4) + 2 * (2 * 4 * 4 * 2 * 2 * 2 + 4 * 4 + 4) + (4 * 8 + 8) + (8 + 1)
    assert result["samples_per_s"] > 0


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
