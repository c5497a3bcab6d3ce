"""Training data larger than memory (`data.streaming=True`): patches sampled on the host.

Files are opened by n2v_jax.lazy_io (memory-mapped or decoded on demand), so only the
pixels of the patches drawn are read. The batch for step s depends only on (seed, s) and
the files, so a resumed run sees the same patches. The split, validation grid and
normalization formula are those of n2v_jax.data: for data of at most STATS_PIXELS voxels
the statistics and validation patches are the same numbers.
"""

import dataclasses
import logging
import math
import queue
import sys
import threading
import types
import weakref
from typing import Any, Callable

import numpy as np

from n2v_jax import data as data_lib, intensity
from n2v_jax.lazy_io import LazyRaw, load_raw, open_paths  # load_raw: as data.load_raw

__all__ = ["LazyRaw", "load_raw", "build_dataset", "PatchSampler", "Prefetcher"]

# Normalization statistics come from at most this many voxels per channel (4M): random
# training-size patches when the training data is larger, every pixel otherwise. 4M
# voxels in >=1000 patches put the mean within ~0.1 % of the full-data value on typical
# microscopy data, at a read cost of seconds.
STATS_PIXELS = 1 << 22
# With ground truth, the end-of-run PSNR denoises only the first training sample, and only
# when it has at most this many voxels: the training set itself is never loaded.
EVAL_MAX_VOXELS = 1 << 26
PREFETCH_BATCHES = 2  # batches prepared ahead by the background reader
_BATCH_STREAM, _STATS_STREAM = 0, 1  # rng streams: default_rng([seed, stream, ...])


@dataclasses.dataclass
class Views:
  """Regions of samples: e.g. the training part of each (all of it, or the top rows)."""
  raw: LazyRaw
  sample: np.ndarray  # (n,) index into raw
  origin: np.ndarray  # (n, ndim)
  size: np.ndarray  # (n, ndim)

  @classmethod
  def whole(cls, raw: LazyRaw) -> "Views":
    return cls(raw, np.arange(len(raw)), np.zeros_like(raw.sizes), raw.sizes.copy())

  def __len__(self) -> int:
    return len(self.sample)

  def subset(self, keep: np.ndarray) -> "Views":
    return Views(self.raw, self.sample[keep], self.origin[keep], self.size[keep])

  def read(self, v: int, corner: np.ndarray, shape: Any) -> np.ndarray:
    return self.raw.read(int(self.sample[v]), self.origin[v] + np.asarray(corner), shape)

  def files(self, v: np.ndarray) -> np.ndarray:
    return self.raw.file_idx[self.sample[v]]


def split_views(raw: LazyRaw, val_fraction: float, patch: tuple[int, ...], seed: int,
                ) -> tuple[Views, Views | None]:
  """data.split_validation without reading: held-out samples, or one sample's last rows."""
  whole = Views.whole(raw)
  if val_fraction <= 0:
    return whole, None
  if len(raw) >= 2:
    n_val = min(max(1, round(val_fraction * len(raw))), len(raw) - 1)
    is_val = np.zeros(len(raw), bool)
    is_val[np.random.default_rng(seed).permutation(len(raw))[:n_val]] = True
    return whole.subset(~is_val), whole.subset(is_val)
  rows = int(raw.sizes[0, -2])
  val_rows = max(patch[-2], int(round(val_fraction * rows)))
  if rows - val_rows < patch[-2]:
    logging.warning("Image too small to hold out %d validation rows; no validation loss.", val_rows)
    return whole, None
  train, val = whole.subset(np.arange(1)), whole.subset(np.arange(1))
  train.size[0, -2] = rows - val_rows
  val.origin[0, -2], val.size[0, -2] = rows - val_rows, val_rows
  return train, val


def _draw(rng: np.random.Generator, cdf: np.ndarray, views: Views, patch: tuple[int, ...],
          n: int, per_view: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """n (view, corner) pairs; views in proportion to their patch positions (cdf), each view
  drawn giving `per_view` patches (consecutive)."""
  u = rng.random(-(-n // per_view))
  v = np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)
  v = np.repeat(v, per_view)[:n]
  return v, rng.integers(0, views.size[v] - np.asarray(patch) + 1)


def _positions_cdf(views: Views, patch: tuple[int, ...]) -> np.ndarray:
  return np.cumsum(np.prod((views.size - np.asarray(patch) + 1).astype(np.float64), axis=1))


def normalization(views: Views, patch: tuple[int, ...], kind: str,
                  percentiles: tuple[float, float], seed: int,
                  max_pixels: int | None = None, transform: str = "none",
                  ) -> tuple[np.ndarray, np.ndarray]:
  """data.normalization_stats on every training pixel if they are few, else on a seeded
  random sample of max_pixels // prod(patch) training patches (max_pixels: STATS_PIXELS)."""
  max_pixels = STATS_PIXELS if max_pixels is None else max_pixels
  if int(np.prod(views.size, axis=1).sum()) <= max_pixels:
    parts = [views.read(v, np.zeros(len(patch), int), views.size[v]) for v in range(len(views))]
  else:
    n = max(1, max_pixels // math.prod(patch))
    rng = np.random.default_rng([seed, _STATS_STREAM])
    v, corners = _draw(rng, _positions_cdf(views, patch), views, patch, n)
    parts = [views.read(v[b], corners[b], patch)  # file by file: each decoded once at most
             for b in np.argsort(views.files(v), kind="stable")]
  views.raw.store.release(views.raw.file_idx)
  intensity.warn_if_negative(parts, transform)
  return data_lib.normalization_stats([intensity.forward(p, transform) for p in parts], kind,
                                      percentiles)


def _normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray, transform: str) -> np.ndarray:
  return ((intensity.forward(x, transform) - mean) / std).astype(np.float32)  # float64 arithmetic, as data.build_dataset


def grid_patches(views: Views, patch: tuple[int, ...], max_patches: int, mean: np.ndarray,
                 std: np.ndarray, transform: str = "none") -> np.ndarray:
  """data.grid_patches (same patches, same order), reading only the patches kept."""
  p = np.asarray(patch)
  grid = (views.size - p) // p + 1  # grid positions per axis, per view
  counts = np.prod(grid, axis=1)
  total = int(counts.sum())
  if total == 0:
    return np.zeros((0, *patch, views.raw.channels), np.float32)
  pick = np.unique(np.linspace(0, total - 1, min(max_patches, total)).round().astype(int))
  ends = np.cumsum(counts)
  out = []
  for k in pick:
    v = int(np.searchsorted(ends, k, side="right"))
    corner = np.array(np.unravel_index(k - (ends[v] - counts[v]), grid[v])) * p
    out.append(_normalize(views.read(v, corner, patch), mean, std, transform))
  views.raw.store.release(views.raw.file_idx)
  return np.stack(out)


def _symmetry(x: np.ndarray, k: int) -> np.ndarray:
  """Symmetry k of the 8, numbered as data._augment numbers them."""
  y, xa = x.ndim - 3, x.ndim - 2
  return np.rot90(np.flip(x, axis=xa) if k >= 4 else x, k % 4, axes=(y, xa))


class PatchSampler:
  """The batch for step s from (seed, s) alone: a resumed run draws the same patches."""

  def __init__(self, views: Views, patch: tuple[int, ...], batch_size: int, augment: bool,
               seed: int, mean: np.ndarray, std: np.ndarray, transform: str = "none",
               per_image: int = 1):
    self.views, self.patch, self.batch_size, self.seed = views, tuple(patch), batch_size, seed
    self.augment = augment and patch[-1] == patch[-2]  # as on device: square patches only
    self.mean, self.std, self.transform = mean, std, transform
    if not isinstance(per_image, int) or not 1 <= per_image <= batch_size:
      raise ValueError(f"config.data.stream_patches_per_image={per_image!r}: expected an integer "
                       f"from 1 to train.batch_size ({batch_size})")
    self.per_image = per_image
    self._cdf = _positions_cdf(views, self.patch)

  def draw(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(view index (B,), corner in the view (B, ndim), symmetry 0..7 (B,)) for `step`."""
    rng = np.random.default_rng([self.seed, _BATCH_STREAM, step])
    v, corners = _draw(rng, self._cdf, self.views, self.patch, self.batch_size, self.per_image)
    return v, corners, rng.integers(0, 8, self.batch_size)

  def batch(self, step: int) -> np.ndarray:
    """(B, *patch, C) float32, normalized; `step` = completed steps before it (state.step)."""
    v, corners, sym = self.draw(step)
    files = self.views.files(v)
    for f in np.unique(files):
      self.views.raw.store.check_unchanged(int(f))
    out = np.empty((self.batch_size, *self.patch, self.views.raw.channels), np.float32)
    for b in np.argsort(files, kind="stable"):
      x = _normalize(self.views.read(v[b], corners[b], self.patch), self.mean, self.std,
                     self.transform)
      out[b] = _symmetry(x, int(sym[b])) if self.augment else x
    self.views.raw.store.release(files)
    return out


def _produce(make: Callable[[int], Any], first: int, last: int, q: queue.Queue,
             stop: threading.Event) -> None:
  for i in range(first, last):
    try:
      item = make(i)
    except BaseException as e:  # handed over: the training loop raises it
      item = e
    while not stop.is_set():
      try:
        q.put((i, item), timeout=0.1)
        break
      except queue.Full:
        continue
    if stop.is_set() or isinstance(item, BaseException):
      return


class Prefetcher:
  """make(first), make(first + 1), ... computed by one background thread, at most `depth`
  ahead, handed out in order; the thread stops at close() or when this is collected."""

  def __init__(self, make: Callable[[int], Any], first: int, last: int,
               depth: int = PREFETCH_BATCHES):
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._next = first
    # The thread holds no reference to self, so an abandoned loop still ends it.
    self._thread = threading.Thread(target=_produce, daemon=True, name="n2v-prefetch",
                                    args=(make, first, last, self._queue, self._stop))
    self._thread.start()
    weakref.finalize(self, self._stop.set)

  def get(self) -> Any:
    i, item = self._queue.get()
    if isinstance(item, BaseException):
      raise item
    assert i == self._next, (i, self._next)
    self._next += 1
    return item

  def close(self) -> None:
    self._stop.set()
    self._thread.join()


@dataclasses.dataclass
class StreamDataset:
  """What train.py needs of data.Dataset, with training patches from `sampler()`."""
  train: Views
  patch: tuple[int, ...]
  val_inputs: np.ndarray | None
  mean: np.ndarray
  std: np.ndarray
  raw: LazyRaw
  transform: str = "none"  # data.transform, applied before mean/std

  @property
  def in_channels(self) -> int:
    return self.raw.channels

  @property
  def spatial_axes(self) -> str:
    return self.raw.spatial_axes

  @property
  def channel_names(self) -> list[str] | None:
    return self.raw.channel_names

  def sampler(self, batch_size: int, augment: bool, seed: int,
              per_image: int = 1) -> PatchSampler:
    return PatchSampler(self.train, self.patch, batch_size, augment, seed, self.mean, self.std,
                        self.transform, per_image)

  def evaluation_data(self) -> Any:
    """For report.final_evaluation: at most the first training sample, with ground truth."""
    raw, images, clean = self.raw, [], None
    if raw.clean is not None:
      voxels = int(np.prod(raw.sizes[0]))
      if voxels > EVAL_MAX_VOXELS:
        print(f"streaming: the first sample has {voxels} voxels (> {EVAL_MAX_VOXELS}); no PSNR "
              "at the end: denoise with n2v_jax.predict", file=sys.stderr)
      else:
        if len(raw) > 1:
          print(f"streaming: PSNR on the first of {len(raw)} training samples only",
                file=sys.stderr)
        whole = lambda r: r.read(0, np.zeros(raw.sizes.shape[1], int), r.sizes[0])
        images, clean = [whole(raw)], [whole(raw.clean)]
    return types.SimpleNamespace(raw=data_lib.RawData(
        images, [raw.name(0)], raw.spatial_axes, raw.channel_names, clean=clean,
        source_axes=raw.source_axes))


def build_dataset(data_cfg: Any, raw: LazyRaw, patch: tuple[int, ...],
                  seed: int) -> StreamDataset:
  """data.build_dataset for LazyRaw: split, statistics and validation patches, bounded."""
  small = np.flatnonzero((raw.sizes < np.asarray(patch)).any(axis=1))
  if small.size:
    i = int(small[0])
    raise ValueError(f"{raw.name(i)}: image {tuple(int(s) for s in raw.sizes[i])} "
                     f"({raw.spatial_axes}) is smaller than data.patch_shape {patch}; use a "
                     "smaller patch")
  train, val = split_views(raw, data_cfg.val_fraction, patch, seed)
  if data_cfg.val_path:
    val_raw = open_paths(raw.store, data_cfg.val_path, data_cfg.axes or None)
    if val_raw.spatial_axes != raw.spatial_axes or val_raw.channels != raw.channels:
      raise ValueError(f"data.val_path={data_cfg.val_path}: {val_raw.channels} channel(s), "
                       f"{val_raw.spatial_axes}; expected {raw.channels}, {raw.spatial_axes} "
                       "as data.path")
    val = Views.whole(val_raw)
  transform = data_cfg.get("transform", "none")
  mean, std = normalization(train, patch, data_cfg.normalization, tuple(data_cfg.percentiles),
                            seed, transform=transform)
  val_inputs = None
  if val is not None:
    val_inputs = grid_patches(val, patch, data_cfg.max_val_patches, mean, std, transform)
  return StreamDataset(train, tuple(patch), val_inputs, mean, std, raw, transform)
