"""Run reporting: progress bar, loss curves, and the end-of-run evaluation on ground truth."""

import json
import os
import time
from typing import Any

import numpy as np

from n2v_jax import cluster, inference, metrics


class Progress:
  """A tqdm bar over steps, updated only at log points (no per-step host sync)."""

  def __init__(self, start: int, total: int, batch_size: int, enabled: bool):
    self.bar = None
    if enabled:
      from tqdm import tqdm
      self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
    self.last = start

  def update(self, step: int, record: dict) -> None:
    if self.bar is None:
      return
    self.bar.update(step - self.last)
    self.last = step
    post = {"loss": f"{record['train_loss']:.4f}", "patches/s": f"{record['patches_per_s']:.1f}"}
    if "val_loss" in record:
      post["val"] = f"{record['val_loss']:.4f}"
    self.bar.set_postfix(post, refresh=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def plot_losses(metrics_path: str, out_png: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if not os.path.exists(metrics_path):
    return
  with open(metrics_path) as f:
    rows = [json.loads(l) for l in f if l.strip()]
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], label="train")
  val = [r for r in rows if "val_loss" in r]
  if val:
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
  ax.set_xlabel("step")
  ax.set_ylabel("blind-spot loss (normalized units)")
  if all(r["train_loss"] > 0 for r in rows) and all(r["val_loss"] > 0 for r in val):
    ax.set_yscale("log")  # not for a constant image, whose losses are 0
  ax.legend()
  fig.tight_layout()
  save_figure(fig, out_png)


def save_figure(fig, out_png: str) -> None:
  """Writes a matplotlib figure as PNG atomically (no partial figure on a full disk), closes it."""
  import matplotlib.pyplot as plt
  try:
    with cluster.atomic_output(out_png) as tmp:
      fig.savefig(tmp, dpi=100, format="png")
  finally:
    plt.close(fig)


def before_after_figure(noisy: np.ndarray, denoised: np.ndarray, clean: np.ndarray | None,
                        out_png: str, titles: tuple[str, ...] = ("noisy", "N2V", "clean")) -> None:
  """Side-by-side panels of a 2D (Y, X) view; 3D data shows the middle Z slice."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = [noisy, denoised] + ([clean] if clean is not None else [])
  views = [p[p.shape[0] // 2] if p.ndim == 3 else p for p in panels]
  lo, hi = np.percentile(views[-1], [0.5, 99.5])
  fig, axes = plt.subplots(1, len(views), figsize=(4 * len(views), 4.2))
  for ax, view, title in zip(axes, views, titles):
    ax.imshow(view, cmap="gray", vmin=lo, vmax=hi)
    ax.set_title(title)
    ax.axis("off")
  fig.tight_layout()
  save_figure(fig, out_png)


def final_evaluation(config: Any, workdir: str,
                     samples: tuple[list[np.ndarray], list[np.ndarray]] | None) -> dict:
  """Denoises (noisy, clean) raw samples, when ground truth is known, with the saved model;
  writes summary.json."""
  summary = {"steps": config.train.num_steps, "workdir": workdir}
  if samples is not None:
    noisy, clean = samples
    pred = inference.load_predictor(workdir)
    t0 = time.perf_counter()
    denoised = [inference.predict_image(pred, im, config.predict.tile, config.predict.tta)
                for im in noisy]
    summary["predict_seconds"] = time.perf_counter() - t0
    ranges = [float(c.max() - c.min()) for c in clean]
    summary["psnr_noisy"] = float(np.mean([metrics.psnr(c, n, r) for c, n, r in
                                           zip(clean, noisy, ranges)]))
    summary["psnr_denoised"] = float(np.mean([metrics.psnr(c, d, r) for c, d, r in
                                              zip(clean, denoised, ranges)]))
    summary["psnr_data_range"] = "clean max - min per image"
    print(f"PSNR noisy {summary['psnr_noisy']:.2f} dB -> denoised "
          f"{summary['psnr_denoised']:.2f} dB")
    before_after_figure(noisy[0][..., 0], denoised[0][..., 0], clean[0][..., 0],
                        os.path.join(workdir, "before_after.png"))
  cluster.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
  return summary
