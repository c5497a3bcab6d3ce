"""K models in one vmapped program equal K separate runs (float tolerance)."""

import json

import jax
import numpy as np
import pytest

from n2v_jax.inference import predictor
from n2v_jax.training import multi
from n2v_jax.training import trainer
from tests.helpers import tensorboard_events, tiny_config

# Seeds and peak learning rates of the three models: two share a seed, two a rate.
POINTS = [(0, 1e-3), (1, 1e-3), (0, 3e-3)]


def _configs(**overrides):
  # No batch norm: a conv bias in front of batch norm has a gradient of pure rounding
  # noise, which Adam scales up to full-size (harmless, output-neutral) steps; without it
  # every parameter can be compared tightly.
  return [tiny_config(**{"seed": s, "opt.learning_rate": lr, "model.batch_norm": False,
                         **overrides}) for s, lr in POINTS]


def _leaves(workdir):
  return [np.asarray(x) for x in jax.tree.leaves(predictor.load_predictor(str(workdir)).variables)]


def test_vmapped_models_equal_separate_runs(tmp_path):
  configs = _configs()
  dirs = [tmp_path / f"m{i}" for i in range(len(configs))]
  summaries = multi.train_many(configs, [str(d) for d in dirs], mode="vmap")
  # lax.map over the models (mode="map") runs the same per-model step.
  mapped = [tmp_path / f"map{i}" for i in range(len(configs))]
  multi.train_many(configs, [str(d) for d in mapped], mode="map")
  for d, m in zip(dirs, mapped):
    for a, b in zip(_leaves(d), _leaves(m)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for i, (config, d, s) in enumerate(zip(configs, dirs, summaries)):
    alone = trainer.train_and_evaluate(config, str(tmp_path / f"alone{i}"))
    for a, b in zip(_leaves(d), _leaves(tmp_path / f"alone{i}")):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert s["psnr_denoised"] == pytest.approx(alone["psnr_denoised"], abs=1e-3)
    rows = [json.loads(l) for l in open(d / "metrics.jsonl")]
    rows_alone = [json.loads(l) for l in open(tmp_path / f"alone{i}" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [r["step"] for r in rows_alone]
    np.testing.assert_allclose([r["val_loss"] for r in rows],
                               [r["val_loss"] for r in rows_alone], rtol=1e-4)
    np.testing.assert_allclose([r["learning_rate"] for r in rows],
                               [r["learning_rate"] for r in rows_alone], rtol=1e-6)
    # each workdir has its own TensorBoard events: its own losses and preview images
    scalars, images = tensorboard_events(d)
    _, images_alone = tensorboard_events(tmp_path / f"alone{i}")
    np.testing.assert_allclose([v for _, v in scalars["loss/validation"]],
                               [r["val_loss"] for r in rows], rtol=1e-6)
    for (_, a), (_, b) in zip(images["preview/noisy_vs_denoised"],
                              images_alone["preview/noisy_vs_denoised"], strict=True):
      assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # uint8, float rounding
  # The models really differ: another seed or rate gives other parameters.
  assert not np.allclose(_leaves(dirs[0])[0], _leaves(dirs[1])[0])
  assert not np.allclose(_leaves(dirs[0])[0], _leaves(dirs[2])[0])


def test_models_with_other_masking_equal_separate_runs(tmp_path):
  # perc_pix sets the static number of blind spots: each model masks with its own settings.
  masks = [(1.5, "uniform_withoutCP", 0), (10.0, "median", 1), (5.0, "uniform_withCP", 0)]
  configs = [tiny_config(**{"seed": seed, "mask.perc_pix": perc, "mask.strategy": strategy,
                            "model.batch_norm": False}) for perc, strategy, seed in masks]
  dirs = [tmp_path / f"m{i}" for i in range(len(configs))]
  multi.train_many(configs, [str(d) for d in dirs], mode="vmap")
  mapped = [tmp_path / f"map{i}" for i in range(len(configs))]
  multi.train_many(configs, [str(d) for d in mapped], mode="map")
  for i, (config, d, m) in enumerate(zip(configs, dirs, mapped)):
    trainer.train_and_evaluate(config, str(tmp_path / f"alone{i}"))
    for a, b, c in zip(_leaves(d), _leaves(tmp_path / f"alone{i}"), _leaves(m)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
      np.testing.assert_allclose(c, b, rtol=1e-4, atol=1e-6)
    rows = [json.loads(l) for l in open(d / "metrics.jsonl")]
    rows_alone = [json.loads(l) for l in open(tmp_path / f"alone{i}" / "metrics.jsonl")]
    np.testing.assert_allclose([r["val_loss"] for r in rows],
                               [r["val_loss"] for r in rows_alone], rtol=1e-4)
    assert json.load(open(d / "config.json"))["mask"]["perc_pix"] == masks[i][0]
  # Same seed, other masking: other parameters.
  assert not np.allclose(_leaves(dirs[0])[0], _leaves(dirs[2])[0])


def test_rejects_static_differences(tmp_path):
  configs = [tiny_config(), tiny_config(**{"model.features": 8})]
  with pytest.raises(ValueError, match="model.features"):
    multi.train_many(configs, [str(tmp_path / "a"), str(tmp_path / "b")])
  assert not (tmp_path / "a").exists()
