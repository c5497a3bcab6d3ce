"""Where a training patch comes from: one dataset builder for in-memory and streaming runs.

`build_dataset` takes a `sources.Source` and makes, the same way whichever way patches are
drawn later, the validation split, the normalization (`normalizer.Normalizer`) and the
fixed validation patches. Then patches come from one of two samplers (`sampling`) reading
the same `Dataset`:

* in memory (default): the normalized training images padded into one array
  (`train_NSC`, `train_sizes`), sampled on the device inside the jitted step
  (`sampling.sample_batch`);
* `data.streaming=True`: `sampling.PatchSampler` reads the patches of each step from the
  files on the host (in a background `prefetch.Prefetcher`), so only the pixels drawn are
  read. The batch for step s depends only on (seed, s) and the files, so a resumed run
  sees the same patches.

Statistics use every training pixel in memory; streaming, at most STATS_PIXELS voxels
(all of them when there are fewer, so the same numbers on small data).
"""

import dataclasses
import functools
import math
from typing import Any

import numpy as np

from n2v_jax import reporter
from n2v_jax.data import normalizer as normalizer_lib, sampling, sources
from n2v_jax.data.sampling import Views
from n2v_jax.errors import N2VError
from n2v_jax.io import pixels

# Streaming: normalization statistics come from at most this many voxels per channel (4M):
# random training-size patches when the training data is larger, every pixel otherwise.
# 4M voxels in >=1000 patches put the mean within ~0.1 % of the full-data value on typical
# microscopy data, at a read cost of seconds.
STATS_PIXELS = 1 << 22
# Streaming with ground truth: the end-of-run PSNR denoises only the first training sample,
# and only when it has at most this many voxels: the training set itself is never loaded.
EVAL_MAX_VOXELS = 1 << 26


def resolve_patch_shape(patch_shape: tuple[int, ...], ndim: int, divisor: int) -> tuple[int, ...]:
  patch = tuple(int(p) for p in patch_shape)
  if len(patch) == 1:  # '--config.data.patch_shape=64' arrives as (64,)
    patch = patch * ndim
  if len(patch) != ndim:
    raise N2VError(f"data.patch_shape={patch} has {len(patch)} entries, but the data has "
                   f"{ndim} spatial axes")
  for p in patch:
    if p <= 0 or p % divisor:
      raise N2VError(f"data.patch_shape={patch}: each entry must be a positive multiple of "
                     f"{divisor} (2**model.depth)")
  return patch


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
    reporter.warning(f"image too small to hold out {val_rows} validation rows; no validation loss")
    return whole, None
  train, val = whole.subset(np.arange(1)), whole.subset(np.arange(1))
  train.size[0, -2] = rows - val_rows
  val.origin[0, -2], val.size[0, -2] = rows - val_rows, val_rows
  return train, val


def fit_normalizer(views: Views, patch: tuple[int, ...], kind: str,
                   percentiles: tuple[float, float], seed: int, max_pixels: float = math.inf,
                   transform: str = "none") -> normalizer_lib.Normalizer:
  """From every training pixel if there are at most max_pixels, else from a seeded random
  sample of max_pixels // prod(patch) training patches."""
  if int(np.prod(views.size, axis=1).sum()) <= max_pixels:
    parts = [views.read_whole(v) for v in range(len(views))]
  else:
    n = max(1, int(max_pixels) // math.prod(patch))
    rng = np.random.default_rng([seed, sampling.STATS_STREAM])
    cdf = sampling.positions_cdf(views, patch)
    v, corners = sampling.draw_patches(rng, cdf, views, patch, n)
    parts = [views.read(v[b], corners[b], patch)  # file by file: each decoded once at most
             for b in np.argsort(views.files(v), kind="stable")]
  views.source.release()
  return normalizer_lib.Normalizer.fit(parts, kind, percentiles, transform)


def grid_patches(views: Views, patch: tuple[int, ...], max_patches: int,
                 normalize: normalizer_lib.Normalizer) -> np.ndarray:
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


@dataclasses.dataclass
class Dataset:
  """The training views, their normalization and the fixed validation patches."""
  source: sources.Source
  train: Views
  patch: tuple[int, ...]
  normalize: normalizer_lib.Normalizer
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
      raise N2VError("data.streaming=True: the training images are never loaded as a whole")
    sizes = self.train.size.astype(np.int32)
    train = np.zeros((len(self.train), *sizes.max(0), self.train.source.channels), np.float32)
    for v in range(len(self.train)):
      train[(v, *[slice(0, s) for s in sizes[v]])] = self.normalize_read(self.train.read_whole(v))
    self.train.source.release()
    return train, sizes

  @functools.cached_property
  def normalize_read(self) -> normalizer_lib.Normalizer:
    """For what the views read: the input's normalizer, for n2n/care pairs for both halves
    (targets in the input's units, so the network's output needs no other inverse)."""
    if self.train.source is self.source:
      return self.normalize
    twice = lambda a: np.concatenate([a, a])
    return normalizer_lib.Normalizer(twice(self.mean), twice(self.std), self.transform)

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
              per_image: int = 1) -> sampling.PatchSampler:
    return sampling.PatchSampler(self.train, self.patch, batch_size, augment, seed,
                                 self.normalize_read, per_image)

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
        reporter.status(f"streaming: the first sample has {voxels} voxels (> {EVAL_MAX_VOXELS}); "
                        "no PSNR at the end: denoise with n2v_jax.predict")
        return None
      if len(source) > 1:
        reporter.status(f"streaming: PSNR on the first of {len(source)} training samples only")
      picked = range(1)
    return [source.sample(i) for i in picked], [source.clean.sample(i) for i in picked]


def build_dataset(data_cfg: Any, source: sources.Source, patch: tuple[int, ...],
                  seed: int) -> Dataset:
  """Split, normalization and validation patches; in memory or streaming (data.streaming)."""
  small = np.flatnonzero((source.sizes < np.asarray(patch)).any(axis=1))
  if small.size:
    i = int(small[0])
    raise N2VError(f"{source.name(i)}: image {tuple(int(s) for s in source.sizes[i])} "
                   f"({source.spatial_axes}) is smaller than data.patch_shape {patch}; use a "
                   "smaller patch")
  pairs = sources.Paired(source) if source.target is not None else source
  train, val = split_validation(pairs, data_cfg.val_fraction, patch, seed)
  if data_cfg.val_path:
    val_source = sources.open_paths(source.store, data_cfg.val_path, data_cfg.axes or None)
    if (val_source.spatial_axes, val_source.channels) != (source.spatial_axes, source.channels):
      raise N2VError(f"data.val_path={data_cfg.val_path}: {val_source.channels} channel(s), "
                     f"{val_source.spatial_axes}; expected {source.channels}, "
                     f"{source.spatial_axes} as data.path")
    val = Views.whole(val_source)
  if data_cfg.val_path and source.target is not None:
    raise N2VError("data.val_path: n2n/care hold out part of data.path (data.val_fraction); "
                   "a separate validation set has no targets")
  streaming = bool(data_cfg.streaming)
  if not streaming:  # the normalizer's pixels, then the padded training array: float32 each
    voxels = len(train) * int(np.prod(train.size.max(0))) * train.source.channels
    pixels.check_memory(source.name(0) if len(source) == 1 else data_cfg.path or "data.path",
                        2 * 4 * voxels, f"training in memory on {len(train)} image(s)")
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
