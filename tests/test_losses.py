import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n2v_jax.nn.losses import LOSSES, masked_mae, masked_mse


def test_known_values():
  pred = jnp.array([1.0, 2.0, 3.0, -4.0])
  target = jnp.zeros(4)
  mask = jnp.array([True, False, True, True])
  assert float(masked_mse(pred, target, mask)) == pytest.approx((1 + 9 + 16) / 3)
  assert float(masked_mae(pred, target, mask)) == pytest.approx((1 + 3 + 4) / 3)
  assert LOSSES["mse"] is masked_mse and LOSSES["mae"] is masked_mae


def test_average_over_masked_elements_of_whole_batch():
  rng = np.random.default_rng(0)
  pred = rng.normal(size=(3, 5, 4, 2)).astype(np.float32)
  target = rng.normal(size=pred.shape).astype(np.float32)
  mask = rng.random(pred.shape) < 0.2
  d = (pred - target)[mask]
  np.testing.assert_allclose(masked_mse(pred, target, mask), np.mean(d ** 2), rtol=1e-5)
  np.testing.assert_allclose(masked_mae(pred, target, mask), np.mean(np.abs(d)), rtol=1e-5)
  # Not the per-image mean of means: images with more masked pixels weigh more.
  per_image = np.mean([np.mean(((pred - target)[i][mask[i]]) ** 2) for i in range(3)])
  assert not np.isclose(float(masked_mse(pred, target, mask)), per_image)


def test_empty_mask_gives_zero_not_nan():
  x = jnp.ones((2, 4, 4, 1))
  for fn in LOSSES.values():
    assert float(fn(x, 0 * x, jnp.zeros(x.shape, bool))) == 0.0


@pytest.mark.parametrize("name", ["mse", "mae"])
def test_blind_to_unmasked_differences_value_and_gradient(name):
  fn = LOSSES[name]
  rng = np.random.default_rng(1)
  target = jnp.asarray(rng.normal(size=(2, 6, 6, 1)), jnp.float32)
  mask = jnp.asarray(rng.random(target.shape) < 0.3)
  pred = target + 0.5
  other = jnp.where(mask, pred, jnp.asarray(rng.normal(size=target.shape) * 100, jnp.float32))
  wild = jnp.where(mask, pred, jnp.inf)
  v = fn(pred, target, mask)
  assert float(fn(other, target, mask)) == pytest.approx(float(v))
  assert float(fn(wild, target, mask)) == pytest.approx(float(v))
  for p in (pred, other, wild):
    g = jax.grad(fn)(p, target, mask)
    assert np.all(np.isfinite(np.asarray(g)))
    assert np.all(np.asarray(g)[~np.asarray(mask)] == 0.0)
    assert np.all(np.asarray(g)[np.asarray(mask)] != 0.0)
  n = float(jnp.sum(mask))
  expected = (2 * 0.5 / n) if name == "mse" else (1.0 / n)
  np.testing.assert_allclose(np.asarray(jax.grad(fn)(pred, target, mask))[np.asarray(mask)],
                             expected, rtol=1e-5)


def test_jit_and_shape_errors():
  x = jnp.ones((2, 3, 3, 1))
  m = jnp.ones(x.shape, bool)
  assert float(jax.jit(masked_mse)(x, 0 * x, m)) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="target shape"):
    masked_mse(x, jnp.ones((2, 3, 3, 2)), m)
  with pytest.raises(ValueError, match="loss_mask"):
    masked_mae(x, x, jnp.ones((5,), bool))
