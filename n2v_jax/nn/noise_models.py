"""Noise models p(observation | signal) for Probabilistic Noise2Void, as pure JAX functions.

- Gaussian mixture (Prakash et al., ISBI 2020, PPN2V's `GaussianMixtureNoiseModel`): K
  components whose means, variances and weights are polynomials of the normalized signal
  t = (s - min_signal) / (max_signal - min_signal): mean_k(t) a polynomial; variance_k(t)
  a polynomial with positive coefficients (exp of the parameters), at least min_sigma^2;
  weight_k(t) proportional to exp(a polynomial). The means are then shifted so that the
  mixture's mean is the signal itself (the noise is zero-mean). Fitted by maximum
  likelihood with optax (`fit_gmm`) from (signal, observation) pairs: calibration frames and
  their average, or a trained N2V model's predictions and the noisy images (bootstrapped).
- Histogram (Krull et al. 2020, PN2V's calibration model): the 2D histogram of (signal,
  observation) pairs, each signal bin's row a density over the observation bins.

A model is a frozen record of plain arrays; `save` writes JSON + .npy files, `load` reads
them back without unpickling. One model per channel for multi-channel data (a list).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from n2v_jax.errors import N2VError

TINY = 1e-10  # added to likelihoods so that log() stays finite far in a model's tails
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class GMM:
  """weight: (3K, n_coeff): rows 0..K-1 the means' coefficients, K..2K-1 the variances'
  (log), 2K..3K-1 the weights' (log-odds)."""
  weight: Any
  min_signal: float
  max_signal: float
  min_sigma: float = 0.125

  @property
  def components(self) -> int:
    return int(self.weight.shape[0]) // 3


@dataclasses.dataclass(frozen=True)
class Histogram:
  """density: (signal bins, observation bins), each row integrating to 1 over observation."""
  density: Any
  min_value: float
  max_value: float


jax.tree_util.register_dataclass(GMM, data_fields=["weight"],
                                 meta_fields=["min_signal", "max_signal", "min_sigma"])
jax.tree_util.register_dataclass(Histogram, data_fields=["density"],
                                 meta_fields=["min_value", "max_value"])


def _poly(coeffs: jax.Array, t: jax.Array) -> jax.Array:
  """sum_i coeffs[i] * t**i."""
  return sum(c * t ** i for i, c in enumerate(coeffs))


def gmm_parameters(model: GMM, signal: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(means, stds, weights), each (K, *signal.shape)."""
  k = model.components
  t = (signal - model.min_signal) / (model.max_signal - model.min_signal)
  w = model.weight
  means = jnp.stack([_poly(w[i], t) for i in range(k)])
  variances = jnp.stack([_poly(jnp.exp(w[k + i]), t) for i in range(k)])
  stds = jnp.sqrt(jnp.maximum(variances, model.min_sigma ** 2))
  logits = jnp.stack([_poly(w[2 * k + i], t) for i in range(k)])
  weights = jax.nn.softmax(logits, axis=0)
  means = means - jnp.sum(weights * means, axis=0) + signal  # the mixture's mean: the signal
  return means, stds, weights


def gmm_likelihood(model: GMM, observation: jax.Array, signal: jax.Array) -> jax.Array:
  """p(observation | signal), elementwise (broadcasting)."""
  means, stds, weights = gmm_parameters(model, signal)
  z = (observation - means) / stds
  normal = jnp.exp(-0.5 * z * z) / (stds * np.sqrt(2 * np.pi))
  return jnp.sum(weights * normal, axis=0) + TINY


def gmm_moments(model: GMM, signal: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean, variance) of the observation given the signal."""
  means, stds, weights = gmm_parameters(model, signal)
  mean = jnp.sum(weights * means, axis=0)
  return mean, jnp.sum(weights * (stds ** 2 + means ** 2), axis=0) - mean ** 2


def histogram_model(signal: np.ndarray, observation: np.ndarray, bins: int = 256,
                    value_range: tuple[float, float] | None = None) -> Histogram:
  """The calibration histogram of (signal, observation) pairs, as PN2V builds it."""
  signal, observation = np.ravel(signal), np.ravel(observation)
  lo, hi = value_range or (float(min(signal.min(), observation.min())),
                           float(max(signal.max(), observation.max())))
  counts, _, _ = np.histogram2d(signal, observation, bins=bins, range=[[lo, hi], [lo, hi]])
  width = (hi - lo) / bins
  rows = counts.sum(axis=1, keepdims=True)
  density = np.where(rows > 0, counts / np.maximum(rows, 1) / width, 0.0)
  return Histogram(jnp.asarray(density, jnp.float32), lo, hi)


def histogram_likelihood(model: Histogram, observation: jax.Array,
                         signal: jax.Array) -> jax.Array:
  bins = model.density.shape[0]
  index = lambda v: jnp.clip(((v - model.min_value) / (model.max_value - model.min_value)
                              * bins).astype(jnp.int32), 0, bins - 1)
  return model.density[index(signal), index(observation)] + TINY


def likelihood(model: GMM | Histogram, observation: jax.Array, signal: jax.Array) -> jax.Array:
  if isinstance(model, GMM):
    return gmm_likelihood(model, observation, signal)
  return histogram_likelihood(model, observation, signal)


def fit_gmm(signal: np.ndarray, observation: np.ndarray, components: int = 3,
            coefficients: int = 2, steps: int = 2000, learning_rate: float = 0.1,
            batch: int = 250_000, seed: int = 0, min_sigma: float = 0.125,
            lower_percentile: float = 0.5, upper_percentile: float = 99.5) -> GMM:
  """Maximum likelihood fit of a GMM to (signal, observation) pairs (same shapes) with Adam;
  the signal range is set from its percentiles (pairs outside are left out, as PPN2V does)."""
  import optax
  signal = np.ravel(np.asarray(signal, np.float32))
  observation = np.ravel(np.asarray(observation, np.float32))
  if signal.shape != observation.shape or not signal.size:
    raise N2VError(f"noise model: {signal.size} signal and {observation.size} observation "
                   "values; expected the same number (> 0)")
  lo, hi = (float(np.percentile(signal, q)) for q in (lower_percentile, upper_percentile))
  if not hi > lo:
    raise N2VError(f"noise model: the signal is constant ({lo}); it needs a range of values")
  keep = (signal >= lo) & (signal <= hi)
  signal, observation = signal[keep], observation[keep]
  rng = np.random.default_rng(seed)
  # start: means on the signal, variances as the observed spread, equal weights
  spread = float(np.var(observation - signal))
  weight = np.zeros((3 * components, coefficients), np.float32)
  weight[components:2 * components, 0] = np.log(max(spread, min_sigma ** 2))
  weight[components:2 * components, 1:] = np.log(max(spread, min_sigma ** 2)) - 4.0
  weight += rng.normal(0, 0.1, weight.shape).astype(np.float32)
  model = GMM(jnp.asarray(weight), lo, hi, min_sigma)
  tx = optax.adam(learning_rate)

  def loss(weight, s, x):
    m = dataclasses.replace(model, weight=weight)
    return -jnp.mean(jnp.log(gmm_likelihood(m, x, s)))

  @jax.jit
  def step(weight, opt_state, s, x):
    value, grad = jax.value_and_grad(loss)(weight, s, x)
    updates, opt_state = tx.update(grad, opt_state)
    return optax.apply_updates(weight, updates), opt_state, value

  weight, opt_state = model.weight, tx.init(model.weight)
  n = min(batch, signal.size)
  for _ in range(steps):
    pick = rng.integers(0, signal.size, n)
    weight, opt_state, _ = step(weight, opt_state, jnp.asarray(signal[pick]),
                                jnp.asarray(observation[pick]))
  return dataclasses.replace(model, weight=weight)


def save(models: list[GMM | Histogram], folder: str) -> None:
  """One model per channel into `folder`: noise_model.json and one .npy per channel."""
  os.makedirs(folder, exist_ok=True)
  entries = []
  for c, m in enumerate(models):
    array, name = (m.weight, "gmm") if isinstance(m, GMM) else (m.density, "histogram")
    file = f"noise_model_{c}.npy"
    np.save(os.path.join(folder, file), np.asarray(array), allow_pickle=False)
    meta = {k: float(v) for k, v in dataclasses.asdict(m).items()
            if k not in ("weight", "density")}
    entries.append({"kind": name, "array": file, **meta})
  with open(os.path.join(folder, "noise_model.json"), "w") as f:
    json.dump({"format": FORMAT, "channels": entries}, f, indent=2)


def load(folder: str) -> list[GMM | Histogram]:
  path = os.path.join(folder, "noise_model.json")
  try:
    with open(path) as f:
      spec = json.load(f)
    models = []
    for e in spec["channels"]:
      array = jnp.asarray(np.load(os.path.join(folder, e["array"]), allow_pickle=False))
      if e["kind"] == "gmm":
        models.append(GMM(array, e["min_signal"], e["max_signal"], e["min_sigma"]))
      else:
        models.append(Histogram(array, e["min_value"], e["max_value"]))
    return models
  except FileNotFoundError:
    raise N2VError(f"{path}: no such noise model") from None
  except (KeyError, TypeError, ValueError) as e:
    raise N2VError(f"{path}: not an n2v_jax noise model ({type(e).__name__}: {e})") from None
