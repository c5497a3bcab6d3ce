"""Prediction: `python -m n2v_jax.predict --workdir DIR --input PATH --output PATH`.

Tiled with a halo of at least the receptive field, so every output pixel sees exactly
the input it would see in a whole-image pass; overlapping tile cores are blended with
smooth weights. Tile offsets are multiples of 2**depth so pooling grids line up.
"""

import dataclasses
import functools
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from n2v_jax import checkpoint, models, steps, tiff_io


@dataclasses.dataclass
class Predictor:
  model: Any
  variables: Any
  meta: dict
  mean: np.ndarray  # (C,)
  std: np.ndarray  # (C,)
  divisor: int
  halo: int  # pixels of context kept around each tile core (multiple of divisor)

  @property
  def in_channels(self) -> int:
    return int(self.meta["in_channels"])

  @property
  def spatial_axes(self) -> str:
    return self.meta["spatial_axes"]

  @functools.cached_property
  def apply(self):
    return jax.jit(lambda v, x: self.model.apply(v, x, train=False))


def load_predictor(workdir: str) -> Predictor:
  meta_path = os.path.join(workdir, checkpoint.MODEL_JSON)
  if not os.path.exists(meta_path):
    raise FileNotFoundError(f"{workdir}: not a trained workdir (no {checkpoint.MODEL_JSON})")
  meta = checkpoint.read_json(meta_path)
  model_cfg = ml_collections.ConfigDict(meta["model"])
  model = models.make_model(model_cfg, meta["in_channels"])
  tx = steps.make_optimizer(ml_collections.ConfigDict(meta["opt"]))
  abstract = jax.eval_shape(functools.partial(
      steps.create_train_state, model=model, tx=tx,
      input_shape=(1, *meta["patch_shape"], meta["in_channels"])), jax.random.key(0))
  mngr = checkpoint.manager(workdir, read_only=True)
  state = checkpoint.restore(mngr, abstract)
  if state is None:
    raise FileNotFoundError(f"{workdir}: no checkpoint found (train a model first)")
  divisor = models.divisor(model_cfg.depth)
  halo = -(-models.receptive_field_radius(model_cfg) // divisor) * divisor
  return Predictor(model, state.variables, meta, np.asarray(meta["mean"]),
                   np.asarray(meta["std"]), divisor, halo)


def _tile_starts(length: int, tile: int, halo: int, divisor: int) -> list[int]:
  """Starts (in padded coordinates) of tiles of size `tile` covering a padded axis."""
  core = tile - 2 * halo
  span = length - 2 * halo  # the image part (padded to a multiple of divisor)
  if span <= core:
    return [0]
  overlap = min(max(divisor, (core // 8) // divisor * divisor), core - divisor)
  n = -(-(span - core) // (core - overlap)) + 1
  starts = np.linspace(0, span - core, n)
  return sorted({int(s) // divisor * divisor for s in starts[:-1]} | {span - core})


def _core_weight(core: int, ramp: int) -> np.ndarray:
  i = np.arange(core)
  ramp = max(ramp, 1)
  w = np.minimum(1.0, np.minimum(i + 1, core - i) / ramp)
  return 0.5 - 0.5 * np.cos(np.pi * w) + 1e-3  # smooth, positive everywhere


def predict_normalized(pred: Predictor, x: np.ndarray, tile: int = 256,
                       batch: int = 4) -> np.ndarray:
  """Denoise one normalized image (*spatial, C) -> (*spatial, C) float32."""
  spatial, d, h = x.shape[:-1], pred.divisor, pred.halo
  aligned = [-(-s // d) * d for s in spatial]
  pads = [(h, h + a - s) for s, a in zip(spatial, aligned)] + [(0, 0)]
  mode = "reflect" if all(s > 1 for s in spatial) else "edge"
  xp = np.pad(x, pads, mode=mode).astype(np.float32)
  min_tile = 2 * h + 4 * d  # a core of at least 4 pooling cells, else tiling is all halo
  tile_shape = [a + 2 * h if not tile or a + 2 * h <= max(tile, min_tile)
                else max(tile // d * d, min_tile) for a in aligned]
  starts = [_tile_starts(a + 2 * h, t, h, d) for a, t in zip(aligned, tile_shape)]
  out = np.zeros((*aligned, x.shape[-1]), np.float64)
  weight = np.zeros((*aligned, 1), np.float64)
  cores = [t - 2 * h for t in tile_shape]
  axis_w = [_core_weight(c, c // 4) if len(s) > 1 else np.ones(c) for c, s in zip(cores, starts)]
  w_tile = functools.reduce(np.multiply.outer, axis_w)[..., None]
  corners = list(np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(spatial)))
  for i in range(0, len(corners), batch):
    group = corners[i:i + batch]
    tiles = np.stack([xp[tuple(slice(c, c + t) for c, t in zip(cn, tile_shape))] for cn in group])
    if len(group) < batch and len(corners) > batch:  # keep one compiled shape
      tiles = np.concatenate([tiles, np.zeros((batch - len(group), *tiles.shape[1:]), np.float32)])
    y = np.asarray(pred.apply(pred.variables, jnp.asarray(tiles)))
    for cn, yt in zip(group, y):
      core = yt[tuple(slice(h, h + c) for c in cores)]
      where = tuple(slice(c, c + k) for c, k in zip(cn, cores))
      out[where] += w_tile * core
      weight[where] += w_tile
  out = out / weight
  return out[tuple(slice(0, s) for s in spatial)].astype(np.float32)


def _transforms(ndim: int):
  """The 8 symmetries of the square in the (Y, X) plane, with their inverses."""
  y, x = ndim - 2, ndim - 1
  for flip in (False, True):
    for k in range(4):
      fwd = lambda a, k=k, f=flip: np.rot90(np.flip(a, x) if f else a, k, axes=(y, x))
      inv = lambda a, k=k, f=flip: (lambda r: np.flip(r, x) if f else r)(
          np.rot90(a, -k, axes=(y, x)))
      yield fwd, inv


def predict_image(pred: Predictor, image: np.ndarray, tile: int = 256, tta: bool = False,
                  batch: int = 4) -> np.ndarray:
  """Denoise one raw image (*spatial, C) in data units -> float32 in data units."""
  x = ((image - pred.mean) / pred.std).astype(np.float32)
  if not tta:
    y = predict_normalized(pred, x, tile, batch)
  else:
    y = np.mean([inv(predict_normalized(pred, np.ascontiguousarray(fwd(x)), tile, batch))
                 for fwd, inv in _transforms(x.ndim - 1)], axis=0)
  return (y * pred.std + pred.mean).astype(np.float32)


def check_input(pred: Predictor, name: str, array: np.ndarray, spatial_axes: str) -> None:
  if spatial_axes != pred.spatial_axes:
    raise ValueError(f"{name}: spatial axes {spatial_axes}, but the model was trained on "
                     f"{pred.spatial_axes} data")
  if array.shape[-1] != pred.in_channels:
    names = pred.meta.get("channel_names")
    raise ValueError(f"{name}: {array.shape[-1]} channel(s), but the model was trained on "
                     f"{pred.in_channels}" + (f" ({', '.join(names)})" if names else ""))
  bad = ~np.isfinite(array)
  if bad.any():
    raise ValueError(f"{name}: {int(bad.sum())} NaN/inf pixel(s); clean them before denoising")


def predict_file(pred: Predictor, in_path: str, out_path: str, axes: str | None = None,
                 tile: int = 256, tta: bool = False, overwrite: bool = False) -> None:
  if os.path.exists(out_path) and not overwrite:
    raise FileExistsError(f"{out_path} exists; pass --overwrite to replace it")
  img = tiff_io.read_image(in_path, axes)
  array, spatial_axes = tiff_io.to_canonical(img.data, img.axes)
  check_input(pred, in_path, array, spatial_axes)
  out = np.stack([predict_image(pred, s.astype(np.float32), tile, tta) for s in array])
  out = tiff_io.from_canonical(out, img.axes, img.data.shape)
  tiff_io.write_image(out_path, out, img.axes, like=img, overwrite=overwrite)


def predict_path(workdir: str, input_path: str, output_path: str, axes: str | None = None,
                 tile: int = 256, tta: bool = False, overwrite: bool = False) -> list[str]:
  """A TIFF to a TIFF, or a folder to a folder (same file names). Returns the outputs."""
  if os.path.abspath(input_path) == os.path.abspath(output_path):
    raise ValueError(f"--output {output_path} is the input; the input is never modified")
  pred = load_predictor(workdir)
  if not os.path.isdir(input_path):
    if not os.path.exists(input_path):
      raise FileNotFoundError(f"{input_path}: no such file")
    predict_file(pred, input_path, output_path, axes, tile, tta, overwrite)
    return [output_path]
  inputs = tiff_io.list_images(input_path)
  os.makedirs(output_path, exist_ok=True)
  outputs = []
  for p in inputs:
    out = os.path.join(output_path, os.path.basename(p))
    predict_file(pred, p, out, axes, tile, tta, overwrite)
    outputs.append(out)
  return outputs


def main(argv) -> None:
  del argv
  from absl import flags
  f = flags.FLAGS
  try:
    outputs = predict_path(f.workdir, f.input, f.output, f.axes or None, f.tile, f.tta,
                           f.overwrite)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"wrote {len(outputs)} file(s): {', '.join(outputs[:5])}{' ...' if len(outputs) > 5 else ''}")


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("workdir", None, "Trained workdir (model.json + checkpoints).")
  flags.DEFINE_string("input", None, "Noisy TIFF or folder of TIFFs.")
  flags.DEFINE_string("output", None, "Output TIFF or folder.")
  flags.DEFINE_string("axes", "", "Axes of the input, e.g. CYX; default: from the file.")
  flags.DEFINE_integer("tile", 256, "Tile edge in pixels; 0 = whole image.")
  flags.DEFINE_bool("tta", False, "8-fold test-time augmentation.")
  flags.DEFINE_bool("overwrite", False, "Replace existing outputs.")
  flags.mark_flags_as_required(["workdir", "input", "output"])
  app.run(main)
