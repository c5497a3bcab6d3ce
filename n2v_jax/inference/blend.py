"""The SURE blend of a prediction with its noisy input (predict --blend, config.predict.blend).
"""

from typing import Any

import numpy as np


# Finite-difference step of the Jacobian probe in sure_blend, in normalized units (the
# data's std is 1 there): small against any noise worth removing, far above float32
# rounding of the outputs (~1e-7).
PROBE_STEP = 1e-2


def sure_blend(denoise: Any, x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
  """(1 - k) * y + k * x per channel, with the k that minimises Stein's unbiased risk
  estimate (SURE) of the error against the clean image, for noise that is Gaussian, white
  and of one level per channel (after data.transform; Anscombe makes Poisson noise so).

  A blind-spot network's prediction y = f(x) barely depends on each noisy pixel's own
  value, so its error e = y - s is nearly independent of that pixel's noise n = x - s;
  mixing a little of x back in then lowers the error (BSD68: +0.14 to +0.18 dB). For
  x = s + n, n ~ N(0, sigma^2): E|(1-k) y + k x - s|^2 = (1-k)^2 E e^2 + 2k(1-k) E[e n]
  + k^2 sigma^2, Stein's lemma gives E[e n] = sigma^2 d (d: the mean of df_i/dx_i), and
  the residual r = E|y - x|^2 = E e^2 - 2 sigma^2 d + sigma^2 is measured, so the minimum
  is at k = 1 - sigma^2 (1 - d) / r. d comes from one more pass on x + h * probe (a
  Hutchinson estimate with a Gaussian probe, fixed seed: deterministic); sigma from the
  finest diagonal Haar band of the residual (median absolute value / 0.6745), divided by
  that band's gain through (I - J) on white noise, measured with the same probe. No clean
  image is used. Texture left in the residual raises the sigma estimate, which lowers k
  (towards y alone): the estimate errs on the safe side. k is 0 where the image gives no
  estimate (an edge under 2 pixels, no residual, no noise found).
  """
  x, y = x.astype(np.float32, copy=False), y.astype(np.float32, copy=False)
  probe = np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)
  response = (denoise(x + PROBE_STEP * probe) - y) / PROBE_STEP  # J @ probe
  k = blend_weights(x, y, probe, response)
  return ((1 - k) * y + k * x).astype(np.float32)


def blend_weights(x: np.ndarray, y: np.ndarray, probe: np.ndarray,
                  response: np.ndarray) -> np.ndarray:
  """Per-channel k of sure_blend from the input x, the prediction y, a Gaussian probe and
  the Jacobian's response J @ probe, all (*spatial, C)."""
  channels = x.shape[-1]
  if x.ndim < 3 or min(x.shape[-3:-1]) < 2:  # no 2x2 Haar band
    return np.zeros(channels, np.float32)
  per_channel = lambda a: a.reshape(-1, channels)
  band = lambda a: per_channel(_finest_diagonal(a))
  residual = y.astype(np.float64) - x
  r = np.mean(per_channel(residual) ** 2, axis=0)
  d = np.mean(per_channel(probe.astype(np.float64) * response), axis=0)
  gain = np.mean(band(probe - response.astype(np.float64)) ** 2, axis=0)
  mad = np.median(np.abs(band(residual)), axis=0) / 0.6745
  with np.errstate(divide="ignore", invalid="ignore"):
    k = 1 - mad ** 2 / gain * (1 - d) / r
  usable = np.isfinite(k) & (r > 0) & (mad > 0) & (gain > 0)
  return np.where(usable, np.clip(k, 0, 1), 0).astype(np.float32)


def _finest_diagonal(a: np.ndarray) -> np.ndarray:
  """The finest diagonal Haar band over (Y, X) of (..., Y, X, C): unit gain on white noise."""
  h, w = a.shape[-3] // 2 * 2, a.shape[-2] // 2 * 2
  a = a[..., :h, :w, :]
  return (a[..., 0::2, 0::2, :] - a[..., 0::2, 1::2, :] - a[..., 1::2, 0::2, :]
          + a[..., 1::2, 1::2, :]) / 2
