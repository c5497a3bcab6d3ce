"""Per-channel before/after figure for the JUMP example.

    .venv/bin/python experiments/jump/make_figure.py NOISY_DIR DENOISED_DIR OUT.png

Both folders hold the Phenix per-channel files of one field; the figure shows, per
channel, the whole field and a 160 x 160 crop, noisy and denoised, on the same display
range (0.5 / 99.5 percentiles of the noisy channel), plus the residual noisy - denoised.
"""

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from n2v_jax import batch, fields, tiff_io  # noqa: E402

CHANNELS = (("5", "DNA"), ("3", "RNA"), ("2", "AGP"))


def main(noisy_dir: str, denoised_dir: str, out_png: str, crop=(420, 420, 160)) -> None:
  (field,), _, _ = fields.group_fields(tiff_io.list_images(noisy_dir), "phenix",
                                       [c for c, _ in CHANNELS])
  y0, x0, size = crop
  fig, axes = plt.subplots(len(CHANNELS), 5, figsize=(20, 4.2 * len(CHANNELS)))
  for row, (path, (ch, name)) in enumerate(zip(field.paths, CHANNELS)):
    noisy = tiff_io.read_image(path).data.astype(np.float32)
    den = batch.read_denoised(os.path.join(denoised_dir, os.path.basename(path)))
    lo, hi = np.percentile(noisy, [0.5, 99.5])
    crop_n = noisy[y0:y0 + size, x0:x0 + size]
    crop_d = den[y0:y0 + size, x0:x0 + size]
    clo, chi = np.percentile(crop_n, [0.5, 99.5])
    resid = crop_n - crop_d
    r = np.percentile(np.abs(resid), 99)
    panels = [(noisy, lo, hi, "gray", f"{name} (ch{ch}) noisy"),
              (den, lo, hi, "gray", f"{name} N2V"),
              (crop_n, clo, chi, "gray", f"{name} noisy, crop"),
              (crop_d, clo, chi, "gray", f"{name} N2V, crop"),
              (resid, -r, r, "RdBu_r", f"{name} noisy - N2V, crop")]
    for ax, (img, vmin, vmax, cmap, title) in zip(axes[row], panels):
      ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
      ax.set_title(title)
      ax.axis("off")
    axes[row][0].add_patch(plt.Rectangle((x0, y0), size, size, fill=False, ec="yellow", lw=1.5))
  fig.suptitle("JUMP cpg0000 BR00117006 A01 s1: N2V (n2v_jax, configs/jump.py:orig)")
  fig.tight_layout()
  fig.savefig(out_png, dpi=60)
  plt.close(fig)


if __name__ == "__main__":
  main(*sys.argv[1:4])
