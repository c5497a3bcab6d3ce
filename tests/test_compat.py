"""Workdirs written by the jax 0.10.2 release of n2v_jax (Python 3.11) load and resume on
the current JAX. The fixture was trained with configs/test_tiny.py (keep_checkpoints=1)
and its prediction of `probe_input.npy` saved beside it, both under jax 0.10.2."""

import json
import os
import shutil

import numpy as np

from n2v_jax.inference import predictor
from n2v_jax.training import trainer
from n2v_jax.inference.options import PredictOptions
from tests.helpers import REPO, tiny_config

FIXTURE = os.path.join(REPO, "tests", "data", "workdir_jax0.10.2")


def _copy(tmp_path):
  workdir = tmp_path / "old"
  shutil.copytree(FIXTURE, workdir)  # never write into the committed fixture
  return workdir


def test_old_workdir_predicts_as_it_did(tmp_path):
  workdir = _copy(tmp_path)
  probe = np.load(os.path.join(FIXTURE, "probe_input.npy"))
  expected = np.load(os.path.join(FIXTURE, "probe_output.npy"))
  out = predictor.predict_image(predictor.load_predictor(str(workdir)), probe,
                                PredictOptions(tile=0))
  assert out.shape == expected.shape
  # Other XLA versions round differently; the weights and the network are the same.
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  assert np.abs(out - probe).max() > 1e-2  # the model does something, so equality means something


def test_old_workdir_resumes(tmp_path):
  workdir = _copy(tmp_path)
  config = tiny_config()
  config.train.keep_checkpoints = 1
  config.train.num_steps = 8  # a resumable change: continue the old run by 2 steps
  trainer.train_and_evaluate(config, str(workdir))
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [2, 4, 6, 8]
  assert np.isfinite(rows[-1]["train_loss"])
