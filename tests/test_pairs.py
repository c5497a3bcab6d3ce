"""n2n and care (config.algorithm): training pairs through the one data pipeline."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n2v_jax.data import dataset as dataset_lib
from n2v_jax.data import sampling
from n2v_jax.training import config as train_config
from n2v_jax.training import steps
from n2v_jax.training import trainer
from tests.helpers import REPO, noisy_stack, tiny_config, write_tiff

OFFSET = 1000.0  # target = input + OFFSET: any misaligned crop or flip shows


def _pair_files(tmp_path, shape=(3, 40, 48)):
  noisy = noisy_stack(0, shape)
  write_tiff(tmp_path / "in.tif", noisy, "TYX")
  write_tiff(tmp_path / "target.tif", noisy + OFFSET, "TYX")
  return str(tmp_path / "in.tif"), str(tmp_path / "target.tif")


def _dataset(tmp_path, algorithm="care", **overrides):
  inp, target = _pair_files(tmp_path)
  config = tiny_config(**{"algorithm": algorithm, "data.path": inp, "data.target_path": target,
                          **overrides})
  train_config.validate(config)
  return dataset_lib.load(config.data, 0, 2, algorithm=algorithm), config


def _assert_aligned(patches_2C, std):
  inputs, targets = np.split(np.asarray(patches_2C), 2, axis=-1)
  np.testing.assert_allclose(targets - inputs, OFFSET / std[0], rtol=1e-4)
  assert inputs.std() > 0.1  # real image content, not a constant


def test_device_patches_pair_input_and_target_at_the_same_place_and_flip(tmp_path):
  ds, _ = _dataset(tmp_path)
  assert ds.in_channels == 1 and ds.train_NSC.shape[-1] == 2
  patches = sampling.sample_batch(jax.random.key(0), jnp.asarray(ds.train_NSC),
                                  jnp.asarray(ds.train_sizes), ds.patch, 64, True)
  _assert_aligned(patches, ds.std)
  _assert_aligned(ds.val_inputs, ds.std)
  # the input half is what the n2v pipeline gives for the same file, bit for bit
  n2v = dataset_lib.load(tiny_config(**{"data.path": str(tmp_path / "in.tif")}).data, 0, 2)
  np.testing.assert_array_equal(ds.mean, n2v.mean)
  np.testing.assert_array_equal(ds.std, n2v.std)
  np.testing.assert_array_equal(ds.train_NSC[..., :1], n2v.train_NSC)
  np.testing.assert_array_equal(ds.val_inputs[..., :1], n2v.val_inputs)


def test_streamed_patches_pair_input_and_target(tmp_path):
  ds, _ = _dataset(tmp_path, **{"data.streaming": True})
  sampler = ds.sampler(16, True, seed=0)
  for step in range(3):
    _assert_aligned(sampler.batch(step), ds.std)
  assert len({int(s) for step in range(3) for s in sampler.draw(step)[2]}) > 4  # flips used


def test_pairs_are_scored_at_every_pixel_without_blind_spots(tmp_path):
  ds, config = _dataset(tmp_path)
  spec = steps.step_spec(config, ds.patch)
  batch = jnp.asarray(ds.val_inputs)
  net_in, target, loss_mask = steps.network_inputs(jax.random.key(0), batch, spec)
  np.testing.assert_array_equal(net_in, batch[..., :1])  # the input, unmasked
  np.testing.assert_array_equal(target, batch[..., 1:])
  assert bool(loss_mask.all())
  n2v_spec = steps.step_spec(tiny_config(), ds.patch)
  masked, target, loss_mask = steps.network_inputs(jax.random.key(0), batch[..., :1], n2v_spec)
  assert 0 < float(loss_mask.mean()) < 0.2 and not np.array_equal(masked, target)


@pytest.mark.parametrize("overrides, message", [
    ({"algorithm": "care", "data.path": "x.tif"}, "set data.target_path"),
    ({"algorithm": "n2v", "data.target_path": "t.tif"}, "used only by config.algorithm"),
    ({"algorithm": "pairs"}, "config.algorithm='pairs': expected one of n2v, n2n, care"),
])
def test_config_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    train_config.validate(tiny_config(**overrides))


def test_targets_that_do_not_match_the_inputs(tmp_path):
  inp, _ = _pair_files(tmp_path)
  write_tiff(tmp_path / "small.tif", noisy_stack(1, (3, 40, 40)), "TYX")
  config = tiny_config(**{"algorithm": "n2n", "data.path": inp,
                          "data.target_path": str(tmp_path / "small.tif")})
  with pytest.raises(ValueError, match="data.target_path=.*small.tif: shapes do not match"):
    dataset_lib.load(config.data, 0, 2, algorithm="n2n")
  with pytest.raises(ValueError, match="a separate validation set has no targets"):
    _dataset(tmp_path, **{"data.val_path": inp})


@pytest.mark.parametrize("algorithm", ["n2n", "care"])
def test_synthetic_pairs_train_and_denoise(tmp_path, algorithm):
  config = tiny_config(**{"algorithm": algorithm, "train.num_steps": 40, "train.log_every": 20,
                          "train.eval_every": 20, "train.checkpoint_every": 40,
                          "opt.learning_rate": 3e-3, "model.features": 8})
  summary = trainer.train_and_evaluate(config, str(tmp_path / "w"))
  assert summary["psnr_denoised"] > summary["psnr_noisy"] + 3  # learns from its targets
  meta = json.load(open(tmp_path / "w" / "model.json"))
  assert meta["algorithm"] == algorithm and meta["in_channels"] == 1


def test_command_line_care_on_the_built_in_pairs(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "n2v_jax.train", "--config", "configs/test_tiny.py",
       "--workdir", str(tmp_path / "w"), "--config.algorithm=care"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert json.loads(out.stdout[out.stdout.index("{"):])["psnr_denoised"] > 0
  bad = subprocess.run(
      [sys.executable, "-m", "n2v_jax.train", "--config", "configs/test_tiny.py",
       "--workdir", str(tmp_path / "x"), "--config.algorithm=care",
       f"--config.data.path={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith(
      "error: config.algorithm='care' trains on pairs")
  assert not (tmp_path / "x").exists()
