"""TensorBoard events beside metrics.jsonl: the same values, a before/after image per
evaluation, each step once after a resume, read back with TensorBoard's own reader."""

import json
import shutil

import numpy as np
import pytest

from n2v_jax.training import config as train_config
from n2v_jax.training import tensorboard
from n2v_jax.training import trainer
from n2v_jax.workdir import saved_config
from tests.helpers import tensorboard_events, tiny_config

pytest.importorskip("tensorboard", reason="tensorboard (the event reader) is not installed")


def _metrics(workdir):
  return [json.loads(l) for l in open(workdir / "metrics.jsonl")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("tb") / "w"
  trainer.train_and_evaluate(tiny_config(), str(workdir))  # logs and evaluates at 2, 4, 6
  return workdir


def test_events_hold_the_metrics_and_a_preview_per_evaluation(trained):
  scalars, images = tensorboard_events(trained)
  rows = _metrics(trained)
  for tag, key in (("loss/train", "train_loss"), ("loss/validation", "val_loss"),
                   ("optimizer/learning_rate", "learning_rate"),
                   ("speed/patches_per_s", "patches_per_s")):
    assert [s for s, _ in scalars[tag]] == [r["step"] for r in rows] == [2, 4, 6]
    np.testing.assert_allclose([v for _, v in scalars[tag]], [r[key] for r in rows],
                               rtol=1e-6)
  previews = images["preview/noisy_vs_denoised"]
  assert [s for s, _ in previews] == [2, 4, 6]
  patch = tiny_config().data.patch_shape
  for _, image in previews:  # noisy | gap | denoised, one 16x16 channel
    assert image.shape[:2] == (patch[0], 2 * patch[1] + 2)
    noisy, denoised = image[:, :patch[1]], image[:, -patch[1]:]
    assert noisy.std() > 0 and not np.array_equal(noisy, denoised)


def test_resume_shows_each_step_once(trained, tmp_path):
  # A run preempted after logging step 6 but before its checkpoint: resumed from step 4,
  # it trains and logs 5-6 again; TensorBoard must show the new step 6 only.
  workdir = tmp_path / "w"
  shutil.copytree(trained, workdir)
  shutil.rmtree(workdir / "checkpoints" / "6")
  before, _ = tensorboard_events(workdir)
  trainer.train_and_evaluate(tiny_config(), str(workdir))
  after, images = tensorboard_events(workdir)
  rows = _metrics(workdir)
  assert [s for s, _ in after["loss/train"]] == [r["step"] for r in rows] == [2, 4, 6]
  assert [v for _, v in after["loss/train"]][:2] == [v for _, v in before["loss/train"]][:2]
  np.testing.assert_allclose(after["loss/train"][-1][1], rows[-1]["train_loss"], rtol=1e-6)
  assert [s for s, _ in images["preview/noisy_vs_denoised"]] == [2, 4, 6]


def test_switch_off_and_old_workdirs():
  assert tiny_config().train.tensorboard  # on by default
  old = saved_config.to_dict(tiny_config())
  del old["train"]["tensorboard"]  # a config.json written before the switch existed
  assert train_config.incompatible_changes(old, saved_config.to_dict(tiny_config())) == []
  assert saved_config.with_added_fields(old)["train"]["tensorboard"] is False


def test_before_after_image_3d_multichannel():
  rng = np.random.default_rng(0)
  noisy = rng.normal(size=(4, 8, 10, 6)).astype(np.float32)  # Z, Y, X, C
  image = tensorboard.before_after(noisy, noisy * 0)
  rows = tensorboard.PREVIEW_CHANNELS
  assert image.shape == (rows * 8 + (rows - 1) * 2, 2 * 10 + 2)
  assert 0 <= image.min() and image.max() <= 1
