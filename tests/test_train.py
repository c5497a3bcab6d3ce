"""End-to-end training: a few steps, exact resume, logs, and bad inputs."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from n2v_jax import errors
from n2v_jax.inference import predictor
from n2v_jax.training import config as train_config
from n2v_jax.training import steps
from n2v_jax.training import trainer
from n2v_jax.workdir import checkpoint
from tests.helpers import REPO, noisy_stack, tiny_config, write_tiff


def _params(workdir, config):
  return predictor.load_predictor(str(workdir)).variables


def test_train_writes_outputs(tmp_path):
  summary = trainer.train_and_evaluate(tiny_config(), str(tmp_path))
  for name in ("config.json", "model.json", "metrics.jsonl", "loss.png", "summary.json",
               "before_after.png"):
    assert (tmp_path / name).exists(), name
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [2, 4, 6]
  assert all(np.isfinite(r["train_loss"]) and r["patches_per_s"] > 0 for r in rows)
  assert all("val_loss" in r for r in rows)
  assert summary["psnr_noisy"] == pytest.approx(json.load(open(tmp_path / "summary.json"))["psnr_noisy"])
  cfg = json.load(open(tmp_path / "config.json"))
  assert cfg["runtime"]["devices"] >= 1 and cfg["train"]["num_steps"] == 6
  assert checkpoint.latest_step(str(tmp_path)) == 6


def test_exact_resume_bit_for_bit(tmp_path):
  config = tiny_config(**{"opt.schedule": "plateau", "opt.plateau_patience": 1})
  full, split = tmp_path / "full", tmp_path / "split"
  trainer.train_and_evaluate(config, str(full))
  assert trainer.train_and_evaluate(config, str(split), stop_after=3) == {"stopped_at": 3}
  assert checkpoint.latest_step(str(split)) == 3
  trainer.train_and_evaluate(config, str(split))  # the same call again resumes
  a, b = _params(full, config), _params(split, config)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  steps_full = [json.loads(l)["step"] for l in open(full / "metrics.jsonl")]
  steps_split = [json.loads(l)["step"] for l in open(split / "metrics.jsonl")]
  assert steps_full == steps_split == [2, 4, 6]


def test_resume_rejects_different_config(tmp_path):
  trainer.train_and_evaluate(tiny_config(), str(tmp_path), stop_after=2)
  with pytest.raises(ValueError, match="different config.*model.features"):
    trainer.train_and_evaluate(tiny_config(**{"model.features": 8}), str(tmp_path))


def test_non_finite_loss_stops_with_step(tmp_path):
  config = tiny_config(**{"opt.learning_rate": 1e30, "opt.schedule": "constant",
                          "train.num_steps": 8, "train.checkpoint_every": 2})
  with pytest.raises(errors.NonFiniteLossError, match=r"non-finite training loss at step \d+"):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_multichannel_file_training(tmp_path):
  path = write_tiff(tmp_path / "cyx.tif", noisy_stack(0, (3, 48, 40), np.uint16), "CYX")
  config = tiny_config(**{"data.path": path, "data.axes": "CYX", "train.num_steps": 2})
  trainer.train_and_evaluate(config, str(tmp_path / "w"))
  meta = json.load(open(tmp_path / "w" / "model.json"))
  assert meta["in_channels"] == 3 and len(meta["mean"]) == 3


def test_3d_training(tmp_path):
  path = write_tiff(tmp_path / "zyx.tif", noisy_stack(1, (12, 24, 24)), "ZYX")
  config = tiny_config(**{"data.path": path, "data.axes": "ZYX", "train.num_steps": 2,
                          "data.patch_shape": (8, 16, 16), "data.val_fraction": 0.0})
  trainer.train_and_evaluate(config, str(tmp_path / "w"))
  assert json.load(open(tmp_path / "w" / "model.json"))["spatial_axes"] == "ZYX"


@pytest.mark.parametrize("overrides, message", [
    ({"data.path": "/nonexistent/x.tif"}, "no such file"),
    ({"data.patch_shape": (128, 128)}, "smaller than data.patch_shape"),
    ({"mask.strategy": "bogus"}, "mask.strategy='bogus'"),
    ({"data.patch_shape": (15, 15)}, "multiple of"),
    # the architecture study's trap: a centre-free, deterministic replacement + residual
    ({"mask.strategy": "median", "model.residual": True}, "adds the raw noisy pixel back"),
    ({"mask.strategy": "mean", "model.residual": True}, "adds the raw noisy pixel back"),
])
def test_bad_config_or_data(tmp_path, overrides, message):
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    trainer.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "w"))


def test_residual_allowed_with_random_replacement():
  for strategy in ("uniform_withCP", "uniform_withoutCP"):
    train_config.validate(tiny_config(**{"mask.strategy": strategy, "model.residual": True}))


def test_nan_in_data(tmp_path):
  data = noisy_stack(0, (48, 48))
  data[5, 7] = np.nan
  path = write_tiff(tmp_path / "nan.tif", data, "YX")
  with pytest.raises(ValueError, match="nan.tif.*NaN"):
    trainer.train_and_evaluate(tiny_config(**{"data.path": path}), str(tmp_path / "w"))


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                        text=True, env=env, timeout=300)


@pytest.mark.parametrize("make_input, axes, message", [
    (lambda d: str(d / "missing.tif"), "YX", "no such file"),
    (lambda d: (d / "corrupt.tif").write_bytes(b"not a tiff at all" * 10) and str(d / "corrupt.tif"),
     "YX", "not a readable TIFF"),
    (lambda d: write_tiff(d / "cyx.tif", noisy_stack(0, (3, 48, 48)), "CYX"), "SZYX",
     "axes 'SZYX'"),
])
def test_train_cli_errors_are_one_line(tmp_path, make_input, axes, message):
  path = make_input(tmp_path)
  before = sorted(os.listdir(tmp_path))
  r = _cli("n2v_jax.train", "--config", "configs/test_tiny.py", "--workdir", str(tmp_path / "w"),
           f"--config.data.path={path}", f"--config.data.axes={axes}")
  assert r.returncode == 1
  assert "Traceback" not in r.stderr
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], r.stderr
  assert sorted(os.listdir(tmp_path)) == before  # no workdir, nothing changed


@pytest.mark.parametrize("args, message", [
    (["--config.data.pathx=1"], 'unknown config field \'pathx\' in --config.data.pathx (did you mean "path"?)'),
    (["--config.train.num_steps=abc"], "num_steps"),
    (["--config.mask.strategy=bogus"], "mask.strategy='bogus'"),
])
def test_train_cli_config_errors(tmp_path, args, message):
  r = _cli("n2v_jax.train", "--config", "configs/test_tiny.py", "--workdir", str(tmp_path / "w"),
           *args)
  assert r.returncode == 1 and "Traceback" not in r.stderr
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], r.stderr
  assert not (tmp_path / "w").exists()


def test_numpy_array_and_npy_file(tmp_path):
  stack = noisy_stack(2, (3, 40, 40))
  config = tiny_config(**{"data.axes": "SYX", "train.num_steps": 2})
  trainer.train_and_evaluate(config, str(tmp_path / "a"), array=stack)
  assert json.load(open(tmp_path / "a" / "model.json"))["in_channels"] == 1
  np.save(tmp_path / "s.npy", stack)
  config = tiny_config(**{"data.path": str(tmp_path / "s.npy"), "data.axes": "SYX",
                          "train.num_steps": 2})
  trainer.train_and_evaluate(config, str(tmp_path / "b"))
  a, b = _params(tmp_path / "a", config), _params(tmp_path / "b", config)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # same data, same run
  with pytest.raises(ValueError, match="set data.axes"):
    trainer.train_and_evaluate(tiny_config(), str(tmp_path / "c"), array=stack)


def test_grad_clip_clips_the_gradient_before_adam():
  """opt.grad_clip=c feeds Adam the gradient scaled to global norm c when it is longer, and
  leaves shorter ones alone: equal to unclipped Adam given the pre-scaled gradients."""
  import jax.numpy as jnp
  import ml_collections
  g_long = {"a": jnp.full((4,), 3.0), "b": jnp.array([[4.0]])}  # global norm sqrt(36 + 16)
  g_short = {"a": jnp.full((4,), 0.1), "b": jnp.array([[-0.2]])}  # norm 0.28 < 1.5
  scale = 1.5 / float(np.sqrt(52.0))
  clipped = steps.make_optimizer(ml_collections.ConfigDict({"grad_clip": 1.5}))
  plain = steps.make_optimizer(ml_collections.ConfigDict({"grad_clip": 0.0}))
  s_c, s_p = clipped.init(g_long), plain.init(g_long)
  for g_c, g_p in ((g_long, jax.tree.map(lambda x: x * scale, g_long)), (g_short, g_short)):
    d_c, s_c = clipped.update(g_c, s_c)
    d_p, s_p = plain.update(g_p, s_p)
    for x, y in zip(jax.tree.leaves(d_c), jax.tree.leaves(d_p)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)
  # and clipping changed Adam's second step: the unscaled long gradient gives another one
  d_u, s_u = plain.update(g_long, plain.init(g_long))
  d_u, _ = plain.update(g_short, s_u)
  assert not np.allclose(np.asarray(d_u["a"]), np.asarray(d_c["a"]), rtol=1e-3)
