"""Probabilistic Noise2Void's loss and estimate (Krull et al. 2020), as pure functions of the
network's S samples of the signal per pixel and a noise model per channel
(nn.noise_models). Samples and observations are in data units (the noise model's).

- loss: at the blind spots, -log of the mean likelihood of the noisy pixel under the samples,
  -log (1/S) sum_s p(x | s_s), averaged over the masked pixels;
- MMSE estimate: the samples weighted by their likelihood (the posterior mean under the
  prior the samples represent), sum_s p(x | s_s) s_s / sum_s p(x | s_s); the prior mean is
  the samples' plain mean.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from jax import Array

from n2v_jax.nn import noise_models


def _likelihoods(models: Sequence, noisy_C: Array, samples_SC: Array) -> Array:
  """p(x | s) per sample: samples (..., S, C), noisy (..., C) -> (..., S, C)."""
  return jnp.stack([noise_models.likelihood(m, noisy_C[..., None, c], samples_SC[..., c])
                    for c, m in enumerate(models)], axis=-1)


def loss(models: Sequence, samples_BHWSC: Array, noisy_BHWC: Array, mask_BHWC: Array) -> Array:
  """The PN2V loss over the masked pixels (mask 1 at the blind spots)."""
  p = _likelihoods(models, noisy_BHWC, samples_BHWSC)
  nll = -jnp.log(jnp.mean(p, axis=-2))  # (..., C)
  return jnp.sum(nll * mask_BHWC) / jnp.maximum(jnp.sum(mask_BHWC), 1.0)


def mmse(models: Sequence, samples_BHWSC: Array, noisy_BHWC: Array) -> Array:
  """The minimum mean square error estimate of the signal, (..., C)."""
  p = _likelihoods(models, noisy_BHWC, samples_BHWSC)
  return jnp.sum(p * samples_BHWSC, axis=-2) / jnp.sum(p, axis=-2)


def prior_mean(samples_BHWSC: Array) -> Array:
  return jnp.mean(samples_BHWSC, axis=-2)
