"""What a run shows its user: TensorBoard event files (read with TensorBoard's own reader), the test metrics in
summary.json and metrics.jsonl, the evaluator behind them, and the logging config."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fno_jax.config import ConfigError, validate_config
from fno_jax.model import FNO, channels, predict
from fno_jax.model.normalization import compute_stats, scale_arrays
from fno_jax.runtime.parallel import make_parallel
from fno_jax.storage.metric_writer import field_images, open_writer, scalar_tags
from fno_jax.training import metrics
from fno_jax.training.evaluate import Evaluator
from fno_jax.training.runs import RunAxis


def read_events(workdir) -> EventAccumulator:
    events = EventAccumulator(str(workdir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def series(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def records(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_tensorboard_reads_the_runs_scalars_and_images(tiny_run):
    workdir, summary = tiny_run
    events, logged = read_events(workdir), records(workdir)
    # TensorBoard stores float32: the logged float64 values round to ~6e-8 relative.
    for tag, key in [("train/loss", "train_loss"), ("train/grad_norm", "grad_norm"),
                     ("train/learning_rate", "learning_rate"), ("val/rel_l2", "val_rel_l2"),
                     ("val/rel_residual", "val_rel_residual")]:  # fmt: skip
        steps_, values = zip(*series(events, tag), strict=True)
        assert list(steps_) == [r["step"] for r in logged], tag
        np.testing.assert_allclose(values, [r[key] for r in logged], rtol=1e-7, err_msg=tag)
    assert [s for s, _ in series(events, "train/steps_per_s")] == [5, 10]
    for name in ("rel_l2", "rel_h1", "rel_linf", "rel_residual", "loss"):
        ((step, value),) = series(events, f"test/{name}")
        assert step == 10
        np.testing.assert_allclose(value, summary[f"test_{name}"], rtol=1e-7)
    low = series(events, "test/rel_l2_band_low")
    np.testing.assert_allclose(low[0][1], summary["test_rel_l2_bands"]["low"], rtol=1e-7)
    images = events.Tags()["images"]
    for split in ("val", "test"):
        for i in (0, 1):  # logging.images = 2 samples
            assert {f"{split}/{i}/{kind}" for kind in ("source", "target", "prediction", "error")} <= set(images)
    shown = events.Images("val/0/prediction")
    assert [e.step for e in shown] == [5, 10] and (shown[0].width, shown[0].height) == (128, 128)  # 16 px x 8


def test_summary_and_validation_records_carry_every_metric(tiny_run):
    workdir, summary = tiny_run
    for key in ("test_rel_l2", "test_rel_h1", "test_rel_linf", "test_rel_residual"):
        assert np.isfinite(summary[key]) and summary[key] > 0, key
    bands = summary["test_rel_l2_bands"]
    assert list(bands) == list(metrics.BANDS)
    assert bands["high"] == 0  # a 16 x 16 grid has no mode with |m| >= 12
    # Per sample, rel_l2 = |(low, mid, high)|; over the means, the triangle inequality brackets it.
    band_means = np.array(list(bands.values()))
    assert np.linalg.norm(band_means) <= summary["test_rel_l2"] * (1 + 1e-6)
    assert summary["test_rel_l2"] <= band_means.sum() * (1 + 1e-6)
    # The report reads every one of them (a table per metric).
    from experiments.report_data import _metrics_of

    assert len(_metrics_of(summary)) == 4 + len(metrics.BANDS)
    for record in records(workdir):
        assert set(record["val_rel_l2_bands"]) == set(metrics.BANDS)
        assert all(np.isfinite(record[f"val_{m}"]) for m in ("rel_h1", "rel_linf", "rel_residual"))


def _random_split(num: int, seed: int):
    """A random float32 Poisson split of `num` samples at 16 x 16, its statistics, and a small FNO."""
    rng = np.random.default_rng(seed)
    split = {"source": rng.normal(size=(num, 16, 16)), "coeffs": rng.uniform(0.01, 0.05, size=(num, 3)),
             "solution": rng.normal(size=(num, 16, 16))}  # fmt: skip
    split = {key: value.astype(np.float32) for key, value in split.items()}
    return split, compute_stats(split["source"], split["coeffs"]), FNO(width=8, modes=4, depth=2, fc_dim=16)


def test_evaluator_averages_per_sample_metrics_over_a_ragged_split():
    # 10 samples in batches of 4: the last batch is masked past the split's end and must not count twice.
    split, stats, model = _random_split(10, seed=0)
    params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 4)))["params"]
    evaluator = Evaluator(model, stats, layout="poisson", length=1.0, parallel=make_parallel(), batch_size=4)
    data = evaluator.put(split)
    (means,) = evaluator(params, data)
    prediction = predict(params, split, model=model, norm=stats, length=1.0)
    coefficients = channels.physical_coefficients(split["coeffs"], "poisson")
    expected = metrics.per_sample_metrics(prediction, split["solution"], split["source"], coefficients)
    # float32 sums of 4 values per batch, added in float64: a few float32 roundings (~1e-7) apart.
    for name in ("rel_l2", "rel_h1", "rel_linf", "rel_residual"):
        np.testing.assert_allclose(means[name], np.mean(expected[name]), rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(list(means["rel_l2_bands"].values()), np.mean(expected["rel_l2_bands"], 0), rtol=1e-6)
    sse = np.sum((np.asarray(prediction) - split["solution"]) ** 2, axis=(1, 2))
    np.testing.assert_allclose(means["loss"], np.mean(sse), rtol=1e-6)
    (shown,) = evaluator.examples(params, data, 3)
    # Another batch size (3, not 10) sums in another order: outputs agree to a few float32 ulps of the O(1)
    # hidden activations they come from.
    np.testing.assert_allclose(shown["prediction"], np.asarray(prediction)[:3], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(shown["solution"], split["solution"][:3])


def test_evaluator_of_packed_runs_equals_one_evaluator_per_run():
    split, stats, model = _random_split(6, seed=2)
    runs = [model.init(jax.random.PRNGKey(k), jnp.zeros((1, 16, 16, 4)))["params"] for k in (3, 4)]
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *runs)
    common = dict(layout="poisson", length=1.0, parallel=make_parallel(), batch_size=4)
    two = RunAxis(2)
    norm = two.stack_host([scale_arrays(stats)] * 2)
    packed, single = Evaluator(model, norm, axis=two, **common), Evaluator(model, stats, **common)
    data = packed.put(split)
    for together, (alone,) in zip(packed(stacked, data), [single(p, data) for p in runs], strict=True):
        assert together.keys() == alone.keys()
        for name in ("loss", "rel_l2", "rel_h1", "rel_linf", "rel_residual"):
            np.testing.assert_allclose(together[name], alone[name], rtol=1e-6, err_msg=name)  # vmap: other order
    shown = packed.examples(stacked, data, 2)
    np.testing.assert_allclose(shown[1]["prediction"], single.examples(runs[1], data, 2)[0]["prediction"], atol=1e-6)


def test_a_resumed_run_replaces_what_the_interrupted_one_logged_after_its_checkpoint(tmp_path):
    # Steps 3 and 4 were logged, then the run died; it resumes from step 2 and logs them again: TensorBoard shows
    # the resumed values only. Both files are opened within the same second, as a quick restart would.
    config = tiny_config()
    first = open_writer(config, str(tmp_path), start_step=0)
    for step in (1, 2, 3, 4):
        first.scalars(step, {"train/loss": float(step)})
    first.close()
    resumed = open_writer(config, str(tmp_path), start_step=2)
    for step in (3, 4):
        resumed.scalars(step, {"train/loss": 10.0 * step})
    resumed.close()
    assert series(read_events(tmp_path), "train/loss") == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_images_are_drawn_at_a_bounded_number_of_evaluations():
    from fno_jax.training.cadence import Cadence, image_cadence

    # 1,000 steps evaluated every 30: images every 4th evaluation (120 steps), 8 times, and at the last step.
    cadence = Cadence.from_config(tiny_config(**{"train.num_steps": 1000, "train.eval_every": 30}))
    drawn = [s for s in range(1, 1001) if cadence.evaluate.due(s) and image_cadence(cadence, 10).due(s)]
    assert drawn == [120, 240, 360, 480, 600, 720, 840, 960, 1000]
    assert image_cadence(cadence, 1000).steps == 30  # more allowed than evaluations: every evaluation


def test_scalar_tags_name_the_split():
    record = {"step": 5, "best": True, "train_loss": 1.0, "grad_norm": 2.0, "learning_rate": 3.0,
              "val_rel_h1": 4.0, "test_rel_l2_bands": {"low": 5.0, "mid": 6.0, "high": 0.0}}  # fmt: skip
    assert scalar_tags(record) == {"train/loss": 1.0, "train/grad_norm": 2.0, "train/learning_rate": 3.0,
                                   "val/rel_h1": 4.0, "test/rel_l2_band_low": 5.0, "test/rel_l2_band_mid": 6.0,
                                   "test/rel_l2_band_high": 0.0}  # fmt: skip


def test_field_images_share_the_targets_colors():
    target = np.sin(np.linspace(0, 6, 32 * 32)).reshape(1, 32, 32)
    images = field_images({"source": target, "solution": target, "prediction": target.copy()}, "val")
    assert sorted(images) == ["val/0/error", "val/0/prediction", "val/0/source", "val/0/target"]
    assert all(v.shape == (128, 128, 3) and v.dtype == np.uint8 for v in images.values())
    np.testing.assert_array_equal(images["val/0/prediction"], images["val/0/target"])
    assert len(np.unique(images["val/0/error"].reshape(-1, 3), axis=0)) == 1  # zero error: one color


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("logging.images", -1, r"config\.logging\.images=-1 must be >= 0"),
     ("logging.wandb_mode", "cloud", r"config\.logging\.wandb_mode='cloud' is not one of")],
)  # fmt: skip
def test_bad_logging_config(key, value, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(tiny_config(**{key: value}))


def test_wandb_asked_for_without_the_package_is_refused_before_work():
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"config\.logging\.wandb=True needs the wandb package.*pip install"):
            validate_config(tiny_config(**{"logging.wandb": True}))
    else:
        pytest.skip("wandb is installed here")


def test_wandb_offline_run(tmp_path):
    pytest.importorskip("wandb")
    from fno_jax import train

    overrides = {"logging.wandb": True, "logging.wandb_mode": "offline", "train.num_steps": 2, "train.eval_every": 2}
    train.train_and_evaluate(tiny_config(**overrides), str(tmp_path))
    runs = [d for d in os.listdir(tmp_path / "wandb") if d.startswith("offline-run-")]
    assert len(runs) == 1
