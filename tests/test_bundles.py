"""Pretrained bundles: export from a run, load in one line, refuse a tampered bundle, fine-tune from one exactly as
from the workdir, and make one from the reference PyTorch state_dict."""

import hashlib
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest
from conftest import params_equal, run_python, tiny_config

from fno_jax import checkpoint, export, interop, pretrained, train
from fno_jax.config import layout_of, task_of
from fno_jax.data import load_splits
from fno_jax.runtime.parallel import make_parallel
from fno_jax.storage import integrity
from fno_jax.training.evaluate import Evaluator
from fno_jax.training.finetune import TransferError, load_pretrained


@pytest.fixture(scope="module")
def bundle(tiny_run, tmp_path_factory):
    workdir, _ = tiny_run
    out = str(tmp_path_factory.mktemp("bundles") / "poisson")
    export.export_bundle(workdir, out)
    return out


def test_export_then_load_gives_the_runs_model_parameter_count_and_test_error(tiny_run, bundle):
    workdir, summary = tiny_run
    model, params, card = pretrained.load(bundle)
    assert sorted(os.listdir(bundle)) == ["README.md", "card.json", "params.safetensors"]
    assert params_equal(params, checkpoint.load_params(workdir, "best"))
    assert card["num_params"] == summary["num_params"] == sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
    assert card["test_metrics"]["test_rel_l2"] == summary["test_rel_l2"]
    assert card["test_metrics"]["test_rel_l2_bands"] == summary["test_rel_l2_bands"]
    # The loaded model, with the card's statistics, reproduces the test error on the run's own test split.
    config = tiny_config()
    splits = load_splits(config, task_of(config), layout_of(config), None)
    evaluator = Evaluator(model, pretrained.norm_stats(card), layout=card["layout"], length=card["length"],
                          parallel=make_parallel(), batch_size=16)  # fmt: skip
    np.testing.assert_allclose(evaluator(params, evaluator.put(splits.test))[0]["rel_l2"], summary["test_rel_l2"],
                               rtol=1e-6)  # fmt: skip


def test_card_and_model_card_say_what_the_model_is(tiny_run, bundle):
    workdir, summary = tiny_run
    card = json.loads(open(os.path.join(bundle, "card.json")).read())
    assert card["model"] == {"width": 8, "modes": 4, "depth": 2, "fc_dim": 16, "out_dim": 1, "padding": 0}
    assert card["layout"] == "poisson" and card["channels"] == ["source", "K11", "K22", "K12"]
    assert card["task_spec"]["eigenvalue_range"] == [1.0, 5.0] and card["task_ranges"]["eigenvalue_range"] == [1, 5]
    assert card["training_data"] | {"source": None} == {
        "source": None, "seed": 0, "data_seed": 0, "num_train": 32, "num_train_pool": 0, "num_val": 16,
        "num_test": 16, "resolution": 16, "length": 1.0}  # fmt: skip
    assert card["training"]["step"] == card["training"]["best_step"] == summary["best_step"]
    assert card["norm_stats"] == checkpoint.load_meta(workdir, "best")[1].norm_stats.to_dict()
    weights = open(os.path.join(bundle, "params.safetensors"), "rb").read()
    assert card["weights"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert card["provenance"]["workdir"] == os.path.abspath(workdir) and card["fno_jax_version"]
    readme = open(os.path.join(bundle, "README.md")).read()
    for words in ("## Trained on", "## How well", "## Intended use and limits", "## How to load",
                  f"{summary['test_rel_l2']:.4g}", "32 training problems", "fno_jax.pretrained.operator"):  # fmt: skip
        assert words in readme, words


def test_a_changed_or_mismatched_bundle_is_refused(bundle, tmp_path):
    changed = str(tmp_path / "changed")
    shutil.copytree(bundle, changed)
    with open(os.path.join(changed, "params.safetensors"), "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\x80\x7f")  # the last float becomes +inf
    with pytest.raises(pretrained.BundleError, match="does not match the sha256 in card.json"):
        pretrained.load(changed)
    other = str(tmp_path / "other")
    shutil.copytree(bundle, other)
    card = json.loads(open(os.path.join(other, "card.json")).read())
    card["model"]["width"] = 12
    open(os.path.join(other, "card.json"), "w").write(json.dumps(card))
    with pytest.raises(pretrained.BundleError, match=r"card\.json does not match its checksum"):
        pretrained.load(other)
    open(os.path.join(other, "card.json"), "w").write(json.dumps(integrity.seal(card)))  # a consistent card ...
    with pytest.raises(pretrained.BundleError, match=r"do not fit the model its card describes \(fc1/kernel"):
        pretrained.load(other)  # ... of another model than the weights'
    del card["checksum"]
    open(os.path.join(other, "card.json"), "w").write(json.dumps(card))
    with pytest.raises(pretrained.BundleError, match=r"card\.json has no checksum"):
        pretrained.load(other)
    with pytest.raises(pretrained.BundleError, match="not a pretrained bundle"):
        pretrained.load(str(tmp_path))


def test_finetuning_from_a_bundle_equals_finetuning_from_the_workdir(tiny_run, bundle, tmp_path):
    workdir, _ = tiny_run
    steps = {"train.num_steps": 2, "train.eval_every": 2, "train.checkpoint_every": 2}
    shifted = {"task_ranges.eigenvalue_range": (5.0, 10.0), "finetune.norm_stats": "pretrained", **steps}
    for name, source in (("from_workdir", workdir), ("from_bundle", bundle)):
        train.train_and_evaluate(tiny_config(init_from=source, **shifted), str(tmp_path / name))
    tuned = [checkpoint.load_params(str(tmp_path / name)) for name in ("from_workdir", "from_bundle")]
    assert params_equal(*tuned)
    assert not params_equal(tuned[0], checkpoint.load_params(workdir, "best"))  # it did train
    step = pretrained.read_card(bundle)["training"]["step"]
    other = 5 if step == 10 else 10
    with pytest.raises(TransferError, match=rf"a bundle of step {step} only, but config\.init_step={other}"):
        load_pretrained(bundle, other, model={"width": 8, "modes": 4, "depth": 2, "fc_dim": 16}, layout="poisson")


def test_export_cli_writes_a_bundle_of_any_step(tiny_run, tmp_path):
    workdir, summary = tiny_run
    other = 5 if summary["best_step"] == 10 else 10  # the checkpoint that was not tested
    out = tmp_path / "other"
    result = run_python(["-m", "fno_jax.export", "--workdir", workdir, "--out", str(out), "--step", str(other)])
    assert result.stdout.strip() == f"wrote {out} (step {other}, 8,537 params)"
    _, params, card = pretrained.load(out)
    assert card["training"]["step"] == other and card["test_metrics"] == {}
    assert params_equal(params, checkpoint.load_params(workdir, other))


def test_export_errors_are_one_line(tiny_run, bundle, tmp_path, capsys):
    workdir, _ = tiny_run
    for argv, message in [
        (["--workdir", str(tmp_path / "none"), "--out", str(tmp_path / "b")], "CheckpointError: --workdir .* is not"),
        (["--workdir", workdir, "--out", bundle], "BundleError: .* already exists; choose another output"),
        (["--workdir", workdir, "--out", str(tmp_path / "b"), "--step", "7"], r"no checkpoint for step 7 .*\[5, 10\]"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            export.main(argv)
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("python -m fno_jax.export: error: "), lines
        assert re.search(message, lines[0]), lines[0]


def test_the_reference_state_dict_becomes_a_bundle(tiny_run, tmp_path):
    workdir, _ = tiny_run
    params = checkpoint.load_params(workdir, "best")
    _, meta = checkpoint.load_meta(workdir, "best")
    state_dict = interop.export_reference_state_dict(params)
    stats = meta.norm_stats
    card = interop.bundle_from_state_dict(state_dict, str(tmp_path / "ref"), layout="poisson", norm_stats=stats)
    _, loaded, read = pretrained.load(tmp_path / "ref")
    assert params_equal(loaded, params) and read == card
    assert card["test_metrics"] == {} and card.get("training_data") is None
    with pytest.raises(ValueError, match=r"reads 4 input channels but layout 'mixed' has 7"):
        interop.bundle_from_state_dict(state_dict, str(tmp_path / "x"), layout="mixed", norm_stats=stats)
