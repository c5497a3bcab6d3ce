"""How much of the best possible gain the SURE blend (n2v_jax.inference.sure_blend) gets.

    .venv/bin/python experiments/bsd68/blend_study.py --workdir runs/bsd68_cpu [--out FILE.json]

For each of the 68 BSD68 test images: PSNR of the network alone; of the blend as shipped
(noise level estimated from the image); of the blend given the true sigma (25), which
shows what the noise estimate costs; and of the best weight per image and the best single
weight for all images, both chosen with the clean image (oracles: upper bounds, not
methods). Also the estimated sigma and the mean df_i/dx_i (how much the network's output
follows each noisy pixel). Same probe and step as the library.
"""

import argparse
import json
import os

import numpy as np

from n2v_jax.configs import bsd68_n2v
from n2v_jax.inference import blend
from n2v_jax.inference import evaluation
from n2v_jax.inference import predictor
from n2v_jax.inference import tiling
from n2v_jax.inference.options import PredictOptions


def psnr(clean, x):
  return float(10 * np.log10(255.0**2 / np.mean((clean - x) ** 2)))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--sigma", type=float, default=25.0, help="the true noise level")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  data = bsd68_n2v.bsd68_dir()
  pairs = evaluation.pair_files(os.path.join(data, "test_noisy_sigma25"), os.path.join(data, "test_clean"))
  pred = predictor.load_predictor(args.workdir)
  grid = np.linspace(0, 0.5, 101)
  rows, curves = [], []
  for stem, noisy_path, clean_path in pairs:
    noisy = evaluation.read_plain(noisy_path).astype(np.float32)[..., None]
    clean = evaluation.read_plain(clean_path).astype(np.float64)[..., None]
    x = pred.normalize.image(noisy)
    denoise = lambda z: tiling.predict_normalized(pred, z, PredictOptions(tile=512))
    y = denoise(x)
    probe = np.random.default_rng(0).standard_normal(x.shape, dtype=np.float32)
    response = (denoise(x + blend.PROBE_STEP * probe) - y) / blend.PROBE_STEP
    k = float(blend.blend_weights(x, y, probe, response)[0])
    d = float(np.mean(probe.astype(np.float64) * response))
    r = float(np.mean((y.astype(np.float64) - x) ** 2))
    sigma_n = args.sigma / float(np.ravel(pred.normalize.std)[0])  # in normalized units
    k_true = float(np.clip(1 - sigma_n**2 * (1 - d) / r, 0, 1))
    # the sigma the shipped k implies: k = 1 - s^2 (1 - d) / r
    sigma_est = float(np.sqrt(max(0.0, (1 - k) * r / (1 - d)))) * float(np.ravel(pred.normalize.std)[0])
    back = lambda z: pred.normalize.inverse(z).astype(np.float64)
    yd, xd = back(y), noisy.astype(np.float64)
    curve = [psnr(clean, (1 - g) * yd + g * xd) for g in grid]
    curves.append(curve)
    rows.append({"image": stem, "psnr": psnr(clean, yd), "psnr_blend": psnr(clean, (1 - k) * yd + k * xd),
                 "psnr_blend_true_sigma": psnr(clean, (1 - k_true) * yd + k_true * xd),
                 "psnr_oracle_k": max(curve), "k": k, "k_true_sigma": k_true,
                 "k_oracle": float(grid[int(np.argmax(curve))]), "sigma_estimate": sigma_est,
                 "mean_dfdx": d})
  mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "image"}
  best_global = int(np.argmax(np.mean(curves, axis=0)))
  mean["psnr_oracle_global_k"] = float(np.mean(curves, axis=0)[best_global])
  mean["oracle_global_k"] = float(grid[best_global])
  mean["sigma_estimate_std"] = float(np.std([r["sigma_estimate"] for r in rows]))
  for key, value in mean.items():
    print(f"{key:24s} {value:8.4f}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"workdir": os.path.abspath(args.workdir), "mean": mean, "per_image": rows}, f, indent=1)


if __name__ == "__main__":
  main()
