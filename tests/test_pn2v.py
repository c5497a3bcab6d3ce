"""PN2V's loss and MMSE estimate (n2v_jax.nn.pn2v) against direct computations."""

import jax.numpy as jnp
import numpy as np

from n2v_jax.nn import noise_models, pn2v


def _gaussian_model(sigma):
  """A one-component GMM of constant variance sigma^2: N(x; s, sigma^2)."""
  weight = np.zeros((3, 1), np.float32)
  weight[1, 0] = np.log(sigma ** 2)  # the variance polynomial's (log) coefficient
  return noise_models.GMM(jnp.asarray(weight), 0.0, 1000.0, 1e-3)


def _normal(x, mean, sigma):
  return np.exp(-0.5 * ((x - mean) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def test_loss_equals_a_direct_computation():
  rng = np.random.default_rng(0)
  sigmas = [3.0, 7.0]  # one noise model per channel
  samples = rng.normal(100, 10, (2, 3, 4, 5, 2)).astype(np.float32)  # B, H, W, S, C
  noisy = rng.normal(100, 10, (2, 3, 4, 2)).astype(np.float32)
  mask = (rng.random((2, 3, 4, 2)) < 0.3).astype(np.float32)
  models = [_gaussian_model(s) for s in sigmas]
  got = float(pn2v.loss(models, jnp.asarray(samples), jnp.asarray(noisy), jnp.asarray(mask)))
  p = np.stack([_normal(noisy[..., None, c], samples[..., c], sigmas[c]) for c in range(2)],
               axis=-1) + noise_models.TINY
  want = (-np.log(p.mean(axis=-2)) * mask).sum() / mask.sum()
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_mmse_of_a_known_posterior():
  """Samples from a Gaussian prior N(mu0, tau^2), Gaussian noise sigma: the posterior mean is
  (tau^2 x + sigma^2 mu0) / (tau^2 + sigma^2)."""
  rng = np.random.default_rng(1)
  mu0, tau, sigma = 200.0, 20.0, 15.0
  samples = rng.normal(mu0, tau, (1, 1, 4, 200_000, 1)).astype(np.float32)
  noisy = np.array([150.0, 190.0, 230.0, 260.0], np.float32).reshape(1, 1, 4, 1)
  got = np.asarray(pn2v.mmse([_gaussian_model(sigma)], jnp.asarray(samples), jnp.asarray(noisy)))
  want = (tau ** 2 * noisy + sigma ** 2 * mu0) / (tau ** 2 + sigma ** 2)
  np.testing.assert_allclose(got, want, atol=0.3)
  np.testing.assert_allclose(np.asarray(pn2v.prior_mean(jnp.asarray(samples))), mu0, atol=0.3)
