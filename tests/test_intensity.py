"""data.transform: the Anscombe transform before normalization, inverted after prediction."""

import numpy as np
import pytest

from n2v_jax.data import dataset as dataset_lib
from n2v_jax.data import normalizer
from n2v_jax.data import sources
from n2v_jax.inference import predictor
from n2v_jax.training import config as train_config
from n2v_jax.training import trainer
from n2v_jax.workdir import saved_config
from tests.helpers import tiny_config, write_tiff


def test_anscombe_round_trip_and_no_input_change():
  x = np.array([0, 0.5, 3, 20, 400, 65535], np.float32)
  before = x.copy()
  y = normalizer.forward(x, "anscombe")
  np.testing.assert_array_equal(x, before)
  np.testing.assert_allclose(normalizer.inverse(y.copy(), "anscombe"), x, rtol=1e-5, atol=1e-3)
  assert normalizer.forward(x, "none") is x and normalizer.inverse(x, "none") is x
  # below zero: clipped to 0 (counts), and a negative prediction maps to the lowest count
  assert normalizer.forward(np.array([-5.0]), "anscombe")[0] == pytest.approx(2 * np.sqrt(0.375))
  assert normalizer.inverse(np.array([-1.0], np.float32), "anscombe")[0] == pytest.approx(-0.375)
  with pytest.raises(ValueError, match="data.transform='log': expected one of none, anscombe"):
    normalizer.forward(x, "log")


@pytest.mark.parametrize("lam", [20, 200, 5000])
def test_anscombe_stabilizes_poisson_variance(lam):
  counts = np.random.default_rng(lam).poisson(lam, 200_000).astype(np.float32)
  assert counts.std() == pytest.approx(np.sqrt(lam), rel=0.02)  # grows with intensity
  assert normalizer.forward(counts, "anscombe").std() == pytest.approx(1.0, abs=0.03)


def _poisson_image(tmp_path, shape=(64, 64)):
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  signal = 30 + 3000 * (np.sin(yy / 6.0) * np.cos(xx / 9.0)) ** 2  # 30..3030 counts
  noisy = np.random.default_rng(0).poisson(signal).astype(np.uint16)
  return write_tiff(tmp_path / "p.tif", noisy, "YX"), noisy


def test_statistics_are_of_the_transformed_data_in_memory_and_streaming(tmp_path):
  path, noisy = _poisson_image(tmp_path)
  config = tiny_config(**{"data.path": path, "data.transform": "anscombe"})
  ds = dataset_lib.build_dataset(config.data, sources.open_source(config.data, 0), (16, 16), 0)
  train_rows = noisy[:ds.train_sizes[0][0]].astype(np.float64)
  transformed = 2 * np.sqrt(train_rows + 0.375)
  np.testing.assert_allclose(ds.mean, [transformed.mean()], rtol=1e-6)
  np.testing.assert_allclose(ds.std, [transformed.std()], rtol=1e-5)
  assert ds.transform == "anscombe"
  config.data.streaming = True
  sds = dataset_lib.build_dataset(config.data, sources.open_source(config.data, 0), (16, 16), 0)
  np.testing.assert_allclose(sds.mean, ds.mean, rtol=1e-6)
  np.testing.assert_allclose(sds.val_inputs, ds.val_inputs, rtol=1e-6, atol=1e-6)
  patch = sds.sampler(4, False, 0).batch(0)
  assert abs(float(patch.mean())) < 2 and patch.std() < 3  # normalized, not raw counts


def test_train_and_predict_in_data_units(tmp_path):
  path, noisy = _poisson_image(tmp_path)
  config = tiny_config(**{"data.path": path, "data.transform": "anscombe",
                          "data.patch_shape": (16, 16), "train.num_steps": 2})
  trainer.train_and_evaluate(config, str(tmp_path / "w"))
  pred = predictor.load_predictor(str(tmp_path / "w"))
  assert pred.meta.transform == "anscombe" and pred.transform == "anscombe"
  out = predictor.predict_image(pred, noisy[..., None].astype(np.float32))
  # counts in, counts out: after 2 steps not a denoiser, but on the input's scale
  assert out.shape == (64, 64, 1) and out.dtype == np.float32
  assert 0.2 * noisy.mean() < out.mean() < 5 * noisy.mean()
  bad = tiny_config(**{"data.transform": "sqrt"})
  with pytest.raises(ValueError, match=r"config.data.transform='sqrt': expected one of none, "):
    train_config.validate(bad)


def test_old_workdirs_without_transform_resume_unchanged():
  saved = saved_config.to_dict(tiny_config())
  del saved["data"]["transform"]
  assert train_config.incompatible_changes(saved, saved_config.to_dict(tiny_config())) == []
  assert train_config.incompatible_changes(
      saved, saved_config.to_dict(tiny_config(**{"data.transform": "anscombe"}))) == ["data.transform"]
