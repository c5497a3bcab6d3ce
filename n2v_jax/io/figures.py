"""Figures written beside a run or inside a package: the loss curves and the before/after
panels (matplotlib, no JAX). Each is written atomically (`files.atomic_output`)."""

import json
import os

import numpy as np

from n2v_jax.io import files


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
    with files.atomic_output(out_png) as tmp:
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


def noise_model_figure(curves: list[tuple], out_png: str) -> None:
  """A noise model per channel, as PPN2V shows one: p(observation | signal) over the
  observation at a few signal levels, and the noise's standard deviation against the signal.
  curves: per channel (levels, observation grid, likelihood rows, signal axis, std or None)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(len(curves), 2, figsize=(10, 3.4 * len(curves)), squeeze=False)
  for c, (levels, grid, rows, s_axis, std) in enumerate(curves):
    left, right = axes[c]
    for s, row in zip(levels, rows):
      left.plot(grid, row, label=f"signal {s:.4g}")
    left.set_xlabel("observation")
    left.set_ylabel("likelihood")
    left.set_title(f"channel {c}: p(observation | signal)")
    left.legend(fontsize=7)
    if std is not None:
      right.plot(s_axis, std)
      right.set_xlabel("signal")
      right.set_ylabel("noise standard deviation")
      right.set_title(f"channel {c}: standard deviation against signal")
    else:
      right.axis("off")
  fig.tight_layout()
  save_figure(fig, out_png)
