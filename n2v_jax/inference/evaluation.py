"""Scoring a trained workdir against clean images.

    python -m n2v_jax.evaluate --workdir W --noisy NOISY_DIR --clean CLEAN_DIR --output OUT_DIR

Pairs files by stem, denoises each noisy image (with and/or without 8-fold TTA, with
and/or without the SURE blend with the input: inference.blend), and writes
OUT_DIR/per_image.csv and OUT_DIR/evaluation.json. PSNR is reported in two conventions:
a fixed data range (the N2V BSD68 convention: 255, float prediction, no clipping or
rounding, mean of per-image values) and the clean image's own max - min.
"""

import os
import time

import numpy as np

from n2v_jax.errors import N2VError, NotFoundError
from n2v_jax.inference import metrics, predictor
from n2v_jax.inference.options import PredictOptions
from n2v_jax.io import files, pixels, tiff

_EXTENSIONS = (".tif", ".tiff", ".png")


def read_plain(path: str) -> np.ndarray:
  """A 2D (or channels-last) image from TIFF or PNG, as stored."""
  if path.lower().endswith(".png"):
    from PIL import Image
    with Image.open(path) as im:
      pixels.check(path, (im.height, im.width, len(im.getbands())), np.uint16, whole=True)
      data = np.asarray(im)
    pixels.check_dtype(path, data.dtype)
    return data
  return tiff.read_image(path).data


def pair_files(noisy_dir: str, clean_dir: str) -> list[tuple[str, str, str]]:
  """(stem, noisy path, clean path) for every stem present in both folders."""
  def by_stem(folder):
    if not os.path.isdir(folder):
      raise NotFoundError(f"{folder}: no such folder")
    return {os.path.splitext(f)[0]: os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.lower().endswith(_EXTENSIONS) and not f.startswith(".")}
  noisy, clean = by_stem(noisy_dir), by_stem(clean_dir)
  stems = sorted(set(noisy) & set(clean))
  if not stems:
    raise N2VError(f"no image in {noisy_dir} has a clean partner (same file stem) in {clean_dir}")
  missing = sorted(set(noisy) - set(clean))
  if missing:
    raise N2VError(f"{len(missing)} noisy image(s) have no clean partner in {clean_dir}, "
                   f"e.g. {missing[0]}")
  return [(s, noisy[s], clean[s]) for s in stems]


def score(clean: np.ndarray, prediction: np.ndarray, data_range: float) -> dict:
  clean = clean.astype(np.float64)
  return {"psnr": metrics.psnr(clean, prediction, data_range),
          "psnr_clean_range": metrics.psnr_clean_range(clean, prediction),
          "ssim": metrics.ssim(clean, prediction, data_range)}


def evaluate(workdir: str, noisy_dir: str, clean_dir: str, output_dir: str | None = None,
             tta_modes: tuple[bool, ...] = (False, True),
             blend_modes: tuple[bool, ...] | None = None, options: PredictOptions | None = None,
             data_range: float | None = None, keep_predictions: bool = False) -> dict:
  """Per-image and mean scores; writes per_image.csv and evaluation.json into output_dir
  (replacing them only with options.overwrite). Columns per mode: plain_*, tta_* and, with
  the blend, plain_blend_*, tta_blend_*; blend_modes None: as the model was trained
  (config.predict.blend). options: tile and batch of the prediction."""
  options = options or PredictOptions()
  for name in ("per_image.csv", "evaluation.json") if output_dir else ():
    files.refuse_existing(os.path.join(output_dir, name), options.overwrite)
  pairs = pair_files(noisy_dir, clean_dir)
  pred = predictor.load_predictor(workdir)
  blend_modes = (pred.blend,) if blend_modes is None else tuple(blend_modes)
  clean_images = {s: read_plain(c) for s, _, c in pairs}
  if data_range is None:  # the N2V convention for 8-bit data; else the set's own range
    data_range = (255.0 if all(c.dtype == np.uint8 for c in clean_images.values()) else
                  float(max(c.max() for c in clean_images.values()) -
                        min(c.min() for c in clean_images.values())))
  rows, predictions, seconds = [], {}, {}
  for stem, noisy_path, _ in pairs:
    noisy = read_plain(noisy_path).astype(np.float32)
    clean = clean_images[stem]
    if noisy.shape != clean.shape:
      raise N2VError(f"{noisy_path}: shape {noisy.shape} differs from its clean image "
                     f"{clean.shape}")
    image = noisy[..., None] if noisy.ndim == len(pred.spatial_axes) else noisy
    predictor.check_input(pred, noisy_path, image, pred.spatial_axes)
    row = {"image": stem, **{f"noisy_{k}": v for k, v in score(clean, noisy, data_range).items()}}
    for tta in tta_modes:
      t0 = time.perf_counter()
      outs = predictor.predict_variants(pred, image, options.replace(tta=tta),
                                        blend=any(blend_modes))
      seconds[tta] = seconds.get(tta, 0.0) + time.perf_counter() - t0
      for blend in blend_modes:
        out = outs[blend].reshape(noisy.shape)
        tag = ("tta" if tta else "plain") + ("_blend" if blend else "")
        row.update({f"{tag}_{k}": v for k, v in score(clean, out, data_range).items()})
        if keep_predictions:
          predictions[(stem, tta) if not blend else (stem, tta, "blend")] = out
    rows.append(row)
  columns = [k for k in rows[0] if k != "image"]
  summary = {"workdir": os.path.abspath(workdir), "images": len(rows), "data_range": data_range,
             "mean": {k: float(np.mean([r[k] for r in rows])) for k in columns},
             "std": {k: float(np.std([r[k] for r in rows])) for k in columns},
             "predict_seconds": {("tta" if k else "plain"): v for k, v in seconds.items()}}
  if output_dir:
    os.makedirs(output_dir, exist_ok=True)
    files.write_csv_atomic(os.path.join(output_dir, "per_image.csv"), ["image", *columns], rows)
    files.write_json_atomic(os.path.join(output_dir, "evaluation.json"),
                            {**summary, "per_image": rows})
  if keep_predictions:
    summary["predictions"] = predictions
  summary["per_image"] = rows
  return summary
