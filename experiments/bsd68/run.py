"""BSD68 (sigma 25): train (or resume), denoise the 68 test images, score, report.

    python experiments/bsd68/run.py --config configs/bsd68_cpu.py --workdir runs/bsd68_cpu

Writes experiments/bsd68/results/<config name>/{results.md, results.json, per_image.csv,
crops.png} (or --results DIR). Scoring follows the N2V authors: per-image PSNR with data
range 255 on the float prediction (no clipping or rounding), averaged over the 68 images;
the clean-range PSNR and SSIM are reported beside it. Rerunning resumes training and
re-scores.
"""

import os
import platform
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(REPO, "configs/bsd68_cpu.py"),
                                          "Training config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (resumed if it exists).")
_RESULTS = flags.DEFINE_string("results", None, "Results folder (default: "
                               "experiments/bsd68/results/<config name>).")
flags.mark_flags_as_required(["workdir"])

DATA_HELP = """BSD68 data not found at {path}.
It comes from the DnCNN repository (github.com/cszn/DnCNN: testsets/BSD68 and
TrainingCodes/.../data/Train400; non-commercial research use only) with Gaussian noise
sigma 25 added by make_noisy.py. Lay it out as:
  {path}/train_noisy_sigma25.tif      (400, 180, 180) float32 noisy training stack
  {path}/test_noisy_sigma25/test001.tif ... test068.tif   noisy test images (float32)
  {path}/test_clean/test001.tif ... test068.tif           clean test images (uint8)
and point N2V_DATA at the folder that holds bsd68/ (default: ../shared/data beside the repo)."""


def _commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def crops_figure(evaluation: dict, noisy_dir: str, clean_dir: str, out_png: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from n2v_jax.inference.evaluation import read_plain
  stems = [r["image"] for r in evaluation["per_image"]][:3]
  fig, axes = plt.subplots(len(stems), 3, figsize=(9, 3 * len(stems)))
  for row, stem in zip(axes, stems):
    noisy = read_plain(os.path.join(noisy_dir, stem + ".tif"))
    clean = read_plain(os.path.join(clean_dir, stem + ".tif"))
    pred = evaluation["predictions"][(stem, False)]
    r = next(p for p in evaluation["per_image"] if p["image"] == stem)
    y, x = noisy.shape[0] // 2 - 64, noisy.shape[1] // 2 - 64
    crop = (slice(y, y + 128), slice(x, x + 128))
    for ax, im, title in zip(row, (noisy, pred, clean), (
        f"{stem} noisy {r['noisy_psnr']:.2f} dB", f"N2V {r['plain_psnr']:.2f} dB", "clean")):
      ax.imshow(im[crop], cmap="gray", vmin=0, vmax=255)
      ax.set_title(title, fontsize=9)
      ax.axis("off")
  fig.tight_layout()
  fig.savefig(out_png, dpi=90)
  plt.close(fig)


def main(argv) -> None:
  del argv
  import jax
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  from n2v_jax.configs import bsd68_n2v
  from n2v_jax import errors
  from n2v_jax.inference import evaluation
  from n2v_jax.inference.options import PredictOptions
  from n2v_jax.io import files
  from n2v_jax.training import trainer
  config = _CONFIG.value
  data = bsd68_n2v.bsd68_dir()
  noisy_dir, clean_dir = (os.path.join(data, "test_noisy_sigma25"), os.path.join(data, "test_clean"))
  if not all(os.path.exists(p) for p in (config.data.path, noisy_dir, clean_dir)):
    print(DATA_HELP.format(path=data), file=sys.stderr)
    sys.exit(2)
  name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
  results = _RESULTS.value or os.path.join(REPO, "experiments", "bsd68", "results", name)
  workdir = os.path.abspath(_WORKDIR.value)

  timing_path = os.path.join(workdir, "timing.json")
  timing = files.read_json(timing_path) if os.path.exists(timing_path) else {"train_seconds": 0.0}
  t0 = time.perf_counter()
  try:
    trainer.train_and_evaluate(config, workdir)
  except (errors.N2VError, OSError) as e:
    print(f"error: {errors.one_line(e)}", file=sys.stderr)
    sys.exit(1)
  timing["train_seconds"] += time.perf_counter() - t0  # includes compilation, excludes scoring
  files.write_json_atomic(timing_path, timing)

  t0 = time.perf_counter()
  blend = bool(config.predict.blend)  # then scored both ways: the network alone, and blended
  ev = evaluation.evaluate(workdir, noisy_dir, clean_dir, results, (False, True),
                           blend_modes=(False, True) if blend else (False,),
                           options=PredictOptions(tile=config.predict.tile, overwrite=True),
                           data_range=255.0, keep_predictions=True)
  device = jax.devices()[0]
  m, s = ev["mean"], ev["std"]
  summary = {
      "config": name, "algorithm": config.algorithm, "steps": config.train.num_steps, "batch_size": config.train.batch_size,
      "train_wall_seconds": round(timing["train_seconds"], 1),
      "evaluate_wall_seconds": round(time.perf_counter() - t0, 1),
      "device": f"{device.platform}: {device.device_kind}", "cpu": platform.processor() or platform.machine(),
      "cpu_count": os.cpu_count(), "commit": _commit(), "images": ev["images"],
      "recipe": {"perc_pix": config.mask.perc_pix, "strategy": config.mask.strategy,
                 "features": config.model.features, "batch_norm": config.model.batch_norm,
                 "residual": config.model.residual, "n2v2": config.model.n2v2,
                 "patch": list(config.data.patch_shape), "lr": config.opt.learning_rate,
                 "schedule": config.opt.schedule, "grad_clip": config.opt.grad_clip},
      "psnr_noisy": m["noisy_psnr"],
      "psnr": m["plain_psnr"], "psnr_std": s["plain_psnr"],
      "psnr_tta": m["tta_psnr"], "psnr_tta_std": s["tta_psnr"],
      "psnr_clean_range": m["plain_psnr_clean_range"], "psnr_clean_range_tta": m["tta_psnr_clean_range"],
      "ssim": m["plain_ssim"], "ssim_tta": m["tta_ssim"],
  }
  if blend:  # the recipe's own prediction: the network's output blended with the input
    summary.update({"psnr_blend": m["plain_blend_psnr"], "psnr_blend_std": s["plain_blend_psnr"],
                    "psnr_tta_blend": m["tta_blend_psnr"], "psnr_tta_blend_std": s["tta_blend_psnr"],
                    "ssim_blend": m["plain_blend_ssim"], "ssim_tta_blend": m["tta_blend_ssim"]})
  files.write_json_atomic(os.path.join(results, "results.json"), summary)
  label = {"n2v": "N2V", "n2n": "Noise2Noise", "care": "CARE"}[config.algorithm]
  md = [f"# BSD68 sigma 25: `{name}`", "",
        f"Steps {summary['steps']} x batch {summary['batch_size']}; training wall time "
        f"{summary['train_wall_seconds'] / 60:.1f} min on {summary['device']} "
        f"({summary['cpu_count']} cores); commit {summary['commit']}.", "",
        "Recipe: " + ", ".join(f"{k} {v}" for k, v in summary["recipe"].items()) + ".", "",
        "| | PSNR (range 255, N2V convention) | PSNR (clean max-min) | SSIM (range 255) |",
        "|---|---|---|---|",
        f"| noisy input | {m['noisy_psnr']:.2f} | {m['noisy_psnr_clean_range']:.2f} | {m['noisy_ssim']:.4f} |",
        f"| {label} | {m['plain_psnr']:.2f} ± {s['plain_psnr']:.2f} | {m['plain_psnr_clean_range']:.2f} | {m['plain_ssim']:.4f} |",
        f"| {label} + 8-fold TTA | {m['tta_psnr']:.2f} ± {s['tta_psnr']:.2f} | {m['tta_psnr_clean_range']:.2f} | {m['tta_ssim']:.4f} |",
        *([f"| {label} + SURE blend (the recipe's prediction) | {m['plain_blend_psnr']:.2f} ± {s['plain_blend_psnr']:.2f} | {m['plain_blend_psnr_clean_range']:.2f} | {m['plain_blend_ssim']:.4f} |",
           f"| {label} + 8-fold TTA + SURE blend | {m['tta_blend_psnr']:.2f} ± {s['tta_blend_psnr']:.2f} | {m['tta_blend_psnr_clean_range']:.2f} | {m['tta_blend_ssim']:.4f} |"]
          if blend else []),
        "", "Mean ± std over the 68 test images. Per image: `per_image.csv`. Crops: `crops.png`."]
  with open(os.path.join(results, "results.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  crops_figure(ev, noisy_dir, clean_dir, os.path.join(results, "crops.png"))
  print("\n".join(md))


if __name__ == "__main__":
  app.run(main)
