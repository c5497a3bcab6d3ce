"""The source layer: every kind of training input behind one `Source`.

A TIFF, a folder of TIFFs, a .npy file, a NumPy array, single-channel files grouped into
fields, and the built-in synthetic image are all opened the same way, without reading
their pixels: a `Source` is a list of samples (one per S/T index of each file) with their
spatial sizes, axes, channel count and names, and `read(i, origin, size)` returns a region
of sample i in the canonical (*spatial, C) float32 layout of n2v_jax.io.axes.to_canonical. The
checks (axes, channel counts, spatial axes, NaN) are made here, once, for every caller.

Uncompressed TIFFs and .npy files are memory-mapped: reading a region reads only its
pixels. Files that cannot be mapped (compressed, tiled) are decoded whole on first use, and
the last `data.stream_cache_files` of them are kept (LRU). Zarr arrays and OME-Zarr images
(and each field of an HCS plate) are zarr arrays, sliced the same way: a region reads only
the chunks it touches (n2v_jax.io.omezarr).
"""

import collections
import dataclasses
import math
import mmap
import os
import threading
from typing import Any

import numpy as np

from n2v_jax.choices import PAIRED_ALGORITHMS
from n2v_jax.data import synthetic
from n2v_jax.errors import N2VError
from n2v_jax.io import fields, npy, omezarr, tiff
from n2v_jax.io.axes import validate_axes


@dataclasses.dataclass
class _File:
  name: str
  axes: str  # axes of `data` (io.axes letters, any order)
  shape: tuple[int, ...]
  data: Any  # np.memmap, zarr.Array or an in-memory array; None: decoded on demand
  path: str | None = None  # None for arrays given in memory; zarr: its metadata file
  read_axes: str | None = None  # what read_image was given, to decode it the same way again
  nbytes: int = -1  # file size when opened: a file changed under a run must not go unnoticed
  field: Any = None  # fields.Field: single-channel files (`field.paths`) read as one 'C...' array

  @property
  def sample_axes(self) -> list[int]:
    return [i for i, a in enumerate(self.axes) if a in "ST"]

  @property
  def num_samples(self) -> int:
    return math.prod(self.shape[i] for i in self.sample_axes)

  def describe(self) -> str:
    return f"shape {self.shape} (axes {self.axes}), {self.nbytes} bytes"


def _madvise(data: Any, advice: int | None) -> None:
  mapping = getattr(data, "_mmap", None)  # np.memmap's mmap.mmap (also on its views)
  if mapping is not None and advice is not None and hasattr(mapping, "madvise"):
    mapping.madvise(advice)


class FileStore:
  """The opened files; decoded ones cached, at most `cache_files` at a time (LRU)."""

  def __init__(self, cache_files: int):
    if not isinstance(cache_files, int) or cache_files < 1:
      raise N2VError(f"config.data.stream_cache_files={cache_files!r}: expected an integer >= 1")
    self.files: list[_File] = []
    self.decoded = 0  # files decoded so far (tests and logs)
    self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
    self._cache_files = cache_files
    self._lock = threading.Lock()  # the prefetch thread and the main thread both read

  def add(self, f: _File) -> int:
    # Random patches: read-ahead around each page fault would mostly read unused pixels.
    _madvise(f.data, getattr(mmap, "MADV_RANDOM", None))
    self.files.append(f)
    return len(self.files) - 1

  def release(self, ids: np.ndarray) -> None:
    """Unmaps the pages read from these memory-mapped files (they stay in the kernel's page
    cache): resident memory then holds one batch of pixels, not all pixels ever read."""
    for i in np.unique(ids):
      _madvise(self.files[int(i)].data, getattr(mmap, "MADV_DONTNEED", None))

  def check_unchanged(self, i: int) -> None:
    f = self.files[i]
    if f.path is None:
      return
    size = 0
    for p in (f.field.paths if f.field is not None else [f.path]):
      try:
        size += os.stat(p).st_size
      except FileNotFoundError:
        raise N2VError(f"{p}: file disappeared during training; expected {f.describe()}"
                       ) from None
    if size != f.nbytes:
      raise N2VError(f"{f.path}: file changed during training (now {size} bytes); "
                     f"expected {f.describe()}")

  def array(self, i: int) -> Any:
    f = self.files[i]
    if f.data is not None:
      return f.data
    with self._lock:
      if i in self._cache:
        self._cache.move_to_end(i)
        return self._cache[i]
      self.check_unchanged(i)
      try:
        if f.field is not None:
          data, axes, _ = fields.read_field(f.field, f.read_axes)
        else:
          img = tiff.read_image(f.path, f.read_axes)
          data, axes = img.data, img.axes
      except FileNotFoundError:
        raise N2VError(f"{f.path}: file disappeared during training; expected "
                       f"{f.describe()}") from None
      if tuple(data.shape) != f.shape or axes != f.axes:
        raise N2VError(f"{f.path}: now has shape {tuple(data.shape)} (axes {axes}); "
                       f"expected {f.describe()}")
      self.decoded += 1
      self._cache[i] = data
      while len(self._cache) > self._cache_files:
        self._cache.popitem(last=False)
      return data

  def region(self, i: int, sample: int, origin: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(*size, C) float32 from sample `sample` of file i, read straight from its storage."""
    f = self.files[i]
    index: list[Any] = [slice(None)] * len(f.axes)
    if f.sample_axes:
      for ax, s in zip(f.sample_axes,
                       np.unravel_index(sample, [f.shape[a] for a in f.sample_axes])):
        index[ax] = int(s)
    spatial = "ZYX" if "Z" in f.axes else "YX"
    for a, o, n in zip(spatial, origin, size):
      index[f.axes.index(a)] = slice(int(o), int(o) + int(n))
    kept = [a for a in f.axes if a not in "ST"]
    order = [kept.index(a) for a in spatial + ("C" if "C" in kept else "")]
    out = np.array(np.transpose(self.array(i)[tuple(index)], order), np.float32)
    return out if "C" in kept else out[..., None]


@dataclasses.dataclass
class Source:
  """Samples (one per S/T index of each file), referenced; pixels read by region."""
  store: FileStore
  file_idx: np.ndarray  # (N,) which file each sample is in
  sample_idx: np.ndarray  # (N,) its index among that file's samples (S, T flattened)
  sizes: np.ndarray  # (N, ndim) spatial shape
  spatial_axes: str
  channels: int
  channel_names: list[str] | None = None
  source_axes: str = ""
  source_paths: list[str] = dataclasses.field(default_factory=list)
  clean: "Source | None" = None  # ground truth aligned with the samples, if known
  target: "Source | None" = None  # n2n/care training targets aligned with the samples

  def __len__(self) -> int:
    return len(self.file_idx)

  def name(self, i: int) -> str:
    f = self.store.files[int(self.file_idx[i])]
    return f.name if f.num_samples == 1 else f"{f.name}[{int(self.sample_idx[i])}]"

  def read(self, i: int, origin: Any, size: Any) -> np.ndarray:
    """(*size, C) float32: the region of sample i at `origin` (spatial axes)."""
    out = self.store.region(int(self.file_idx[i]), int(self.sample_idx[i]), origin, size)
    bad = ~np.isfinite(out)
    if bad.any():
      raise N2VError(f"{self.name(i)}: {int(bad.sum())} NaN/inf pixel(s) in the region at "
                     f"{tuple(int(o) for o in origin)}; clean or mask them before training")
    return out

  def sample(self, i: int) -> np.ndarray:
    """The whole of sample i, (*spatial, C) float32."""
    return self.read(i, np.zeros(self.sizes.shape[1], int), self.sizes[i])

  def release(self, samples: np.ndarray | None = None) -> None:
    """Unmaps the pages read from these samples' files (all samples: None)."""
    self.store.release(self.file_idx if samples is None else self.file_idx[samples])


class Paired:
  """A source and its targets read as one source of 2C channels (the target's after the
  input's): every patch, crop and flip of a training pair is then the same for both."""

  def __init__(self, source: Source):
    self.input, self.target = source, source.target

  def __getattr__(self, name: str) -> Any:  # sizes, names, files: the input's
    return getattr(self.input, name)

  def __len__(self) -> int:
    return len(self.input)

  @property
  def channels(self) -> int:
    return 2 * self.input.channels

  def read(self, i: int, origin: Any, size: Any) -> np.ndarray:
    return np.concatenate([self.input.read(i, origin, size), self.target.read(i, origin, size)],
                          axis=-1)

  def release(self, samples: np.ndarray | None = None) -> None:
    self.input.release(samples)
    self.target.release(samples)


def _index(store: FileStore, files: list[_File], spatial: str, **kwargs: Any) -> Source:
  ids = [store.add(f) for f in files]
  counts = [f.num_samples for f in files]
  shapes = [[f.shape[f.axes.index(a)] for a in spatial] for f in files]
  return Source(store, np.repeat(np.asarray(ids, np.int64), counts),
                np.concatenate([np.arange(n) for n in counts]).astype(np.int64),
                np.repeat(np.asarray(shapes, np.int64).reshape(len(files), len(spatial)),
                          counts, axis=0), spatial, **kwargs)


def _channels(f: _File) -> int:
  return f.shape[f.axes.index("C")] if "C" in f.axes else 1


def _open_file(p: str, axes: str | None) -> tuple[_File, list[str] | None]:
  if p.lower().endswith(".npy"):
    data, npy_axes = npy.open_npy(p, axes)
    return _File(p, npy_axes, tuple(data.shape), data, p, axes, os.stat(p).st_size), None
  img = tiff.read_image(p, axes, lazy=True)
  data = None if isinstance(img.data, tiff.Unread) else img.data
  return _File(p, img.axes, tuple(img.data.shape), data, p, axes,
               os.stat(p).st_size), img.channel_names


def _open_zarr(p: str, axes: str | None) -> tuple[_File, list[str] | None]:
  """Level 0 of an OME-Zarr image (or a plain zarr array), sliced chunk by chunk. The size
  of its metadata file stands for the file size: a store rewritten under a run is caught."""
  img = omezarr.open_image(p, axes)
  meta = img.metadata_file
  return _File(p, img.axes, img.shape, img.array, meta, axes, os.stat(meta).st_size), \
      img.channel_names


def _open_field(field: "fields.Field", axes: str | None) -> _File:
  """A field of single-channel files as one (C, ...) file, decoded on demand (all of its
  files at once, as fields.read_field does); only the headers are read here."""
  first = None
  for p in field.paths:
    img = tiff.read_image(p, axes, lazy=True)
    rest, shape = fields.without_channel(p, img.axes, img.data.shape)
    if first is None:
      first = (p, rest, shape)
    elif (rest, shape) != first[1:]:
      raise N2VError(f"{p}: shape {shape} ({rest}) differs from {first[0]} {first[2]} "
                     f"({first[1]}) in field {field.key}")
  nbytes = sum(os.stat(p).st_size for p in field.paths)
  return _File(fields.field_name(field), "C" + first[1], (len(field.paths), *first[2]), None,
               field.paths[0], axes, nbytes, field)


def open_paths(store: FileStore, path: str, axes: str | None, group: dict | None = None,
               ) -> Source:
  """A TIFF/.npy, a folder of TIFFs, a zarr array, an OME-Zarr image or an HCS plate (each
  field an image), opened without reading pixels; checks consistency.
  group: {'pattern', 'channels', 'channel_names'}: single-channel files grouped into
  multi-channel fields by file name (n2v_jax.io.fields)."""
  files, names = [], None
  if omezarr.is_zarr(path):
    if group is not None:
      raise N2VError(f"{path}: data.channel_pattern groups single-channel TIFF files; an "
                     "OME-Zarr image has its channels in one array (leave it empty)")
    opened = (_open_zarr(p, axes) for p in omezarr.image_paths(path))
  elif group is not None:
    paths = tiff.list_images(path)
    found, group_names = fields.training_fields(paths, group)
    opened = [(_open_field(f, axes), group_names) for f in found]
  else:
    opened = (_open_file(p, axes) for p in tiff.list_images(path))
  for f, file_names in opened:
    p = f.name
    spatial = "ZYX" if "Z" in f.axes else "YX"
    if not files:
      names, first_spatial = file_names, spatial
    elif spatial != first_spatial:
      raise N2VError(f"{p}: spatial axes {spatial} differ from {first_spatial} of "
                     f"{files[0].name}")
    elif _channels(f) != _channels(files[0]):
      raise N2VError(f"{p}: {_channels(f)} channels, but {files[0].name} has "
                     f"{_channels(files[0])}; all training images need the same channels")
    files.append(f)
  return _index(store, files, first_spatial, channels=_channels(files[0]), channel_names=names,
                source_axes=files[0].axes, source_paths=[f.name for f in files])


def _aligned(store: FileStore, raw: Source, path: str, data_cfg: Any, group: dict | None,
             field: str) -> Source:
  """Images at `path` that pair sample by sample with `raw` (ground truth, targets)."""
  other = open_paths(store, path, data_cfg.axes or (None if group else raw.source_axes), group)
  if other.sizes.shape != raw.sizes.shape or (other.sizes != raw.sizes).any() or (
      other.channels != raw.channels):
    raise N2VError(f"data.{field}={path}: shapes do not match data.path "
                   f"({len(other)} samples of {other.channels} channel(s) vs {len(raw)} of "
                   f"{raw.channels}, or different sizes)")
  return other


def open_source(data_cfg: Any, seed: int, array: np.ndarray | None = None,
                algorithm: str = "n2v") -> Source:
  """The training samples: `array` (NumPy, with data.axes) if given, else data.path, else
  the built-in synthetic image (from `seed`). Nothing is read yet. algorithm 'n2n'/'care':
  with `target` (data.target_path; synthetic: a second noise realisation, or the clean
  image)."""
  store = FileStore(data_cfg.stream_cache_files)
  if algorithm in PAIRED_ALGORITHMS and array is not None:
    raise N2VError(f"algorithm={algorithm!r} trains on pairs: give the inputs as data.path "
                   "and the targets as data.target_path")
  if array is not None:
    if not data_cfg.axes:
      raise N2VError("the NumPy array: set data.axes (e.g. 'SYX', 'CYX', 'ZYX') for NumPy data")
    array = np.asarray(array)
    axes = validate_axes(data_cfg.axes, array.ndim)
    f = _File("the NumPy array", axes, array.shape, array)
    return _index(store, [f], "ZYX" if "Z" in axes else "YX", channels=_channels(f),
                  source_axes=axes)
  if not data_cfg.path:
    syn = data_cfg.synthetic
    noisy, clean = synthetic.noisy_pair(seed, tuple(syn.shape), syn.channels, syn.noise_sigma,
                                        syn.correlation)
    spatial = "ZYX" if len(syn.shape) == 3 else "YX"
    kw = dict(channels=noisy.shape[-1], source_axes=spatial + "C")
    raw = _index(store, [_File("synthetic", spatial + "C", noisy.shape, noisy)], spatial, **kw)
    raw.clean = _index(store, [_File("synthetic", spatial + "C", clean.shape, clean)], spatial,
                       **kw)
    # care: the clean image; n2n: the same scene under independent noise of the same sigma
    if algorithm in PAIRED_ALGORITHMS:
      target = clean if algorithm == "care" else (clean + np.random.default_rng([seed, 1]).normal(
          0.0, syn.noise_sigma, clean.shape)).astype(np.float32)
      raw.target = _index(store, [_File("synthetic target", spatial + "C", target.shape,
                                        target)], spatial, **kw)
    return raw
  group = fields.grouping(data_cfg)
  raw = open_paths(store, data_cfg.path, data_cfg.axes or None, group)
  if data_cfg.clean_path:
    raw.clean = _aligned(store, raw, data_cfg.clean_path, data_cfg, group, "clean_path")
  if algorithm in PAIRED_ALGORITHMS:
    raw.target = _aligned(store, raw, data_cfg.target_path, data_cfg, group, "target_path")
    if algorithm == "care" and raw.clean is None:
      raw.clean = raw.target  # clean targets: the end-of-run PSNR is scored against them
  return raw
