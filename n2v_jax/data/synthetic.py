"""Synthetic noisy images with known clean ground truth (tests and the default job)."""

import numpy as np
from scipy import ndimage

from n2v_jax.errors import N2VError


def clean_image(rng: np.random.Generator, shape: tuple[int, ...], channels: int = 1) -> np.ndarray:
  """Piecewise-smooth scene of random blobs, boxes and gradients in [0, 1], shape (*shape, C)."""
  grids = np.meshgrid(*[np.linspace(0.0, 1.0, n) for n in shape], indexing="ij")
  out = np.empty((*shape, channels), np.float64)
  for c in range(channels):
    img = 0.2 + 0.2 * sum(rng.uniform(-1, 1) * g for g in grids)
    for _ in range(int(np.prod(shape) ** (1 / len(shape)) // 8) + 4):
      centre = [rng.uniform(0, 1) for _ in shape]
      radius = rng.uniform(0.03, 0.15)
      dist2 = sum((g - m) ** 2 for g, m in zip(grids, centre))
      if rng.uniform() < 0.5:  # soft disc
        img += rng.uniform(-0.4, 0.6) * (dist2 < radius**2)
      else:  # box
        inside = np.ones(shape, bool)
        for g, m in zip(grids, centre):
          inside &= np.abs(g - m) < radius * rng.uniform(0.5, 1.5)
        img += rng.uniform(-0.4, 0.6) * inside
    img = ndimage.gaussian_filter(img, sigma=1.0)
    lo, hi = np.percentile(img, [0.5, 99.5])
    out[..., c] = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
  return out.astype(np.float32)


def noisy_pair(seed: int, shape: tuple[int, ...], channels: int = 1,
               noise_sigma: float = 0.2, correlation: float = 0.0,
               ) -> tuple[np.ndarray, np.ndarray]:
  """(noisy, clean), both float32 (*shape, C); pixel-independent zero-mean Gaussian noise.

  correlation rho in [0, 1] couples the channels (as bleed-through or a split detector
  would): clean_c = rho * common + (1 - rho) * own_c, and the noise of channel c is
  sqrt(rho) * shared + sqrt(1 - rho) * own_c (still sigma per channel, and still
  independent between pixels). 0 = independent channels, exactly as before.
  """
  if not 0.0 <= correlation <= 1.0:
    raise N2VError(f"data.synthetic.correlation={correlation}: expected in [0, 1]")
  rng = np.random.default_rng(seed)
  clean = clean_image(rng, tuple(shape), channels)
  noise = rng.normal(0.0, noise_sigma, clean.shape)
  if correlation > 0 and channels > 1:
    common = clean_image(rng, tuple(shape), 1)
    shared = rng.normal(0.0, noise_sigma, common.shape)
    clean = (correlation * common + (1 - correlation) * clean).astype(np.float32)
    noise = np.sqrt(correlation) * shared + np.sqrt(1 - correlation) * noise
  noisy = clean + noise
  return noisy.astype(np.float32), clean
