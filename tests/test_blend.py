"""The SURE blend with the noisy input (inference.sure_blend): against the oracle weight
on synthetic images with known ground truth, degenerate inputs, and in prediction."""

import json
import os

import numpy as np
import pytest

from n2v_jax.inference import blend as blend_lib
from n2v_jax.inference import predictor
from n2v_jax.training import trainer
from n2v_jax.inference.options import PredictOptions
from tests.helpers import noisy_stack, tiny_config, write_tiff


def _smooth_image(shape, seed):
  """A smooth (*spatial, C) ground truth: a few low-frequency sinusoids per channel."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape[:2]], indexing="ij")
  chans = []
  for _ in range(shape[2]):
    f = sum(np.sin(rng.uniform(0.1, 0.4) * yy + rng.uniform(0.1, 0.4) * xx + rng.uniform(0, 6))
            for _ in range(4))
    chans.append(f)
  return np.stack(chans, -1)


def _filter(kernel):
  """A linear 'denoiser': a 3x3 filter per channel with reflect padding."""
  def apply(x):
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    h, w = x.shape[:2]
    return sum(kernel[i, j] * xp[i:i + h, j:j + w] for i in range(3) for j in range(3))
  return apply


BOX = np.full((3, 3), 0.12)  # a blur that lets a little of each pixel through: sums to 1
BOX[1, 1] = 0.04
BLIND = np.full((3, 3), 1 / 8)  # the 8 neighbours only: a blind-spot denoiser
BLIND[1, 1] = 0.0


@pytest.mark.parametrize("kernel", [BOX, BLIND], ids=["box", "blind_spot"])
def test_weight_is_close_to_the_oracle_and_lowers_the_error(kernel):
  clean = _smooth_image((160, 144, 2), 0)
  sigmas = np.array([0.3, 0.8])  # one noise level per channel, each estimated on its own
  noisy = clean + np.random.default_rng(1).standard_normal(clean.shape) * sigmas
  f = _filter(kernel)
  y = f(noisy)
  probe = np.random.default_rng(2).standard_normal(noisy.shape)
  k = blend_lib.blend_weights(noisy, y, probe, f(probe))  # linear: J @ probe = f(probe)
  grid = np.linspace(0, 1, 201)
  for c in range(2):
    mse = [np.mean(((1 - g) * y[..., c] + g * noisy[..., c] - clean[..., c]) ** 2) for g in grid]
    oracle = grid[int(np.argmin(mse))]
    assert 0.05 < oracle < 0.95  # the test has something to find
    assert abs(k[c] - oracle) < 0.05, (c, k, oracle)
    blended = np.mean(((1 - k[c]) * y[..., c] + k[c] * noisy[..., c] - clean[..., c]) ** 2)
    assert blended < np.mean((y[..., c] - clean[..., c]) ** 2)
    assert blended < 1.02 * min(mse)


def test_sure_blend_uses_the_probe_through_the_denoiser():
  clean = _smooth_image((96, 96, 1), 3)
  noisy = (clean + 0.5 * np.random.default_rng(4).standard_normal(clean.shape)).astype(np.float32)
  f = _filter(BLIND)
  calls = []
  def denoise(x):
    calls.append(x.copy())
    return f(x).astype(np.float32)
  y = denoise(noisy)
  out = blend_lib.sure_blend(denoise, noisy, y)
  assert len(calls) == 2 and not np.array_equal(calls[1], noisy)  # one more, perturbed pass
  np.testing.assert_array_equal(out, blend_lib.sure_blend(denoise, noisy, y))  # deterministic
  assert np.mean((out - clean) ** 2) < np.mean((y - clean) ** 2)


def test_no_estimate_means_no_blend():
  flat = np.ones((32, 32, 1), np.float32)  # no noise, no residual
  probe = np.random.default_rng(0).standard_normal(flat.shape)
  assert blend_lib.blend_weights(flat, flat, probe, probe * 0.1).tolist() == [0.0]
  line = np.random.default_rng(1).standard_normal((1, 50, 2))  # an edge under 2 pixels
  assert blend_lib.blend_weights(line, line * 0.5, line, line).tolist() == [0.0, 0.0]


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  d = tmp_path_factory.mktemp("blend")
  path = write_tiff(d / "train.tif", noisy_stack(0, (3, 48, 48)), "CYX")
  out = {}
  for blend in (False, True):
    config = tiny_config(**{"data.path": path, "data.axes": "CYX", "train.num_steps": 4,
                            "model.depth": 2, "data.patch_shape": (16, 16),
                            "predict.blend": blend})
    trainer.train_and_evaluate(config, str(d / f"w{int(blend)}"))
    out[blend] = str(d / f"w{int(blend)}")
  return out


def test_prediction_default_follows_the_config_and_tiles_stay_exact(workdirs):
  image = noisy_stack(3, (97, 75, 3))
  off = predictor.load_predictor(workdirs[False])
  on = predictor.load_predictor(workdirs[True])
  assert not off.blend and on.blend
  assert json.load(open(os.path.join(workdirs[True], "model.json")))["predict_blend"] is True
  plain = predictor.predict_image(off, image, PredictOptions(tile=0))
  np.testing.assert_array_equal(
      plain, predictor.predict_image(off, image, PredictOptions(tile=0, blend=False)))
  blended = predictor.predict_image(off, image, PredictOptions(tile=0, blend=True))
  assert not np.allclose(blended, plain)
  # the blend lies between the prediction and the input, per channel
  k = [np.median((blended[..., c] - plain[..., c]) / (image[..., c] - plain[..., c] + 1e-12))
       for c in range(3)]
  assert all(0 < v <= 1 for v in k), k
  tile = 2 * off.halo + 3 * off.divisor
  np.testing.assert_allclose(
      predictor.predict_image(off, image, PredictOptions(tile=tile, blend=True)), blended,
      rtol=1e-4, atol=1e-3 * image.std())
  variants = predictor.predict_variants(off, image, PredictOptions(tile=0), blend=True)
  np.testing.assert_array_equal(variants[False], plain)
  np.testing.assert_array_equal(variants[True], blended)
  # blend=False overrides the model's default: the network alone
  np.testing.assert_array_equal(
      predictor.predict_image(on, image, PredictOptions(tile=0, blend=False)),
      predictor.predict_variants(on, image, PredictOptions(tile=0))[False])
