"""Prediction: `python -m n2v_jax.predict --workdir DIR --input PATH --output PATH`.

Tiled with a halo of at least the receptive field, so every output pixel sees exactly
the input it would see in a whole-image pass: equal cores abut, nothing is blended.
Tile offsets are multiples of 2**depth so pooling grids line up. Tiles are spread over
all devices (a CPU split into several by n2v_jax.runtime runs them side by side).
"""

import contextlib
import dataclasses
import functools
import itertools
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from n2v_jax import checkpoint, intensity, models, steps, tiff_io


@dataclasses.dataclass
class Predictor:
  model: Any
  variables: Any
  meta: dict
  mean: np.ndarray  # (C,)
  std: np.ndarray  # (C,)  x_norm = (intensity.forward(x, transform) - mean) / std
  divisor: int
  halo: int  # pixels of context kept around each tile core (multiple of divisor)

  @property
  def transform(self) -> str:
    return self.meta.get("transform", "none")  # absent in models older than it

  @property
  def in_channels(self) -> int:
    return int(self.meta["in_channels"])

  @property
  def spatial_axes(self) -> str:
    return self.meta["spatial_axes"]

  @functools.cached_property
  def _inference(self) -> tuple[Any, Any]:
    """(model, variables) that predict: batch norm folded into the convolutions."""
    return models.fold_batch_norm(self.model, self.variables)

  @functools.cached_property
  def apply(self):
    model = self._inference[0]
    return jax.jit(lambda v, x: models.apply_model(model, v, x, train=False))

  @functools.cached_property
  def n_devices(self) -> int:
    """Devices prediction spreads tiles over (one process: all of them)."""
    return jax.device_count() if jax.process_count() == 1 else 1

  @functools.cached_property
  def _shardings(self):
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("tiles",))
    tiles = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("tiles"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return tiles, jax.device_put(self._inference[1], replicated)

  def predict_tiles(self, tiles: np.ndarray, sharded: bool = False) -> jax.Array:
    """Model output for a batch of normalized tiles; `sharded`: split over all devices."""
    if not sharded:
      return self.apply(self._inference[1], jnp.asarray(tiles))
    tile_sharding, variables = self._shardings
    return self.apply(variables, jax.device_put(tiles, tile_sharding))


def load_predictor(workdir: str) -> Predictor:
  meta_path = os.path.join(workdir, checkpoint.MODEL_JSON)
  if not os.path.exists(meta_path):
    raise FileNotFoundError(f"{workdir}: not a trained workdir (no {checkpoint.MODEL_JSON})")
  meta = checkpoint.read_json(meta_path)
  checkpoint.check_model_format(workdir, meta)
  model_cfg = ml_collections.ConfigDict(meta["model"])
  model = models.make_model(model_cfg, meta["in_channels"])
  tx = steps.make_optimizer(ml_collections.ConfigDict(meta["opt"]))
  abstract = jax.eval_shape(functools.partial(
      steps.create_train_state, model=model, tx=tx,
      input_shape=(1, *meta["patch_shape"], meta["in_channels"])), jax.random.key(0))
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # any writer's topology
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one_device),
                          abstract)
  mngr = checkpoint.manager(workdir, read_only=True)
  state = checkpoint.restore(mngr, abstract)
  if state is None:
    raise FileNotFoundError(f"{workdir}: no checkpoint found (train a model first)")
  divisor = models.divisor(model_cfg.depth)
  halo = -(-models.receptive_field_radius(model_cfg) // divisor) * divisor
  return Predictor(model, state.variables, meta, np.asarray(meta["mean"]),
                   np.asarray(meta["std"]), divisor, halo)


# Voxels per model call (tiles x batch). Each 32-feature float32 activation of a call is
# 128 x this many bytes and a few are alive at once: 2**21 keeps a call under ~1.5 GiB.
# Larger images are cut into more (smaller) tiles; the result is the same (tiling is exact).
MAX_VOXELS_PER_CALL = 2**21


def plan_tiles(aligned: list[int], tile: int, halo: int, divisor: int, n_parallel: int = 1,
               budget: int = MAX_VOXELS_PER_CALL) -> tuple[list[int], list[int]]:
  """(tiles per axis, core size per axis): equal cores abutting each other, each with a
  halo, tile edges at most `tile`, one call of n_parallel tiles within the voxel budget.
  Among tile counts that satisfy this, the one computing the fewest voxels, counting the
  halos and the blank tiles that fill the last call up to a multiple of n_parallel."""
  d, h, nd = divisor, halo, len(aligned)
  if not tile:  # the whole image in one call, whatever it costs
    return [1] * nd, list(aligned)
  min_core = 4 * d  # a core of at least 4 pooling cells, else tiling is all halo
  max_core = [max(min_core, tile // d * d - 2 * h)] * nd
  while (n_parallel * int(np.prod([c + 2 * h for c in max_core])) > budget
         and max(max_core) > min_core):
    i = int(np.argmax(max_core))
    max_core[i] = max(min_core, max_core[i] - d)
  base = [-(-a // c) for a, c in zip(aligned, max_core)]
  best = None
  for extra in itertools.product(range(min(n_parallel, 8)), repeat=nd):
    counts = [b + e for b, e in zip(base, extra)]
    cores = [-(-a // (n * d)) * d for a, n in zip(aligned, counts)]
    n_tiles = int(np.prod(counts))
    cost = _cost(counts, cores, h, n_parallel)
    if best is None or (cost, n_tiles) < best[0]:
      best = ((cost, n_tiles), counts, cores)
  return best[1], best[2]


# Measured prediction speed-up of model.batch_chunks=8 on 2 CPU cores (benchmark README).
SLICE_SPEEDUP = 1.6


def _cost(counts: list[int], cores: list[int], halo: int, n_parallel: int) -> int:
  """Voxels computed: tiles with their halos, the last call filled up to n_parallel."""
  n_tiles = int(np.prod(counts))
  return -(-n_tiles // n_parallel) * n_parallel * int(np.prod([c + 2 * halo for c in cores]))


def predict_normalized(pred: Predictor, x: np.ndarray, tile: int = 512,
                       batch: int = 0, tta: bool = False) -> np.ndarray:
  """Denoise one normalized image (*spatial, C) -> (*spatial, C) float32.

  Tiles are spread over all devices, and over the model's batch slices on each;
  batch: tiles per call, 0 = as many as the voxel budget allows.
  tta: the mean over the 8 symmetries of the (Y, X) plane, the 8 versions of each tile in
  one call. That equals predicting the 8 transformed images (what `predict_image` does
  otherwise) when the tiles are square in (Y, X) and the image is aligned to the pooling
  grid, so that every transformed tile is aligned too, and tile > 0 (within the voxel
  budget); else returns None.
  """
  spatial, d, h = x.shape[:-1], pred.divisor, pred.halo
  aligned = [-(-s // d) * d for s in spatial]
  n_dev = pred.n_devices if tile else 1
  # Tiles per call: a multiple of the devices times the model's batch slices, which run
  # side by side (models.chunked_conv). With TTA the 8 symmetries fill the slices.
  n_sym = 8 if tta else 1
  slices = max(1, int(pred.model.batch_chunks)) if tile else 1
  n_par = n_dev * max(1, slices // n_sym)
  budget = MAX_VOXELS_PER_CALL // n_sym
  counts, cores = plan_tiles(aligned, tile, h, d, n_par, budget)
  if n_par > n_dev:  # in 3D, budget/n_par-voxel tiles can be mostly halo: then fewer slices
    counts_1, cores_1 = plan_tiles(aligned, tile, h, d, n_dev, budget)
    if _cost(counts_1, cores_1, h, n_dev) < _cost(counts, cores, h, n_par) / SLICE_SPEEDUP:
      n_par, counts, cores = n_dev, counts_1, cores_1
  tile_shape = [c + 2 * h for c in cores]
  # tile=0 asks for the whole image in one call: 8 of them at once could exceed memory
  if tta and (not tile or tile_shape[-1] != tile_shape[-2] or list(spatial) != aligned):
    return None
  syms = list(_transforms(len(spatial) + 1)) if tta else []  # on (B, *spatial, C)
  # Reflect padding: the first `h` padded pixels are the same whatever the total width, so
  # every core pixel sees exactly what it would in a whole-image pass.
  pads = [(h, h + n * c - s) for s, n, c in zip(spatial, counts, cores)] + [(0, 0)]
  mode = "reflect" if all(s > 1 for s in spatial) else "edge"
  xp = np.pad(x.astype(np.float32, copy=False), pads, mode=mode)
  corners = [np.multiply(idx, cores) for idx in itertools.product(*[range(n) for n in counts])]
  tile_voxels = int(np.prod(tile_shape))
  per_call = batch or max(1, budget // tile_voxels)
  per_call = max(n_par, per_call // n_par * n_par)
  calls = -(-len(corners) // per_call)
  per_call = -(-len(corners) // (calls * n_par)) * n_par  # balanced: one compiled shape
  out = np.empty((*[n * c for n, c in zip(counts, cores)], x.shape[-1]), np.float32)
  for i in range(0, len(corners), per_call):
    group = corners[i:i + per_call]
    tiles = np.zeros((per_call, *tile_shape, x.shape[-1]), np.float32)
    for j, cn in enumerate(group):
      tiles[j] = xp[tuple(slice(c, c + t) for c, t in zip(cn, tile_shape))]
    if not tta:
      y = np.asarray(pred.predict_tiles(tiles, sharded=n_dev > 1))
    else:
      # symmetry-major, so each batch slice holds whole symmetries of the same tiles
      ys = np.asarray(pred.predict_tiles(np.concatenate([fwd(tiles) for fwd, _ in syms]),
                                         sharded=n_dev > 1))
      y = np.zeros_like(tiles)
      for (_, inv), part in zip(syms, np.split(ys, n_sym)):
        y += inv(part)
      y /= n_sym
    for cn, yt in zip(group, y):
      out[tuple(slice(c, c + k) for c, k in zip(cn, cores))] = \
          yt[tuple(slice(h, h + k) for k in cores)]
  del xp
  return np.ascontiguousarray(out[tuple(slice(0, s) for s in spatial)])


def _transforms(ndim: int):
  """The 8 symmetries of the square in the (Y, X) plane, with their inverses."""
  y, x = ndim - 2, ndim - 1
  for flip in (False, True):
    for k in range(4):
      fwd = lambda a, k=k, f=flip: np.rot90(np.flip(a, x) if f else a, k, axes=(y, x))
      inv = lambda a, k=k, f=flip: (lambda r: np.flip(r, x) if f else r)(
          np.rot90(a, -k, axes=(y, x)))
      yield fwd, inv


def predict_image(pred: Predictor, image: np.ndarray, tile: int = 512, tta: bool = False,
                  batch: int = 0) -> np.ndarray:
  """Denoise one raw image (*spatial, C) in data units -> float32 in data units."""
  mean, std = pred.mean.astype(np.float32), pred.std.astype(np.float32)
  x = np.array(image, dtype=np.float32)  # float32 throughout: no image-sized float64
  if pred.transform != "none":
    x = intensity.forward(x, pred.transform)
  x -= mean
  x /= std
  y = predict_normalized(pred, x, tile, batch, tta=tta)
  if y is None:  # TTA on tiles that are not square or not aligned: 8 passes over the image
    y = np.zeros(x.shape, np.float32)  # a running sum, not 8 outputs held at once
    for fwd, inv in _transforms(x.ndim - 1):
      y += inv(predict_normalized(pred, np.ascontiguousarray(fwd(x)), tile, batch))
    y /= 8
  y *= std
  y += mean
  return intensity.inverse(y, pred.transform)


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
                 tile: int = 512, tta: bool = False, overwrite: bool = False,
                 dtype: str = "float32", scale: float = 1.0, offset: float = 0.0) -> None:
  from n2v_jax import batch
  if os.path.exists(out_path) and not overwrite:
    raise FileExistsError(f"{out_path} exists; pass --overwrite to replace it")
  img = tiff_io.read_image(in_path, axes)
  array, spatial_axes = tiff_io.to_canonical(img.data, img.axes)
  check_input(pred, in_path, array, spatial_axes)
  out = np.stack([predict_image(pred, s.astype(np.float32), tile, tta) for s in array])
  out = tiff_io.from_canonical(out, img.axes, img.data.shape)
  out, meta, _ = batch.to_output_dtype(out, img.data.dtype, dtype, scale, offset)
  tiff_io.write_image(out_path, out, img.axes, like=img, overwrite=overwrite,
                      extra_metadata=meta)


def workdir_grouping(workdir: str) -> tuple[str, tuple]:
  """(channel_pattern, channels) the model was trained with ('' when not grouped)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return "", ()
  data_cfg = checkpoint.read_json(path).get("data", {})
  return data_cfg.get("channel_pattern", "") or "", tuple(data_cfg.get("channels", ()) or ())


def predict_path(workdir: str, input_path: str, output_path: str, axes: str | None = None,
                 tile: int = 512, tta: bool = False, overwrite: bool = False,
                 dtype: str = "float32", scale: float = 1.0, offset: float = 0.0,
                 shard: str | None = None, channel_pattern: str | None = None,
                 channels=None, progress: bool = False, summary_out: list | None = None,
                 preemption=None) -> list[str]:
  """A TIFF to a TIFF, or a folder to a folder (same file names). Returns the outputs.

  A folder run (n2v_jax.batch) skips outputs that exist (unless overwrite), goes on past
  failing files and then raises a ValueError naming them; `summary_out` (a list) receives
  the batch.Summary. channel_pattern None: the one the model was trained with.
  preemption: an active loop.Preemption: a folder run stops after the current file.
  """
  from n2v_jax import batch
  if os.path.abspath(input_path) == os.path.abspath(output_path):
    raise ValueError(f"--output {output_path} is the input; the input is never modified")
  if dtype not in batch.DTYPES:
    raise ValueError(f"--dtype {dtype!r}: expected one of {', '.join(batch.DTYPES)}")
  shard_tuple = batch.parse_shard(shard)
  if not os.path.exists(input_path):
    raise FileNotFoundError(f"{input_path}: no such file")
  if os.path.isdir(input_path):
    if channel_pattern is None:
      channel_pattern, trained_channels = workdir_grouping(workdir)
      channels = channels or trained_channels
    tiff_io.list_images(input_path)  # a clear error before loading the model
  pred = load_predictor(workdir)
  if not os.path.isdir(input_path):
    if shard_tuple[1] > 1:
      raise ValueError(f"--shard {shard} needs a folder as --input")
    predict_file(pred, input_path, output_path, axes, tile, tta, overwrite, dtype, scale, offset)
    return [output_path]
  summary = batch.denoise_folder(pred, input_path, output_path, axes=axes, tile=tile, tta=tta,
                                 overwrite=overwrite, shard=shard_tuple, dtype=dtype,
                                 scale=scale, offset=offset, pattern=channel_pattern,
                                 channels=channels, progress=progress, preemption=preemption)
  if summary_out is not None:
    summary_out.append(summary)
  if summary.failed:
    first = summary.failed[0]
    raise ValueError(f"{len(summary.failed)} of {len(summary.results)} job(s) failed "
                     f"(first: {first.name}: {first.reason}); see {summary.report_path}")
  return [o for r in summary.results for o in r.outputs]


def main(argv) -> None:
  del argv
  from absl import flags
  from n2v_jax import batch, cluster, loop
  f = flags.FLAGS
  channels = [c for c in (f.channels or "").split(",") if c] or None
  summaries: list = []
  folder = os.path.isdir(f.input)  # a folder stops after the current file on SIGTERM/SIGINT
  try:
    with loop.Preemption() if folder else contextlib.nullcontext() as preemption:
      outputs = predict_path(f.workdir, f.input, f.output, f.axes or None, f.tile, f.tta,
                             f.overwrite, f.dtype, f.int_scale, f.int_offset, f.shard,
                             f.channel_pattern, channels, f.progress, summaries, preemption)
  except (ValueError, OSError) as e:  # OSError: a full disk, ...
    if summaries:  # a folder run with failing files: they were listed as they happened
      summary = summaries[0]
      print(summary.line())
      for r in summary.failed:
        print(f"failed: {r.name}: {r.reason}")
      print(f"report: {summary.report_path}")
      if summary.stopped_by:
        cluster.report_plate_stop(summary, loop.exit_status(summary.stopped_by))
      print(f"error: {len(summary.failed)} job(s) failed; rerun to retry them "
            "(finished files are skipped)", file=sys.stderr)
      sys.exit(batch.EXIT_SOME_FAILED)
    print(f"error: {cluster.error_message(e)}", file=sys.stderr)
    sys.exit(1)
  if summaries:
    print(summaries[0].line())
    print(f"report: {summaries[0].report_path}")
    if summaries[0].stopped_by:
      cluster.report_plate_stop(summaries[0], loop.exit_status(summaries[0].stopped_by))
    return
  print(f"wrote {len(outputs)} file(s): {', '.join(outputs[:5])}{' ...' if len(outputs) > 5 else ''}")


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("workdir", None, "Trained workdir (model.json + checkpoints).")
  flags.DEFINE_string("input", None, "Noisy TIFF or folder of TIFFs.")
  flags.DEFINE_string("output", None, "Output TIFF or folder.")
  flags.DEFINE_string("axes", "", "Axes of the input, e.g. CYX; default: from the file.")
  flags.DEFINE_integer("tile", 512, "Largest tile edge in pixels; 0 = whole image.")
  flags.DEFINE_bool("tta", False, "8-fold test-time augmentation.")
  flags.DEFINE_bool("overwrite", False, "Replace existing outputs (folders: recompute "
                    "them; without it finished outputs are skipped).")
  flags.DEFINE_string("shard", "", "i/N: denoise only shard i (0-based) of N of a folder.")
  flags.DEFINE_enum("dtype", "float32", ["float32", "input"], "Output dtype: float32, or "
                    "the input's (integers: round((x - int_offset) / int_scale), clipped).")
  flags.DEFINE_float("int_scale", 1.0, "--dtype input: data units per integer step.")
  flags.DEFINE_float("int_offset", 0.0, "--dtype input: data value stored as 0.")
  flags.DEFINE_string("channel_pattern", None, "Group single-channel files into fields: "
                      "'phenix' or a regex with (?P<channel>...); default: as in training.")
  flags.DEFINE_string("channels", "", "Channel ids in model order, e.g. 5,3,2; default: as "
                      "in training.")
  flags.DEFINE_bool("progress", True, "Progress bar for folders (stderr).")
  flags.mark_flags_as_required(["workdir", "input", "output"])
  from n2v_jax import cli
  cli.run(main)
