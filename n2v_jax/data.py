"""Training data: loading, normalization, validation split, and on-device patch sampling."""

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from n2v_jax import fields, intensity, synthetic, tiff_io


@dataclasses.dataclass
class RawData:
  """Images in canonical layout (S, [Z,] Y, X, C), before normalization."""
  images: list[np.ndarray]  # one entry per sample (*spatial, C), float32
  names: list[str]  # where each sample came from, for error messages
  spatial_axes: str  # 'YX' or 'ZYX'
  channel_names: list[str] | None
  clean: list[np.ndarray] | None = None  # ground truth aligned with images, if known
  source_axes: str = ""
  source_paths: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Dataset:
  """Normalized training images padded into one array, plus fixed validation patches."""
  train_NSC: np.ndarray  # (N, *max_spatial, C) float32, normalized, zero-padded
  train_sizes: np.ndarray  # (N, ndim) int32: true spatial size of each image
  val_inputs: np.ndarray | None  # (M, *patch, C) normalized patches (unmasked)
  mean: np.ndarray  # (C,) float64: x_norm = (intensity.forward(x, transform) - mean) / std
  std: np.ndarray  # (C,)
  spatial_axes: str
  channel_names: list[str] | None
  raw: RawData
  transform: str = "none"  # data.transform

  @property
  def in_channels(self) -> int:
    return self.train_NSC.shape[-1]


def _split_samples(array_SC: np.ndarray) -> list[np.ndarray]:
  return [np.asarray(a, np.float32) for a in array_SC]


def load_raw(data_cfg: Any, seed: int, array: np.ndarray | None = None) -> RawData:
  """The training images: `array` (NumPy, with data.axes) if given, else data.path, else
  the built-in synthetic image."""
  if array is not None:
    return _from_array(np.asarray(array), data_cfg.axes, "the NumPy array")
  if not data_cfg.path:
    syn = data_cfg.synthetic
    noisy, clean = synthetic.noisy_pair(seed, tuple(syn.shape), syn.channels, syn.noise_sigma,
                                        syn.get("correlation", 0.0))
    spatial = "ZYX" if len(syn.shape) == 3 else "YX"
    return RawData([noisy], ["synthetic"], spatial, None, clean=[clean],
                   source_axes=spatial + "C")
  group = fields.grouping(data_cfg)
  raw = load_paths(data_cfg.path, data_cfg.axes or None, group)
  if data_cfg.clean_path:
    clean_raw = load_paths(data_cfg.clean_path, data_cfg.axes or (None if group else raw.source_axes), group)
    if [c.shape for c in clean_raw.images] != [c.shape for c in raw.images]:
      raise ValueError(f"data.clean_path={data_cfg.clean_path}: shapes do not match data.path "
                       f"({[c.shape for c in clean_raw.images]} vs {[c.shape for c in raw.images]})")
    raw.clean = clean_raw.images
  return raw


def _from_array(data: np.ndarray, axes: str, name: str) -> RawData:
  if not axes:
    raise ValueError(f"{name}: set data.axes (e.g. 'SYX', 'CYX', 'ZYX') for NumPy data")
  axes = tiff_io.validate_axes(axes, data.ndim)
  array, spatial = tiff_io.to_canonical(data, axes)
  samples = _split_samples(array)
  for i, sample in enumerate(samples):
    if not np.isfinite(sample).all():
      raise ValueError(f"{name}: NaN/inf pixel(s) in sample {i}; clean them before training")
  names = [name if len(samples) == 1 else f"{name}[{i}]" for i in range(len(samples))]
  return RawData(samples, names, spatial, None, source_axes=axes)


def _read_samples(path: str, axes: str | None, group: dict | None):
  """(name, data, axes, channel_names) per file, or per field of grouped single-channel files."""
  paths = tiff_io.list_images(path)
  if group is None:
    for p in paths:
      if p.lower().endswith(".npy"):
        data, npy_axes = tiff_io.open_npy(p, axes)
        yield p, np.asarray(data), npy_axes, None
        continue
      img = tiff_io.read_image(p, axes)
      yield p, img.data, img.axes, img.channel_names
    return
  found, names = fields.training_fields(paths, group)
  for f in found:
    data, field_axes, _ = fields.read_field(f, axes)
    yield fields.field_name(f), data, field_axes, names


def load_paths(path: str, axes: str | None, group: dict | None = None) -> RawData:
  """Reads a TIFF or a folder of TIFFs into canonical samples; checks consistency.

  group: {'pattern', 'channels', 'channel_names'}: single-channel files grouped into
  multi-channel fields by file name (n2v_jax.fields).
  """
  images, names, channel_names, spatial_axes, source_axes = [], [], None, None, ""
  paths = []
  for p, data, data_axes, file_channel_names in _read_samples(path, axes, group):
    paths.append(p)
    array, spatial = tiff_io.to_canonical(data, data_axes)
    if spatial_axes is None:
      spatial_axes, channel_names, source_axes = spatial, file_channel_names, data_axes
      channels = array.shape[-1]
    elif spatial != spatial_axes:
      raise ValueError(f"{p}: spatial axes {spatial} differ from {spatial_axes} of {paths[0]}")
    elif array.shape[-1] != channels:
      raise ValueError(f"{p}: {array.shape[-1]} channels, but {paths[0]} has {channels}; "
                       "all training images need the same channels")
    samples = _split_samples(array)
    for i, s in enumerate(samples):
      bad = ~np.isfinite(s)
      if bad.any():
        raise ValueError(f"{p}: {int(bad.sum())} NaN/inf pixel(s) in sample {i}; "
                         "clean or mask them before training")
    images += samples
    names += [p if len(samples) == 1 else f"{p}[{i}]" for i in range(len(samples))]
  return RawData(images, names, spatial_axes, channel_names, source_axes=source_axes,
                 source_paths=paths)


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


def split_validation(raw: RawData, val_fraction: float, patch: tuple[int, ...], seed: int,
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Held-out images when there are several, else the last rows of the single image."""
  images = raw.images
  if val_fraction <= 0:
    return images, []
  if len(images) >= 2:
    n_val = min(max(1, round(val_fraction * len(images))), len(images) - 1)
    order = np.random.default_rng(seed).permutation(len(images))
    val_idx = set(order[:n_val].tolist())
    return ([im for i, im in enumerate(images) if i not in val_idx],
            [im for i, im in enumerate(images) if i in val_idx])
  image = images[0]
  y_axis = image.ndim - 3  # (.., Y, X, C)
  rows = image.shape[y_axis]
  val_rows = max(patch[-2], int(round(val_fraction * rows)))
  if rows - val_rows < patch[-2]:
    logging.warning("Image too small to hold out %d validation rows; no validation loss.", val_rows)
    return images, []
  train, val = np.split(image, [rows - val_rows], axis=y_axis)
  return [train], [val]


def normalization_stats(images: list[np.ndarray], kind: str,
                        percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
  flat = np.concatenate([im.reshape(-1, im.shape[-1]) for im in images]).astype(np.float64)
  if kind == "meanstd":
    mean, std = flat.mean(0), flat.std(0)
  elif kind == "percentile":
    lo, hi = np.percentile(flat, percentiles, axis=0)
    mean, std = lo, hi - lo
  else:
    raise ValueError(f"data.normalization={kind!r}: expected 'meanstd' or 'percentile'")
  flat_channels = std <= 1e-8 * (np.abs(mean) + 1.0)
  if flat_channels.any():
    logging.warning("Channel(s) %s are constant in the training data; normalizing them by "
                    "offset only.", np.flatnonzero(flat_channels).tolist())
    std = np.where(flat_channels, 1.0, std)
  return mean, std


def grid_patches(images: list[np.ndarray], patch: tuple[int, ...], max_patches: int) -> np.ndarray:
  """Non-overlapping patches on a grid, evenly subsampled to at most max_patches."""
  patches = []
  for im in images:
    spatial = im.shape[:-1]
    starts = np.meshgrid(*[np.arange(0, s - p + 1, p) for s, p in zip(spatial, patch)],
                         indexing="ij")
    for corner in zip(*[s.ravel() for s in starts]):
      patches.append(im[tuple(slice(c, c + p) for c, p in zip(corner, patch))])
  if not patches:
    return np.zeros((0, *patch, images[0].shape[-1]), np.float32)
  pick = np.linspace(0, len(patches) - 1, min(max_patches, len(patches))).round().astype(int)
  return np.stack([patches[i] for i in np.unique(pick)])


def build_dataset(data_cfg: Any, raw: RawData, patch: tuple[int, ...], seed: int) -> Dataset:
  for name, im in zip(raw.names, raw.images):
    if any(s < p for s, p in zip(im.shape[:-1], patch)):
      raise ValueError(f"{name}: image {im.shape[:-1]} ({raw.spatial_axes}) is smaller than "
                       f"data.patch_shape {patch}; use a smaller patch")
  train_images, val_images = split_validation(raw, data_cfg.val_fraction, patch, seed)
  if data_cfg.val_path:
    val_images = load_paths(data_cfg.val_path, data_cfg.axes or None).images
  transform = data_cfg.get("transform", "none")
  intensity.warn_if_negative(train_images, transform)
  # Transformed once ('none': the same arrays, no copy), for the statistics and the data.
  train_images = [intensity.forward(im, transform) for im in train_images]
  val_images = [intensity.forward(im, transform) for im in val_images]
  mean, std = normalization_stats(train_images, data_cfg.normalization,
                                  tuple(data_cfg.percentiles))
  norm = lambda im: ((im - mean) / std).astype(np.float32)
  max_spatial = np.max([im.shape[:-1] for im in train_images], axis=0)
  channels = train_images[0].shape[-1]
  train = np.zeros((len(train_images), *max_spatial, channels), np.float32)
  for i, im in enumerate(train_images):
    train[(i, *[slice(0, s) for s in im.shape[:-1]])] = norm(im)
  sizes = np.array([im.shape[:-1] for im in train_images], np.int32)
  val = None
  if val_images:
    val = grid_patches([norm(im) for im in val_images], patch, data_cfg.max_val_patches)
  return Dataset(train, sizes, val, mean, std, raw.spatial_axes, raw.channel_names, raw,
                 transform)


def _augment(key: jax.Array, patch: jax.Array) -> jax.Array:
  """One of the 8 symmetries of the square, applied in the (Y, X) plane."""
  y, x = patch.ndim - 3, patch.ndim - 2
  variants = []
  for flip in (False, True):
    p = jnp.flip(patch, axis=x) if flip else patch
    for k in range(4):
      variants.append(jnp.rot90(p, k=k, axes=(y, x)))
  return jnp.stack(variants)[jax.random.randint(key, (), 0, 8)]


def sample_patch(key: jax.Array, images_NSC: jax.Array, sizes: jax.Array,
                 patch: tuple[int, ...], augment: bool) -> jax.Array:
  """One random patch (*patch, C); images chosen in proportion to their patch positions."""
  k_img, k_pos, k_aug = jax.random.split(key, 3)
  positions = jnp.prod(sizes - jnp.asarray(patch) + 1, axis=1).astype(jnp.float32)
  idx = jax.random.choice(k_img, sizes.shape[0], p=positions / positions.sum())
  corner = jax.random.randint(k_pos, (len(patch),), 0, sizes[idx] - jnp.asarray(patch) + 1)
  start = (idx, *corner, 0)
  out = jax.lax.dynamic_slice(images_NSC, start, (1, *patch, images_NSC.shape[-1]))[0]
  if augment and patch[-1] == patch[-2]:
    out = _augment(k_aug, out)
  return out


def sample_batch(key: jax.Array, images_NSC: jax.Array, sizes: jax.Array,
                 patch: tuple[int, ...], batch_size: int, augment: bool) -> jax.Array:
  keys = jax.random.split(key, batch_size)
  return jax.vmap(sample_patch, in_axes=(0, None, None, None, None))(
      keys, images_NSC, sizes, patch, augment)
