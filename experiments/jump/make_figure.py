"""Per-channel before/after figure and noise figures for the JUMP example.

    .venv/bin/python experiments/jump/make_figure.py NOISY_DIR DENOISED_DIR OUT.png [OUT.json]

Both folders hold the Phenix per-channel files of one field. Per channel the figure shows
the whole noisy field (with the crop marked), a 160 x 160 crop noisy / denoised on the
crop's full range, the same crop noisy / denoised on a dim range (1st-60th percentile of
the noisy crop: background and cytoplasm, where the noise is visible), and the residual
noisy - denoised.

Without ground truth, it measures (and prints, and writes to OUT.json):
- noise: the robust std (MAD) of x - mean(4 neighbours), scaled to the pixel noise of
  white noise, in the dimmest 40 % of the field (background), for noisy and denoised;
- residual_lag1: the correlation of the residual with its right/lower neighbour on the
  whole field. Removed noise is white (~0); removed signal (blur, ripples) is not.
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from n2v_jax.inference import dtypes
from n2v_jax.io import fields
from n2v_jax.io import tiff

CHANNELS = (("5", "DNA"), ("3", "RNA"), ("2", "AGP"))


def pixel_noise(image: np.ndarray, where: np.ndarray) -> float:
  """Noise std from x - mean(4 neighbours): var = 1.25 sigma^2 for white noise."""
  x = image.astype(np.float64)
  d = x[1:-1, 1:-1] - 0.25 * (x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:])
  d = d[where[1:-1, 1:-1]]
  return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(1.25))


def lag1(residual: np.ndarray) -> float:
  r = residual.astype(np.float64) - residual.mean()
  num = (r[:, 1:] * r[:, :-1]).mean() + (r[1:, :] * r[:-1, :]).mean()
  return float(num / (2 * (r * r).mean()))


def measure(noisy: np.ndarray, den: np.ndarray) -> dict:
  dim = noisy <= np.percentile(noisy, 40)
  return {"noise_noisy": pixel_noise(noisy, dim), "noise_denoised": pixel_noise(den, dim),
          "background_median": float(np.median(noisy[dim])),
          "residual_lag1": lag1(noisy - den),
          "residual_std": float((noisy - den).std())}


def main(noisy_dir: str, denoised_dir: str, out_png: str, out_json: str | None = None,
         crop=(420, 420, 160)) -> dict:
  (field,), _, _ = fields.group_fields(tiff.list_images(noisy_dir), "phenix",
                                       [c for c, _ in CHANNELS])
  y0, x0, size = crop
  fig, axes = plt.subplots(len(CHANNELS), 6, figsize=(24, 4.2 * len(CHANNELS)))
  results = {}
  for row, (path, (ch, name)) in enumerate(zip(field.paths, CHANNELS)):
    noisy = tiff.read_image(path).data.astype(np.float32)
    den = dtypes.read_denoised(os.path.join(denoised_dir, os.path.basename(path)))
    results[name] = measure(noisy, den)
    lo, hi = np.percentile(noisy, [0.5, 99.5])
    crop_n = noisy[y0:y0 + size, x0:x0 + size]
    crop_d = den[y0:y0 + size, x0:x0 + size]
    clo, chi = np.percentile(crop_n, [0.5, 99.5])
    dlo, dhi = np.percentile(crop_n, [1, 60])
    resid = crop_n - crop_d
    r = np.percentile(np.abs(resid), 99)
    m = results[name]
    panels = [(noisy, lo, hi, "gray", f"{name} (ch{ch}) noisy"),
              (crop_n, clo, chi, "gray", "noisy, crop"),
              (crop_d, clo, chi, "gray", "N2V, crop"),
              (crop_n, dlo, dhi, "gray", f"noisy, dim range (noise {m['noise_noisy']:.1f})"),
              (crop_d, dlo, dhi, "gray", f"N2V, dim range (noise {m['noise_denoised']:.1f})"),
              (resid, -r, r, "RdBu_r", f"noisy - N2V (lag-1 corr. {m['residual_lag1']:.2f})")]
    for ax, (img, vmin, vmax, cmap, title) in zip(axes[row], panels):
      ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
      ax.set_title(title)
      ax.axis("off")
    axes[row][0].add_patch(plt.Rectangle((x0, y0), size, size, fill=False, ec="yellow", lw=1.5))
  fig.suptitle("JUMP cpg0000 BR00117006 A01 s1: N2V (n2v_jax, configs/jump.py:orig); "
               "noise = counts in the dimmest 40 % of the field")
  fig.tight_layout()
  fig.savefig(out_png, dpi=60)
  plt.close(fig)
  for name, m in results.items():
    print(f"{name}: background noise {m['noise_noisy']:.1f} -> {m['noise_denoised']:.1f} counts "
          f"(median {m['background_median']:.0f}); residual std {m['residual_std']:.1f}, "
          f"lag-1 correlation {m['residual_lag1']:.3f}")
  if out_json:
    with open(out_json, "w") as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main(*sys.argv[1:5])
