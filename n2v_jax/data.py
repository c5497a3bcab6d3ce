"""Where a training patch comes from: one dataset builder for in-memory and streaming runs.

`build_dataset` takes a `sources.Source` and makes, the same way whichever way patches are
drawn later, the validation split, the normalization (`intensity.Normalizer`) and the
fixed validation patches. Then patches come from one of two samplers reading the same
`Dataset`:

* in memory (default): the normalized training images padded into one array
  (`train_NSC`, `train_sizes`), sampled on the device inside the jitted step
  (`sample_batch`);
* `data.streaming=True`: `PatchSampler` reads the patches of each step from the files on
  the host (a background `Prefetcher`), so only the pixels drawn are read. The batch for
  step s depends only on (seed, s) and the files, so a resumed run sees the same patches.

Statistics use every training pixel in memory; streaming, at most STATS_PIXELS voxels
(all of them when there are fewer, so the same numbers on small data).
"""

import dataclasses
import functools
import logging
import math
import queue
import sys
import threading
import weakref
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from n2v_jax import intensity, sources, symmetry

# Streaming: normalization statistics come from at most this many voxels per channel (4M):
# random training-size patches when the training data is larger, every pixel otherwise.
# 4M voxels in >=1000 patches put the mean within ~0.1 % of the full-data value on typical
# microscopy data, at a read cost of seconds.
STATS_PIXELS = 1 << 22
# Streaming with ground truth: the end-of-run PSNR denoises only the first training sample,
# and only when it has at most this many voxels: the training set itself is never loaded.
EVAL_MAX_VOXELS = 1 << 26
PREFETCH_BATCHES = 2  # batches prepared ahead by the background reader
_BATCH_STREAM, _STATS_STREAM = 0, 1  # rng streams: default_rng([seed, stream, ...])


def resolve_patch_shape(patch_shape: tuple[int, ...], ndim: int, divisor: int) -> tuple[int, ...]:
  patch = tuple(int(p) for p in patch_shape)
  if len(patch) == 1:  # '--config.data.patch_shape=64' arrives as (64,)
    patch = patch * ndim
  if len(patch) != ndim:
    raise ValueError(f"data.patch_shape={patch} has {len(patch)} entries, but the data has "
                     f"{ndim} spatial axes")
  for p in patch:
    if p <= 0 or p % divisor:
      raise ValueError(f"data.patch_shape={patch}: each entry must be a positive multiple of "
                       f"{divisor} (2**model.depth)")
  return patch


@dataclasses.dataclass
class Views:
  """Regions of samples: e.g. the training part of each (all of it, or the top rows)."""
  source: sources.Source
  sample: np.ndarray  # (n,) index into source
  origin: np.ndarray  # (n, ndim)
  size: np.ndarray  # (n, ndim)

  @classmethod
  def whole(cls, source: sources.Source) -> "Views":
    return cls(source, np.arange(len(source)), np.zeros_like(source.sizes), source.sizes.copy())

  def __len__(self) -> int:
    return len(self.sample)

  def subset(self, keep: np.ndarray) -> "Views":
    return Views(self.source, self.sample[keep], self.origin[keep], self.size[keep])

  def read(self, v: int, corner: Any, shape: Any) -> np.ndarray:
    return self.source.read(int(self.sample[v]), self.origin[v] + np.asarray(corner), shape)

  def read_whole(self, v: int) -> np.ndarray:
    return self.read(v, np.zeros(self.size.shape[1], int), self.size[v])

  def files(self, v: np.ndarray) -> np.ndarray:
    return self.source.file_idx[self.sample[v]]


def split_validation(source: sources.Source, val_fraction: float, patch: tuple[int, ...],
                     seed: int) -> tuple[Views, Views | None]:
  """Held-out samples when there are several, else the last rows of the single one."""
  whole = Views.whole(source)
  if val_fraction <= 0:
    return whole, None
  if len(source) >= 2:
    n_val = min(max(1, round(val_fraction * len(source))), len(source) - 1)
    is_val = np.zeros(len(source), bool)
    is_val[np.random.default_rng(seed).permutation(len(source))[:n_val]] = True
    return whole.subset(~is_val), whole.subset(is_val)
  rows = int(source.sizes[0, -2])
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


def fit_normalizer(views: Views, patch: tuple[int, ...], kind: str,
                   percentiles: tuple[float, float], seed: int, max_pixels: float = math.inf,
                   transform: str = "none") -> intensity.Normalizer:
  """From every training pixel if there are at most max_pixels, else from a seeded random
  sample of max_pixels // prod(patch) training patches."""
  if int(np.prod(views.size, axis=1).sum()) <= max_pixels:
    parts = [views.read_whole(v) for v in range(len(views))]
  else:
    n = max(1, int(max_pixels) // math.prod(patch))
    rng = np.random.default_rng([seed, _STATS_STREAM])
    v, corners = _draw(rng, _positions_cdf(views, patch), views, patch, n)
    parts = [views.read(v[b], corners[b], patch)  # file by file: each decoded once at most
             for b in np.argsort(views.files(v), kind="stable")]
  views.source.release()
  return intensity.Normalizer.fit(parts, kind, percentiles, transform)


def grid_patches(views: Views, patch: tuple[int, ...], max_patches: int,
                 normalize: intensity.Normalizer) -> np.ndarray:
  """Non-overlapping patches on a grid over the views (in order), evenly subsampled to at
  most max_patches; only the patches kept are read."""
  p = np.asarray(patch)
  grid = (views.size - p) // p + 1  # grid positions per axis, per view
  counts = np.prod(grid, axis=1)
  total = int(counts.sum())
  if total == 0:
    return np.zeros((0, *patch, views.source.channels), np.float32)
  pick = np.unique(np.linspace(0, total - 1, min(max_patches, total)).round().astype(int))
  ends = np.cumsum(counts)
  out = []
  for k in pick:
    v = int(np.searchsorted(ends, k, side="right"))
    corner = np.array(np.unravel_index(k - (ends[v] - counts[v]), grid[v])) * p
    out.append(normalize(views.read(v, corner, patch)))
  views.source.release()
  return np.stack(out)


class PatchSampler:
  """Host-side: the batch for step s from (seed, s) alone: a resumed run draws the same."""

  def __init__(self, views: Views, patch: tuple[int, ...], batch_size: int, augment: bool,
               seed: int, normalize: intensity.Normalizer, per_image: int = 1):
    self.views, self.patch, self.batch_size, self.seed = views, tuple(patch), batch_size, seed
    self.augment = augment and symmetry.square_yx(patch)  # as on device
    self.normalize = normalize
    if not isinstance(per_image, int) or not 1 <= per_image <= batch_size:
      raise ValueError(f"config.data.stream_patches_per_image={per_image!r}: expected an integer "
                       f"from 1 to train.batch_size ({batch_size})")
    self.per_image = per_image
    self._cdf = _positions_cdf(views, self.patch)

  def draw(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(view index (B,), corner in the view (B, ndim), symmetry 0..7 (B,)) for `step`."""
    rng = np.random.default_rng([self.seed, _BATCH_STREAM, step])
    v, corners = _draw(rng, self._cdf, self.views, self.patch, self.batch_size, self.per_image)
    return v, corners, rng.integers(0, symmetry.COUNT, self.batch_size)

  def batch(self, step: int) -> np.ndarray:
    """(B, *patch, C) float32, normalized; `step` = completed steps before it (state.step)."""
    v, corners, sym = self.draw(step)
    files = self.views.files(v)
    for f in np.unique(files):
      self.views.source.store.check_unchanged(int(f))
    out = np.empty((self.batch_size, *self.patch, self.views.source.channels), np.float32)
    for b in np.argsort(files, kind="stable"):
      x = self.normalize(self.views.read(v[b], corners[b], self.patch))
      out[b] = symmetry.apply(x, int(sym[b])) if self.augment else x
    self.views.source.release(self.views.sample[v])
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
class Dataset:
  """The training views, their normalization and the fixed validation patches."""
  source: sources.Source
  train: Views
  patch: tuple[int, ...]
  normalize: intensity.Normalizer
  val_inputs: np.ndarray | None  # (M, *patch, C) normalized patches (unmasked; n2n/care: 2C)
  streaming: bool = False  # patches read from the files by `sampler`, never all loaded

  mean = property(lambda self: self.normalize.mean)  # (C,) float64
  std = property(lambda self: self.normalize.std)
  transform = property(lambda self: self.normalize.transform)
  in_channels = property(lambda self: self.source.channels)
  spatial_axes = property(lambda self: self.source.spatial_axes)
  channel_names = property(lambda self: self.source.channel_names)

  @functools.cached_property
  def _padded(self) -> tuple[np.ndarray, np.ndarray]:
    if self.streaming:
      raise ValueError("data.streaming=True: the training images are never loaded as a whole")
    sizes = self.train.size.astype(np.int32)
    train = np.zeros((len(self.train), *sizes.max(0), self.train.source.channels), np.float32)
    for v in range(len(self.train)):
      train[(v, *[slice(0, s) for s in sizes[v]])] = self.normalize_read(self.train.read_whole(v))
    self.train.source.release()
    return train, sizes

  @functools.cached_property
  def normalize_read(self) -> intensity.Normalizer:
    """For what the views read: the input's normalizer, for n2n/care pairs for both halves
    (targets in the input's units, so the network's output needs no other inverse)."""
    if self.train.source is self.source:
      return self.normalize
    twice = lambda a: np.concatenate([a, a])
    return intensity.Normalizer(twice(self.mean), twice(self.std), self.transform)

  @property
  def train_NSC(self) -> np.ndarray:
    """(N, *max_spatial, C) float32: the normalized training images, zero-padded (n2n/care:
    2C channels, the targets after the inputs)."""
    return self._padded[0]

  @property
  def train_sizes(self) -> np.ndarray:
    """(N, ndim) int32: the true spatial size of each image in train_NSC."""
    return self._padded[1]

  def sampler(self, batch_size: int, augment: bool, seed: int,
              per_image: int = 1) -> PatchSampler:
    return PatchSampler(self.train, self.patch, batch_size, augment, seed, self.normalize_read,
                        per_image)

  def evaluation_samples(self) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """(noisy, clean) raw samples to score at the end of a run, or None without ground
    truth: every sample in memory; streaming, at most the first training sample."""
    source = self.source
    if source.clean is None:
      return None
    picked = range(len(source))
    if self.streaming:
      voxels = int(np.prod(source.sizes[0]))
      if voxels > EVAL_MAX_VOXELS:
        print(f"streaming: the first sample has {voxels} voxels (> {EVAL_MAX_VOXELS}); no PSNR "
              "at the end: denoise with n2v_jax.predict", file=sys.stderr)
        return None
      if len(source) > 1:
        print(f"streaming: PSNR on the first of {len(source)} training samples only",
              file=sys.stderr)
      picked = range(1)
    return [source.sample(i) for i in picked], [source.clean.sample(i) for i in picked]


def build_dataset(data_cfg: Any, source: sources.Source, patch: tuple[int, ...],
                  seed: int) -> Dataset:
  """Split, normalization and validation patches; in memory or streaming (data.streaming)."""
  small = np.flatnonzero((source.sizes < np.asarray(patch)).any(axis=1))
  if small.size:
    i = int(small[0])
    raise ValueError(f"{source.name(i)}: image {tuple(int(s) for s in source.sizes[i])} "
                     f"({source.spatial_axes}) is smaller than data.patch_shape {patch}; use a "
                     "smaller patch")
  pairs = sources.Paired(source) if source.target is not None else source
  train, val = split_validation(pairs, data_cfg.val_fraction, patch, seed)
  if data_cfg.val_path:
    val_source = sources.open_paths(source.store, data_cfg.val_path, data_cfg.axes or None)
    if (val_source.spatial_axes, val_source.channels) != (source.spatial_axes, source.channels):
      raise ValueError(f"data.val_path={data_cfg.val_path}: {val_source.channels} channel(s), "
                       f"{val_source.spatial_axes}; expected {source.channels}, "
                       f"{source.spatial_axes} as data.path")
    val = Views.whole(val_source)
  if data_cfg.val_path and source.target is not None:
    raise ValueError("data.val_path: n2n/care hold out part of data.path (data.val_fraction); "
                     "a separate validation set has no targets")
  streaming = bool(data_cfg.streaming)
  inputs = Views(source, train.sample, train.origin, train.size)  # statistics: inputs only
  normalize = fit_normalizer(inputs, patch, data_cfg.normalization, tuple(data_cfg.percentiles),
                             seed, STATS_PIXELS if streaming else math.inf, data_cfg.transform)
  dataset = Dataset(source, train, tuple(patch), normalize, None, streaming)
  if val is not None:
    dataset.val_inputs = grid_patches(val, patch, data_cfg.max_val_patches,
                                      dataset.normalize_read)
  return dataset


def load(data_cfg: Any, seed: int, divisor: int, array: np.ndarray | None = None,
         algorithm: str = "n2v") -> Dataset:
  """The dataset of a run: its source opened, the patch shape checked, the dataset built."""
  source = sources.open_source(data_cfg, seed, array, algorithm)
  patch = resolve_patch_shape(data_cfg.patch_shape, len(source.spatial_axes), divisor)
  return build_dataset(data_cfg, source, patch, seed)


def sample_patch(key: jax.Array, images_NSC: jax.Array, sizes: jax.Array,
                 patch: tuple[int, ...], augment: bool) -> jax.Array:
  """Device-side: one random patch (*patch, C); images chosen in proportion to their patch
  positions, as PatchSampler chooses them."""
  k_img, k_pos, k_aug = jax.random.split(key, 3)
  positions = jnp.prod(sizes - jnp.asarray(patch) + 1, axis=1).astype(jnp.float32)
  idx = jax.random.choice(k_img, sizes.shape[0], p=positions / positions.sum())
  corner = jax.random.randint(k_pos, (len(patch),), 0, sizes[idx] - jnp.asarray(patch) + 1)
  start = (idx, *corner, 0)
  out = jax.lax.dynamic_slice(images_NSC, start, (1, *patch, images_NSC.shape[-1]))[0]
  if augment and symmetry.square_yx(patch):
    variants = jnp.stack([symmetry.apply(out, k, jnp) for k in range(symmetry.COUNT)])
    out = variants[jax.random.randint(k_aug, (), 0, symmetry.COUNT)]
  return out


def sample_batch(key: jax.Array, images_NSC: jax.Array, sizes: jax.Array,
                 patch: tuple[int, ...], batch_size: int, augment: bool) -> jax.Array:
  keys = jax.random.split(key, batch_size)
  return jax.vmap(sample_patch, in_axes=(0, None, None, None, None))(
      keys, images_NSC, sizes, patch, augment)
