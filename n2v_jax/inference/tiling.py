"""Tiled, exact prediction of one normalized image.

Tiles carry a halo of at least the receptive field, so every output pixel sees exactly
the input it would see in a whole-image pass: equal cores abut, nothing is blended. Tile
offsets are multiples of 2**depth so pooling grids line up, and the image is reflect-padded
so border pixels see what a whole-image pass gives them. Tiles are spread over all devices
and over the model's batch slices (nn.conv.chunked_conv), which run side by side.
"""

import itertools
from typing import Any

import numpy as np

from n2v_jax.data import symmetry
from n2v_jax.inference.options import PredictOptions

# Voxels per model call (tiles x batch). Each 32-feature float32 activation of a call is
# 128 x this many bytes and a few are alive at once: 2**21 keeps a 2D call under ~1.5 GiB
# and a 3D one (whose convs run per depth tap) under ~2.5 GiB. Larger images are cut into
# more (smaller) tiles; the result is the same (tiling is exact).
MAX_VOXELS_PER_CALL = 2**21
# The speed-up per computed voxel that side-by-side batch slices must bring to be worth
# tiles small enough to fill them: fewer slices are chosen when their tiles compute fewer
# voxels by more than this (experiments/benchmark/README.md measured it).
SLICE_SPEEDUP = 1.1


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
    fewer = _cost(counts_1, cores_1, halo, n_dev)
    if fewer < _cost(counts, cores, halo, n_par) / SLICE_SPEEDUP:
      return n_dev, counts_1, cores_1
  return n_par, counts, cores


def predict_normalized(pred: Any, x: np.ndarray,
                       options: PredictOptions) -> np.ndarray | None:
  """Denoise one normalized image (*spatial, C) -> (*spatial, C) float32 with `pred` (an
  inference.predictor.Predictor), in tiles of at most options.tile, options.batch tiles
  per call (0 = as many as the voxel budget allows).

  Tiles are spread over all devices, and over the model's batch slices on each.
  options.tta: the mean over the 8 symmetries of the (Y, X) plane, the 8 versions of each
  tile in one call. That equals predicting the 8 transformed images (what `predict_image` does
  otherwise) when the tiles are square in (Y, X) and the image is aligned to the pooling
  grid, so that every transformed tile is aligned too, and tile > 0 (within the voxel
  budget); else returns None. It also returns None where the 8 images one after the other
  compute fewer voxels: 8 symmetries share one call's budget, so their tiles are smaller
  and carry more halo.
  """
  tile, batch, tta = options.tile, options.batch, options.tta
  spatial, d, h = x.shape[:-1], pred.divisor, pred.halo
  aligned = [-(-s // d) * d for s in spatial]
  n_dev = pred.n_devices if tile else 1
  # Tiles per call: a multiple of the devices times the model's batch slices, which run
  # side by side (nn.conv.chunked_conv). With TTA the 8 symmetries fill the slices.
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
