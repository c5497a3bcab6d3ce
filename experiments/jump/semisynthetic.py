"""Semi-synthetic ground truth for Cell Painting: a real field under simulated low light.

    .venv/bin/python experiments/jump/semisynthetic.py --field jump --photons 30 \
        --steps 800 --workdir runs/semi_jump [--config.model.features=48 ...]

The real field (`--field jump`: the 3-channel JUMP field that configs/jump.py is tuned on;
`--field pcca`: the 5-channel Cell Painting field, held out of that tuning) is taken as the
clean reference. Per channel, its signal above the camera offset (the 0.5th percentile) is
scaled so that its 99.9th percentile is `--photons` expected photons, and an acquisition is
simulated as a camera records it: counts = offset + gain * Poisson(photons) + Normal(0,
read_noise), rounded to uint16. The reference, in the same counts, is offset + gain *
photons (the noise-free expectation). Then `configs/jump.py` trains on the noisy field as
a user would (`--steps` overrides train.num_steps; any `--config.a.b=v` too), the field is
denoised, and each channel is scored against the reference: PSNR (range: the reference's
max - min), SSIM, and the lag-1 correlation of the residual (noisy - denoised) along X and
Y, which is ~0 for a residual of pure pixel-independent noise and grows when structure is
removed with it. Prints one table row per channel and writes `results.json` in --workdir.
"""

import argparse
import json
import os
import time

import numpy as np
import tifffile

from n2v_jax.configs import jump
from n2v_jax.inference import metrics
from n2v_jax.inference import predictor
from n2v_jax.training import config as train_config
from n2v_jax.training import trainer
from n2v_jax.inference.options import PredictOptions

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FIELDS = {
    "jump": ("microscopy/jump_cpg0000_BR00117006_A01_s1/jump_BR00117006_A01_s1_CYX.tif",
             ["DNA", "RNA", "AGP"]),
    "pcca": ("microscopy/cellpainting_pcca_BR00143976_C03_s3/pcca_BR00143976_C03_s3_CYX.tif",
             None),
}


def simulate(reference_CYX: np.ndarray, photons: float, gain: float, offset: float,
             read_noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(noisy uint16 counts, noise-free expectation float32), both (C, Y, X)."""
  rng = np.random.default_rng(seed)
  signal = reference_CYX.astype(np.float64)
  signal = np.maximum(signal - np.percentile(signal, 0.5, axis=(1, 2), keepdims=True), 0.0)
  expected_photons = signal * photons / np.percentile(signal, 99.9, axis=(1, 2), keepdims=True)
  counts = offset + gain * rng.poisson(expected_photons) + rng.normal(0.0, read_noise,
                                                                      signal.shape)
  noisy = np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
  return noisy, (offset + gain * expected_photons).astype(np.float32)


def lag1(residual_YX: np.ndarray, axis: int) -> float:
  r = residual_YX - residual_YX.mean()
  a, b = np.moveaxis(r, axis, 0)[1:], np.moveaxis(r, axis, 0)[:-1]
  return float((a * b).mean() / (r * r).mean())


def score(reference_YX: np.ndarray, noisy_YX: np.ndarray, denoised_YX: np.ndarray) -> dict:
  data_range = float(reference_YX.max() - reference_YX.min())
  residual = noisy_YX.astype(np.float64) - denoised_YX
  return {
      "psnr_noisy": metrics.psnr(reference_YX, noisy_YX.astype(np.float32), data_range),
      "psnr_denoised": metrics.psnr(reference_YX, denoised_YX, data_range),
      "ssim_noisy": metrics.ssim(reference_YX, noisy_YX.astype(np.float32), data_range),
      "ssim_denoised": metrics.ssim(reference_YX, denoised_YX, data_range),
      "residual_lag1_x": lag1(residual, 1), "residual_lag1_y": lag1(residual, 0),
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--field", choices=sorted(FIELDS), default="jump")
  p.add_argument("--photons", type=float, default=30.0, help="expected photons at the 99.9th "
                 "percentile of each channel's signal")
  p.add_argument("--gain", type=float, default=2.0, help="counts per photon")
  p.add_argument("--offset", type=float, default=100.0, help="camera offset (counts)")
  p.add_argument("--read-noise", type=float, default=3.0, help="read noise sigma (counts)")
  p.add_argument("--steps", type=int, default=800, help="train.num_steps")
  p.add_argument("--seed", type=int, default=0, help="noise and training seed")
  p.add_argument("--workdir", required=True)
  args, overrides = p.parse_known_args()
  root = os.environ.get("N2V_DATA", os.path.join(REPO, "..", "shared", "data"))
  path, names = FIELDS[args.field]
  reference_field = tifffile.imread(os.path.join(root, path))
  names = names or [f"ch{c}" for c in range(reference_field.shape[0])]
  noisy, reference = simulate(reference_field, args.photons, args.gain, args.offset,
                              args.read_noise, args.seed)
  os.makedirs(args.workdir, exist_ok=True)
  noisy_path = os.path.join(args.workdir, "noisy_CYX.tif")
  tifffile.imwrite(noisy_path, noisy, imagej=True, metadata={"axes": "CYX", "Labels": names},
                   photometric="minisblack")

  config = jump.get_config()
  config.data.path = noisy_path
  config.seed = args.seed
  config.train.num_steps = args.steps
  config.train.checkpoint_every = args.steps
  config.train.progress = False
  for item in overrides:  # --config.a.b=value, typed as the field it replaces
    key, _, value = item.removeprefix("--config.").partition("=")
    *groups, field = key.split(".")
    node = config
    for g in groups:
      node = node[g]
    old = node[field]
    node[field] = (value if isinstance(old, str) else type(old)(json.loads(value))
                   if not isinstance(old, tuple) else tuple(json.loads(value)))
  train_config.validate(config)
  t0 = time.perf_counter()
  trainer.train_and_evaluate(config, os.path.join(args.workdir, "train"))
  train_s = time.perf_counter() - t0
  pred = predictor.load_predictor(os.path.join(args.workdir, "train"))
  denoised = predictor.predict_image(pred, np.moveaxis(noisy, 0, -1).astype(np.float32),
                                     PredictOptions(tile=config.predict.tile))
  denoised = np.moveaxis(denoised, -1, 0)
  rows = {name: score(reference[c], noisy[c], denoised[c]) for c, name in enumerate(names)}
  result = {"field": args.field, "photons": args.photons, "gain": args.gain,
            "offset": args.offset, "read_noise": args.read_noise, "steps": args.steps,
            "seed": args.seed, "overrides": overrides, "train_seconds": train_s,
            "channels": rows}
  with open(os.path.join(args.workdir, "results.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(f"{args.field}, {args.photons:g} photons, {args.steps} steps, seed {args.seed}, "
        f"{' '.join(overrides) or 'configs/jump.py as shipped'}: trained in {train_s:.0f} s")
  print("| channel | PSNR noisy | PSNR denoised | gain | SSIM noisy | SSIM denoised | "
        "residual lag-1 x / y |")
  print("|---|---|---|---|---|---|---|")
  for name, r in rows.items():
    print(f"| {name} | {r['psnr_noisy']:.2f} | {r['psnr_denoised']:.2f} | "
          f"{r['psnr_denoised'] - r['psnr_noisy']:+.2f} | {r['ssim_noisy']:.3f} | "
          f"{r['ssim_denoised']:.3f} | {r['residual_lag1_x']:.2f} / {r['residual_lag1_y']:.2f} |")


if __name__ == "__main__":
  main()
