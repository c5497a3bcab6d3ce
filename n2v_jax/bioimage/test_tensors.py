"""The package's test input: a region of the first training image (read as training read
it), or a given image, cut to a size every consumer accepts."""

import ml_collections
import numpy as np

from n2v_jax.bioimage import rdf
from n2v_jax.data import sources
from n2v_jax.errors import N2VError, NotFoundError
from n2v_jax.inference import predictor
from n2v_jax.io import npy, tiff
from n2v_jax.io.axes import to_canonical
from n2v_jax.workdir import saved_config

# Test-input edge (pixels per spatial axis), kept small so the package stays small.
TEST_EDGE = {2: 256, 3: 64}


def _read_image(path: str, axes: str | None) -> np.ndarray:
  """The first sample (S/T index 0) of a TIFF or .npy as (*spatial, C) float32."""
  if path.endswith(".npy"):
    data, axes = npy.open_npy(path, axes)
  else:
    img = tiff.read_image(path, axes)
    data, axes = img.data, img.axes
  array, _ = to_canonical(data, axes)
  return np.asarray(array[0], np.float32)


def training_region(workdir: str, edge: int) -> np.ndarray:
  """A centred region (at most `edge` per axis) of the first training sample, read as
  training read it (from config.json: data.path, or the built-in synthetic image)."""
  config = saved_config.read(workdir)
  data_cfg = ml_collections.ConfigDict(config["data"])
  if not data_cfg.path and data_cfg.axes:
    raise N2VError(f"{workdir} was trained on a NumPy array, which the workdir does not keep; "
                   "give a test image with --test_input")
  try:
    source = sources.open_source(data_cfg, config["seed"])
  except FileNotFoundError as e:
    raise NotFoundError(f"the training data is not there any more ({e}); give a test "
                        "image with --test_input") from None
  size = np.minimum(source.sizes[0], edge)
  return source.read(0, (source.sizes[0] - size) // 2, size)


def choose_test_input(pred: predictor.Predictor, workdir: str,
                      test_input: str | np.ndarray | None, test_axes: str | None) -> np.ndarray:
  """The package's test input (*spatial, C) float32: per axis, the centred largest multiple
  of the divisor, at most TEST_EDGE (or the minimum size); reflect-padded up to the minimum
  size where the image is smaller."""
  nd = len(pred.spatial_axes)
  step, min_size, _ = rdf.size_constraints(pred)
  edge = max(TEST_EDGE[nd] // step * step, min_size)
  if test_input is None:
    image = training_region(workdir, edge)
  else:
    name = test_input if isinstance(test_input, str) else "the test input"
    image = (_read_image(test_input, test_axes) if isinstance(test_input, str)
             else np.asarray(test_input, np.float32))
    if image.ndim != nd + 1:
      raise N2VError(f"{name}: shape {image.shape}, expected (*{pred.spatial_axes}, C) for "
                     f"this {nd}D model")
    predictor.check_input(pred, name, image, pred.spatial_axes)
  spatial = image.shape[:-1]
  target = [min(max(s // step * step, min_size), edge) for s in spatial]
  kept = [min(s, t) for s, t in zip(spatial, target)]
  image = image[tuple(slice((s - k) // 2, (s - k) // 2 + k) for s, k in zip(spatial, kept))]
  pads = [(0, t - k) for t, k in zip(target, kept)] + [(0, 0)]
  return np.ascontiguousarray(np.pad(image, pads, mode="reflect"), np.float32)
