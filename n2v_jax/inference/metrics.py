"""Image quality metrics in numpy float64: PSNR (several range conventions) and SSIM."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from n2v_jax.errors import N2VError

# SSIM constants of Wang et al. (2004), as in skimage with gaussian_weights=True.
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5 -> 11-pixel window
_SSIM_WIN = 11
_K1, _K2 = 0.01, 0.03


def _pair(clean, prediction) -> tuple[np.ndarray, np.ndarray]:
  clean = np.asarray(clean, dtype=np.float64)
  prediction = np.asarray(prediction, dtype=np.float64)
  if clean.shape != prediction.shape:
    raise N2VError(
        f"clean shape {clean.shape} and prediction shape {prediction.shape} differ"
    )
  if clean.size == 0:
    raise N2VError("cannot compute a metric of empty images")
  return clean, prediction


def _check_range(data_range: float) -> float:
  data_range = float(data_range)
  if not math.isfinite(data_range) or data_range <= 0:
    raise N2VError(f"data_range must be a positive finite number, got {data_range}")
  return data_range


def psnr(clean, prediction, data_range: float) -> float:
  """20 log10(data_range) - 10 log10(MSE); inf for identical images."""
  clean, prediction = _pair(clean, prediction)
  data_range = _check_range(data_range)
  mse = float(np.mean((clean - prediction) ** 2))
  if mse == 0.0:
    return math.inf
  return 20.0 * math.log10(data_range) - 10.0 * math.log10(mse)


def psnr_fixed_range(clean, prediction, data_range: float = 255.0) -> float:
  """The N2V BSD68 convention: fixed range 255, no clipping or rounding."""
  return psnr(clean, prediction, data_range)


def psnr_clean_range(clean, prediction) -> float:
  """PSNR with data range = clean.max() - clean.min()."""
  clean = np.asarray(clean, dtype=np.float64)
  data_range = float(clean.max() - clean.min()) if clean.size else 0.0
  if data_range <= 0:
    raise N2VError("clean image is constant, so its value range (for PSNR) is 0")
  return psnr(clean, prediction, data_range)


def ssim(clean, prediction, data_range: float, *, channel_axis: int | None = None) -> float:
  """Mean SSIM (Gaussian window sigma 1.5, K1=0.01, K2=0.03, population covariance).

  Matches skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=...). Without `channel_axis` all dimensions
  are spatial (2D or 3D); with it, SSIM is averaged over channels.
  """
  clean, prediction = _pair(clean, prediction)
  data_range = _check_range(data_range)
  if channel_axis is not None:
    clean = np.moveaxis(clean, channel_axis, -1)
    prediction = np.moveaxis(prediction, channel_axis, -1)
    return float(
        np.mean(
            [
                ssim(clean[..., c], prediction[..., c], data_range)
                for c in range(clean.shape[-1])
            ]
        )
    )
  if clean.ndim not in (2, 3):
    raise N2VError(
        f"ssim expects a 2D or 3D image (or pass channel_axis), got shape {clean.shape}"
    )
  if min(clean.shape) < _SSIM_WIN:
    raise N2VError(
        f"ssim needs every spatial dimension >= {_SSIM_WIN}, got shape {clean.shape}"
    )

  def smooth(a: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(a, sigma=_SSIM_SIGMA, truncate=_SSIM_TRUNCATE, mode="reflect")

  mu_x, mu_y = smooth(clean), smooth(prediction)
  var_x = smooth(clean * clean) - mu_x * mu_x
  var_y = smooth(prediction * prediction) - mu_y * mu_y
  cov_xy = smooth(clean * prediction) - mu_x * mu_y
  c1 = (_K1 * data_range) ** 2
  c2 = (_K2 * data_range) ** 2
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
      (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
  )
  pad = (_SSIM_WIN - 1) // 2  # border where the window leaves the image, as skimage
  inner = ssim_map[tuple(slice(pad, n - pad) for n in ssim_map.shape)]
  return float(inner.mean(dtype=np.float64))
