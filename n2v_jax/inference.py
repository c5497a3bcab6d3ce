"""Inference: a trained model (`Predictor`) and the tiled denoising of one image.

Tiled with a halo of at least the receptive field, so every output pixel sees exactly
the input it would see in a whole-image pass: equal cores abut, nothing is blended.
Tile offsets are multiples of 2**depth so pooling grids line up. Tiles are spread over
all devices (a CPU split into several by n2v_jax.runtime runs them side by side).
"""

import dataclasses
import functools
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from n2v_jax import checkpoint, intensity, models, steps, symmetry


@dataclasses.dataclass
class Predictor:
  model: Any
  variables: Any
  meta: dict
  normalize: intensity.Normalizer  # the training run's, from model.json
  divisor: int
  halo: int  # pixels of context kept around each tile core (multiple of divisor)
  blend: bool = False  # predict_image's default: the SURE blend with the input (sure_blend)

  mean = property(lambda self: self.normalize.mean)
  std = property(lambda self: self.normalize.std)
  transform = property(lambda self: self.normalize.transform)

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


def load_predictor(workdir: str, blend: bool | None = None) -> Predictor:
  """blend: predict_image's default; None: as the run's config.predict.blend (model.json)."""
  meta = checkpoint.read_model_json(workdir)
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
  normalize = intensity.Normalizer(np.asarray(meta["mean"]), np.asarray(meta["std"]),
                                   meta["transform"])
  blend = bool(meta["predict_blend"]) if blend is None else bool(blend)
  return Predictor(model, state.variables, meta, normalize, divisor, halo, blend)


# Voxels per model call (tiles x batch). Each 32-feature float32 activation of a call is
# 128 x this many bytes and a few are alive at once: 2**21 keeps a call under ~1.5 GiB
# in 2D; a 3D call, whose convs run per depth tap (models.conv_same), peaked at ~2.4 GiB.
# Larger images are cut into more (smaller) tiles; the result is the same (tiling is exact).
MAX_VOXELS_PER_CALL = 2**21
# Largest tile edge by default (predict --tile, config.predict.tile): 1024 beat 512 by
# 1.1-1.25x for a 1024 x 1024 image on the 2-core Xeons (less halo per output pixel;
# experiments/benchmark/README.md, 2026-12-01 and 2026-12-03); MAX_VOXELS_PER_CALL still
# bounds the memory of one call.
DEFAULT_TILE = 1024


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


# Speed-up per computed voxel of the model's 8 batch slices in prediction on 2 CPU cores:
# 1.6 on jax 0.10.2 (AMD EPYC, 2026-11-25); 1.01-1.13 on jax 0.12 (Intel Xeon, 2026-12-03),
# where 4 tiles of 568 on one slice beat 16 of 312 on 8 slices by 1.16-1.20x (benchmark
# README). Fewer slices are chosen when they compute fewer voxels by more than this.
SLICE_SPEEDUP = 1.1


def _cost(counts: list[int], cores: list[int], halo: int, n_parallel: int) -> int:
  """Voxels computed: tiles with their halos, the last call filled up to n_parallel."""
  n_tiles = int(np.prod(counts))
  return -(-n_tiles // n_parallel) * n_parallel * int(np.prod([c + 2 * halo for c in cores]))


def plan_parallel_tiles(aligned: list[int], tile: int, halo: int, divisor: int, n_dev: int,
                        n_par: int, budget: int = MAX_VOXELS_PER_CALL
                        ) -> tuple[int, list[int], list[int]]:
  """(tiles side by side, tiles per axis, core sizes): n_par side by side (devices x batch
  slices), or n_dev when that plan's tiles compute fewer voxels by more than the slices'
  SLICE_SPEEDUP (small tiles for many slices can be mostly halo)."""
  counts, cores = plan_tiles(aligned, tile, halo, divisor, n_par, budget)
  if n_par > n_dev:
    counts_1, cores_1 = plan_tiles(aligned, tile, halo, divisor, n_dev, budget)
    if _cost(counts_1, cores_1, halo, n_dev) < _cost(counts, cores, halo, n_par) / SLICE_SPEEDUP:
      return n_dev, counts_1, cores_1
  return n_par, counts, cores


def predict_normalized(pred: Predictor, x: np.ndarray, tile: int = DEFAULT_TILE,
                       batch: int = 0, tta: bool = False) -> np.ndarray:
  """Denoise one normalized image (*spatial, C) -> (*spatial, C) float32.

  Tiles are spread over all devices, and over the model's batch slices on each;
  batch: tiles per call, 0 = as many as the voxel budget allows.
  tta: the mean over the 8 symmetries of the (Y, X) plane, the 8 versions of each tile in
  one call. That equals predicting the 8 transformed images (what `predict_image` does
  otherwise) when the tiles are square in (Y, X) and the image is aligned to the pooling
  grid, so that every transformed tile is aligned too, and tile > 0 (within the voxel
  budget); else returns None. It also returns None where the 8 images one after the other
  compute fewer voxels: 8 symmetries share one call's budget, so their tiles are smaller
  and carry more halo (1024 x 1024, 2 CPU cores: 1.1-1.25x faster one after the other,
  experiments/benchmark/README.md).
  """
  spatial, d, h = x.shape[:-1], pred.divisor, pred.halo
  aligned = [-(-s // d) * d for s in spatial]
  n_dev = pred.n_devices if tile else 1
  # Tiles per call: a multiple of the devices times the model's batch slices, which run
  # side by side (models.chunked_conv). With TTA the 8 symmetries fill the slices.
  n_sym = 8 if tta else 1
  slices = max(1, int(pred.model.batch_chunks)) if tile else 1
  budget = MAX_VOXELS_PER_CALL // n_sym
  n_par, counts, cores = plan_parallel_tiles(aligned, tile, h, d, n_dev,
                                             n_dev * max(1, slices // n_sym), budget)
  tile_shape = [c + 2 * h for c in cores]
  # tile=0 asks for the whole image in one call: 8 of them at once could exceed memory
  if tta and (not tile or not symmetry.square_yx(tile_shape) or list(spatial) != aligned):
    return None
  if tta:  # per symmetry, voxels computed in one call of 8 against a call of its own
    n_one, counts_one, cores_one = plan_parallel_tiles(aligned, tile, h, d, n_dev,
                                                       n_dev * slices, MAX_VOXELS_PER_CALL)
    if _cost(counts, cores, h, n_par) > _cost(counts_one, cores_one, h, n_one):
      return None
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
      ys = np.asarray(pred.predict_tiles(
          np.concatenate([symmetry.apply(tiles, k) for k in range(n_sym)]), sharded=n_dev > 1))
      y = np.zeros_like(tiles)
      for k, part in enumerate(np.split(ys, n_sym)):
        y += symmetry.invert(part, k)
      y /= n_sym
    for cn, yt in zip(group, y):
      out[tuple(slice(c, c + k) for c, k in zip(cn, cores))] = \
          yt[tuple(slice(h, h + k) for k in cores)]
  del xp
  return np.ascontiguousarray(out[tuple(slice(0, s) for s in spatial)])


def predict_image(pred: Predictor, image: np.ndarray, tile: int = DEFAULT_TILE, tta: bool = False,
                  batch: int = 0, blend: bool | None = None) -> np.ndarray:
  """Denoise one raw image (*spatial, C) in data units -> float32 in data units.
  blend: the SURE blend with the noisy input (sure_blend); None: the predictor's default."""
  blend = pred.blend if blend is None else blend
  return pred.normalize.inverse(_normalized_variants(pred, image, tile, tta, batch, blend)[-1])


def predict_variants(pred: Predictor, image: np.ndarray, tile: int = DEFAULT_TILE,
                     tta: bool = False, batch: int = 0,
                     blend: bool = False) -> dict[bool, np.ndarray]:
  """{False: the network's prediction} and, with blend, {True: its SURE blend} of one raw
  image, in data units: the blend reuses the prediction (one more pass, not two)."""
  outs = _normalized_variants(pred, image, tile, tta, batch, blend)
  return {b: pred.normalize.inverse(y) for b, y in zip((False, True), outs)}


def _normalized_variants(pred: Predictor, image: np.ndarray, tile: int, tta: bool,
                         batch: int, blend: bool) -> list[np.ndarray]:
  """[prediction] or [prediction, its blend], in normalized units."""
  x = pred.normalize.image(image)
  denoise = functools.partial(_denoise_normalized, pred, tile=tile, batch=batch, tta=tta)
  y = denoise(x)
  return [y, sure_blend(denoise, x, y)] if blend else [y]


def _denoise_normalized(pred: Predictor, x: np.ndarray, tile: int, batch: int,
                        tta: bool) -> np.ndarray:
  y = predict_normalized(pred, x, tile, batch, tta=tta)
  if y is None:  # TTA on tiles that are not square or not aligned: 8 passes over the image
    y = np.zeros(x.shape, np.float32)  # a running sum, not 8 outputs held at once
    for k in range(symmetry.COUNT):
      y += symmetry.invert(predict_normalized(
          pred, np.ascontiguousarray(symmetry.apply(x, k)), tile, batch), k)
    y /= symmetry.COUNT
  return y


# Finite-difference step of the Jacobian probe in sure_blend, in normalized units (the
# data's std is 1 there): small against any noise worth removing, far above float32
# rounding of the outputs (~1e-7).
PROBE_STEP = 1e-2


def sure_blend(denoise: Any, x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
  """(1 - k) * y + k * x per channel, with the k that minimises Stein's unbiased risk
  estimate (SURE) of the error against the clean image, for noise that is Gaussian, white
  and of one level per channel (after data.transform; Anscombe makes Poisson noise so).

  A blind-spot network's prediction y = f(x) barely depends on each noisy pixel's own
  value, so its error e = y - s is nearly independent of that pixel's noise n = x - s;
  mixing a little of x back in then lowers the error (BSD68: +0.14 to +0.18 dB). For
  x = s + n, n ~ N(0, sigma^2): E|(1-k) y + k x - s|^2 = (1-k)^2 E e^2 + 2k(1-k) E[e n]
  + k^2 sigma^2, Stein's lemma gives E[e n] = sigma^2 d (d: the mean of df_i/dx_i), and
  the residual r = E|y - x|^2 = E e^2 - 2 sigma^2 d + sigma^2 is measured, so the minimum
  is at k = 1 - sigma^2 (1 - d) / r. d comes from one more pass on x + h * probe (a
  Hutchinson estimate with a Gaussian probe, fixed seed: deterministic); sigma from the
  finest diagonal Haar band of the residual (median absolute value / 0.6745), divided by
  that band's gain through (I - J) on white noise, measured with the same probe. No clean
  image is used. Texture left in the residual raises the sigma estimate, which lowers k
  (towards y alone): the estimate errs on the safe side. k is 0 where the image gives no
  estimate (an edge under 2 pixels, no residual, no noise found).
  """
  x, y = x.astype(np.float32, copy=False), y.astype(np.float32, copy=False)
  probe = np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)
  response = (denoise(x + PROBE_STEP * probe) - y) / PROBE_STEP  # J @ probe
  k = blend_weights(x, y, probe, response)
  return ((1 - k) * y + k * x).astype(np.float32)


def blend_weights(x: np.ndarray, y: np.ndarray, probe: np.ndarray,
                  response: np.ndarray) -> np.ndarray:
  """Per-channel k of sure_blend from the input x, the prediction y, a Gaussian probe and
  the Jacobian's response J @ probe, all (*spatial, C)."""
  channels = x.shape[-1]
  if x.ndim < 3 or min(x.shape[-3:-1]) < 2:  # no 2x2 Haar band
    return np.zeros(channels, np.float32)
  per_channel = lambda a: a.reshape(-1, channels)
  band = lambda a: per_channel(_finest_diagonal(a))
  residual = y.astype(np.float64) - x
  r = np.mean(per_channel(residual) ** 2, axis=0)
  d = np.mean(per_channel(probe.astype(np.float64) * response), axis=0)
  gain = np.mean(band(probe - response.astype(np.float64)) ** 2, axis=0)
  mad = np.median(np.abs(band(residual)), axis=0) / 0.6745
  with np.errstate(divide="ignore", invalid="ignore"):
    k = 1 - mad ** 2 / gain * (1 - d) / r
  usable = np.isfinite(k) & (r > 0) & (mad > 0) & (gain > 0)
  return np.where(usable, np.clip(k, 0, 1), 0).astype(np.float32)


def _finest_diagonal(a: np.ndarray) -> np.ndarray:
  """The finest diagonal Haar band over (Y, X) of (..., Y, X, C): unit gain on white noise."""
  h, w = a.shape[-3] // 2 * 2, a.shape[-2] // 2 * 2
  a = a[..., :h, :w, :]
  return (a[..., 0::2, 0::2, :] - a[..., 0::2, 1::2, :] - a[..., 1::2, 0::2, :]
          + a[..., 1::2, 1::2, :]) / 2


def check_input(pred: Predictor, name: str, array: np.ndarray, spatial_axes: str) -> None:
  if spatial_axes != pred.spatial_axes:
    raise ValueError(f"{name}: spatial axes {spatial_axes}, but the model was trained on "
                     f"{pred.spatial_axes} data")
  if array.shape[-1] != pred.in_channels:
    names = pred.meta["channel_names"]
    raise ValueError(f"{name}: {array.shape[-1]} channel(s), but the model was trained on "
                     f"{pred.in_channels}" + (f" ({', '.join(names)})" if names else ""))
  bad = ~np.isfinite(array)
  if bad.any():
    raise ValueError(f"{name}: {int(bad.sum())} NaN/inf pixel(s); clean them before denoising")


