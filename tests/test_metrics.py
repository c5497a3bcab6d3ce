import math

import numpy as np
import pytest

from n2v_jax.inference.metrics import psnr, psnr_clean_range, psnr_fixed_range, ssim


def _image(shape=(48, 40), seed=0):
  # smooth structure plus texture, values roughly in [0, 255]
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(*(np.linspace(0, 3, n) for n in shape[:2]), indexing="ij")
  base = 120 + 80 * np.sin(yy * 2) * np.cos(xx * 3)
  if len(shape) > 2:
    base = base[..., None] * np.ones(shape[2:])
  return base + rng.normal(0, 5, shape)


def test_identical_images_give_inf_psnr_and_ssim_one():
  img = _image()
  assert psnr(img, img, 255.0) == math.inf
  assert psnr_fixed_range(img, img.copy()) == math.inf
  assert psnr_clean_range(img, img) == math.inf
  assert ssim(img, img, 255.0) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("d", [0.5, 1.0, 3.0, 17.0])
def test_constant_offset_psnr_is_exact(d):
  img = _image()
  expected = 20 * math.log10(255) - 20 * math.log10(d)
  assert psnr_fixed_range(img, img + d) == pytest.approx(expected, abs=1e-9)
  assert psnr_fixed_range(img, img - d) == pytest.approx(expected, abs=1e-9)
  assert psnr(img, img + d, 255.0) == pytest.approx(expected, abs=1e-9)


def test_clean_range_convention_differs_by_range_ratio():
  img = _image()
  d = 2.0
  value_range = img.max() - img.min()
  assert value_range < 255
  fixed = psnr_fixed_range(img, img + d)
  clean = psnr_clean_range(img, img + d)
  assert clean == pytest.approx(20 * math.log10(value_range) - 20 * math.log10(d), abs=1e-9)
  assert fixed - clean == pytest.approx(20 * math.log10(255 / value_range), abs=1e-9)


def test_psnr_uses_float64_not_the_input_dtype():
  # uint8 subtraction would wrap around; the metric must not
  clean = np.zeros((8, 8), np.uint8)
  pred = np.full((8, 8), 255, np.uint8)
  assert psnr_fixed_range(clean, pred) == pytest.approx(0.0, abs=1e-12)
  assert isinstance(psnr_fixed_range(clean, pred + 0), float)


def test_psnr_errors():
  with pytest.raises(ValueError, match="differ"):
    psnr(np.zeros((4, 4)), np.zeros((4, 5)), 1.0)
  with pytest.raises(ValueError, match="data_range"):
    psnr(np.zeros((4, 4)), np.ones((4, 4)), 0.0)
  with pytest.raises(ValueError, match="constant"):
    psnr_clean_range(np.ones((4, 4)), np.zeros((4, 4)))


def test_ssim_decreases_with_noise_and_is_symmetric():
  img = _image()
  rng = np.random.default_rng(1)
  noise = rng.normal(size=img.shape)
  values = [ssim(img, img + s * noise, 255.0) for s in (1.0, 5.0, 20.0, 60.0)]
  assert all(v < 1.0 for v in values)
  assert all(a > b for a, b in zip(values, values[1:]))
  noisy = img + 10 * noise
  assert ssim(img, noisy, 255.0) == pytest.approx(ssim(noisy, img, 255.0), abs=1e-12)


def test_ssim_channels_are_averaged_and_3d_works():
  img = _image((24, 24, 2))
  noisy = img.copy()
  noisy[..., 1] += np.random.default_rng(2).normal(0, 20, (24, 24))
  per_channel = [ssim(img[..., c], noisy[..., c], 255.0) for c in range(2)]
  assert per_channel[0] == pytest.approx(1.0)
  assert ssim(img, noisy, 255.0, channel_axis=-1) == pytest.approx(np.mean(per_channel))
  assert ssim(np.moveaxis(img, -1, 0), np.moveaxis(noisy, -1, 0), 255.0, channel_axis=0) == (
      pytest.approx(np.mean(per_channel))
  )
  vol = np.random.default_rng(3).normal(100, 20, (12, 16, 16))
  assert ssim(vol, vol, 255.0) == pytest.approx(1.0)
  assert ssim(vol, vol + np.random.default_rng(4).normal(0, 20, vol.shape), 255.0) < 0.9


def test_ssim_errors():
  with pytest.raises(ValueError, match=">= 11"):
    ssim(np.zeros((8, 32)), np.zeros((8, 32)), 1.0)
  with pytest.raises(ValueError, match="2D or 3D"):
    ssim(np.zeros((2, 2, 16, 16)), np.zeros((2, 2, 16, 16)), 1.0)
  with pytest.raises(ValueError, match="differ"):
    ssim(np.zeros((16, 16)), np.zeros((16, 17)), 1.0)


def test_ssim_matches_skimage():
  metrics = pytest.importorskip("skimage.metrics", reason="scikit-image not installed")
  kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
  rng = np.random.default_rng(5)
  img = _image((40, 36))
  noisy = img + rng.normal(0, 15, img.shape)
  ref = metrics.structural_similarity(img, noisy, data_range=255.0, **kw)
  assert ssim(img, noisy, 255.0) == pytest.approx(ref, abs=1e-10)
  vol = rng.normal(100, 30, (13, 20, 18))
  vol_noisy = vol + rng.normal(0, 10, vol.shape)
  ref = metrics.structural_similarity(vol, vol_noisy, data_range=200.0, **kw)
  assert ssim(vol, vol_noisy, 200.0) == pytest.approx(ref, abs=1e-10)
  rgb = _image((24, 30, 3))
  rgb_noisy = rgb + rng.normal(0, 10, rgb.shape)
  ref = metrics.structural_similarity(rgb, rgb_noisy, data_range=255.0, channel_axis=-1, **kw)
  assert ssim(rgb, rgb_noisy, 255.0, channel_axis=-1) == pytest.approx(ref, abs=1e-10)
