"""Fitting a noise model (nn.noise_models) per channel from (signal, observation) pairs:

- calibration: noisy frames and their clean signal (given, or the average of a static stack
  of frames: its S/T axis);
- bootstrapped (PPN2V): a trained N2V workdir's predictions on its training images (or on
  `images`) as the signal, those noisy images as the observation: noisy data only.

The models are saved as plain arrays + JSON, with a figure of each channel's fit (the
likelihood over the observation at several signal levels, and the standard deviation
against the signal) beside them.
"""

from __future__ import annotations

import os

import numpy as np

from n2v_jax.errors import N2VError
from n2v_jax.inference import predictor
from n2v_jax.inference.options import PredictOptions
from n2v_jax.io import figures, files, tiff
from n2v_jax.io.axes import to_canonical
from n2v_jax.nn import noise_models
from n2v_jax.workdir import saved_config


def _canonical(path: str, axes: str | None) -> tuple[np.ndarray, str]:
  img = tiff.read_image(path, axes)
  array, spatial = to_canonical(img.data, img.axes)
  return array.astype(np.float32), spatial


def calibration_pairs(noisy: str, signal: str | None, axes: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
  """(signal, observation), each (S, *spatial, C): the given signal, or the average of the
  noisy stack's samples (S/T frames of a static sample) repeated for each frame."""
  observation, spatial = _canonical(noisy, axes)
  if signal:
    clean, clean_spatial = _canonical(signal, None)
    if clean.shape[1:] != observation.shape[1:] or clean_spatial != spatial:
      raise N2VError(f"{signal}: shape {clean.shape[1:]} does not match the noisy frames "
                     f"{observation.shape[1:]} of {noisy}")
    clean = np.broadcast_to(clean, observation.shape) if len(clean) == 1 else clean
  else:
    if len(observation) < 2:
      raise N2VError(f"{noisy}: one frame; give --signal, or a stack of frames of a static "
                     "sample (an S or T axis) to average")
    clean = np.broadcast_to(observation.mean(axis=0, keepdims=True), observation.shape)
  return np.asarray(clean), observation


def bootstrap_pairs(workdir: str, images: str | None = None, axes: str | None = None,
                    options: PredictOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(signal, observation): the workdir's predictions on its training images (or `images`)
  and those images."""
  if images is None:
    images = saved_config.read(workdir)["data"]["path"]
    axes = axes or saved_config.read(workdir)["data"]["axes"] or None
    if not images:
      raise N2VError(f"{workdir} was trained on the built-in synthetic image or an array; "
                     "give the noisy images (--input)")
  pred = predictor.load_predictor(workdir)
  signal, observation = [], []
  for path in tiff.list_images(images):
    array, spatial = _canonical(path, axes)
    predictor.check_input(pred, path, array, spatial)
    signal.append(np.stack([predictor.predict_image(pred, s, options) for s in array]))
    observation.append(array)
  return (np.concatenate([s.reshape(-1, s.shape[-1]) for s in signal]),
          np.concatenate([o.reshape(-1, o.shape[-1]) for o in observation]))


def fit(signal: np.ndarray, observation: np.ndarray, kind: str = "gmm", **kwargs
        ) -> list[noise_models.GMM | noise_models.Histogram]:
  """One model per channel (the last axis)."""
  signal, observation = (np.reshape(a, (-1, a.shape[-1])) for a in (signal, observation))
  if kind == "gmm":
    return [noise_models.fit_gmm(signal[:, c], observation[:, c], **kwargs)
            for c in range(signal.shape[-1])]
  if kind == "histogram":
    return [noise_models.histogram_model(signal[:, c], observation[:, c], **kwargs)
            for c in range(signal.shape[-1])]
  raise N2VError(f"--kind {kind!r}: expected gmm or histogram")


def save(models: list, folder: str, signal: np.ndarray, overwrite: bool = False) -> str:
  """The models and their figure into `folder` (refused if it holds a model, unless
  overwrite); returns the figure's path."""
  files.refuse_existing(os.path.join(folder, "noise_model.json"), overwrite)
  noise_models.save(models, folder)
  path = os.path.join(folder, "noise_model.png")
  flat = np.reshape(signal, (-1, np.shape(signal)[-1]))
  curves = []
  for c, model in enumerate(models):
    lo, hi = np.percentile(flat[:, c], [1, 99])
    levels = np.linspace(lo, hi, 5)
    grid = np.linspace(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo), 400)
    rows = [np.asarray(noise_models.likelihood(model, grid, np.full_like(grid, s)))
            for s in levels]
    s_axis = np.linspace(lo, hi, 100)
    std = (np.sqrt(np.asarray(noise_models.gmm_moments(model, s_axis)[1]))
           if isinstance(model, noise_models.GMM) else None)
    curves.append((levels, grid, rows, s_axis, std))
  figures.noise_model_figure(curves, path)
  return path
