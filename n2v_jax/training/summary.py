"""The end of a run: the loss plot and, where ground truth is known, the denoising of the
training data with the saved model, scored by PSNR (`summary.json`, `before_after.png`)."""

import os
import time
from typing import Any

import numpy as np

from n2v_jax import reporter
from n2v_jax.inference import metrics, predictor
from n2v_jax.inference.options import PredictOptions
from n2v_jax.io import figures, files

SUMMARY_JSON = "summary.json"


def plot_losses(workdir: str) -> None:
  figures.plot_losses(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "loss.png"))


def final_evaluation(config: Any, workdir: str,
                     samples: tuple[list[np.ndarray], list[np.ndarray]] | None) -> dict:
  """Denoises (noisy, clean) raw samples, when ground truth is known, with the saved model;
  writes summary.json."""
  summary = {"steps": config.train.num_steps, "workdir": workdir}
  if samples is not None:
    noisy, clean = samples
    pred = predictor.load_predictor(workdir)
    options = PredictOptions(tile=config.predict.tile, tta=config.predict.tta)
    t0 = time.perf_counter()
    denoised = [predictor.predict_image(pred, im, options) for im in noisy]
    summary["predict_seconds"] = time.perf_counter() - t0
    ranges = [float(c.max() - c.min()) for c in clean]
    summary["psnr_noisy"] = float(np.mean([metrics.psnr(c, n, r) for c, n, r in
                                           zip(clean, noisy, ranges)]))
    summary["psnr_denoised"] = float(np.mean([metrics.psnr(c, d, r) for c, d, r in
                                              zip(clean, denoised, ranges)]))
    summary["psnr_data_range"] = "clean max - min per image"
    reporter.result(f"PSNR noisy {summary['psnr_noisy']:.2f} dB -> denoised "
                    f"{summary['psnr_denoised']:.2f} dB")
    figures.before_after_figure(noisy[0][..., 0], denoised[0][..., 0], clean[0][..., 0],
                                os.path.join(workdir, "before_after.png"))
  files.write_json_atomic(os.path.join(workdir, SUMMARY_JSON), summary)
  return summary


def finish(config: Any, workdir: str, dataset: Any) -> dict:
  """The end of a run: the loss plot, the final evaluation on ground truth, summary.json."""
  plot_losses(workdir)
  return final_evaluation(config, workdir, dataset.evaluation_samples())
