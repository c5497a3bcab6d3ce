"""Reading and writing TIFF images together with an axes string (no JAX here).

Axes use the letters of `n2v_jax.io.axes`, in any order. Files are written as ImageJ
hyperstacks when the axes and dtype allow it (so Fiji opens them as such) and otherwise as
tifffile "shaped" TIFFs whose JSON description carries the axes. Either way `read_image`
gives back the same data, axes and channel names.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import tifffile

from n2v_jax.errors import N2VError, NotFoundError
from n2v_jax.io import files, pixels
from n2v_jax.io.axes import ALIASES, validate_axes
_IMAGEJ_ORDER = "TZCYX"
_IMAGEJ_DTYPES = "BHhf"  # uint8, uint16, int16, float32: what tifffile writes as ImageJ
# ImageJ description key holding our own axes, so that S axes (stored as ImageJ frames)
# and size-1 axes (which ImageJ readers squeeze away) come back exactly.
_N2V_AXES_KEY = "n2v_axes"
# ImageJ metadata from `like` that stays valid after the pixel values change.
_IMAGEJ_KEEP = ("unit", "Info", "xorigin", "yorigin", "zorigin")


@dataclasses.dataclass
class Image:
  data: np.ndarray  # as stored in the file, unchanged
  axes: str  # axes of `data`, upper case, e.g. 'CYX'
  path: str | None = None
  imagej_metadata: dict | None = None
  ome_metadata: str | None = None
  resolution: tuple | None = None  # (x, y) pixels per resolution unit, from the tags
  channel_names: list[str] | None = None
  resolution_unit: int | None = None  # TIFF ResolutionUnit tag (1 none, 2 inch, 3 cm)


# --------------------------------------------------------------------------- reading


def _tifffile_axes_to_ours(axes: str) -> str:
  """Map tifffile series axes (where S means samples per pixel) to our letters."""
  if "S" in axes and "C" not in axes:
    axes = axes.replace("S", "C")  # RGB(A) samples are channels
  return "".join(ALIASES.get(a, a) for a in axes)


@dataclasses.dataclass(frozen=True)
class Unread:
  """Stand-in for pixel data `read_image(lazy=True)` left in a file it cannot memory-map
  (compressed or tiled): shape and dtype only, decoded later by a plain `read_image`."""

  shape: tuple[int, ...]
  dtype: np.dtype

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def reshape(self, shape: tuple[int, ...]) -> "Unread":
    return Unread(tuple(int(n) for n in shape), self.dtype)


def _series_data(tif: tifffile.TiffFile, series: Any, lazy: bool) -> Any:
  """The series' pixels: read (default), or when lazy a read-only memory map, or `Unread`."""
  if not lazy:
    return series.asarray()
  if series.dataoffset is None:  # not one contiguous uncompressed block
    return Unread(tuple(series.shape), np.dtype(series.dtype))
  return np.memmap(tif.filehandle.path, dtype=np.dtype(tif.byteorder + series.dtype.char),
                   mode="r", offset=series.dataoffset, shape=tuple(series.shape))


def _n2v_imagej_read(tif: tifffile.TiffFile, series: Any,
                     lazy: bool = False) -> tuple[np.ndarray, str] | None:
  """Data and axes of an ImageJ file written by `write_image`, or None if not one."""
  stored = (tif.imagej_metadata or {}).get(_N2V_AXES_KEY)
  if not isinstance(stored, str):
    return None
  try:
    axes = validate_axes(stored)
  except N2VError:
    return None
  ij_axes = _imagej_axes(axes)
  full_shape = tuple(series.get_shape(False))
  full_axes = series.get_axes(False)
  if ij_axes is None or full_axes != "TZCYXS" or full_shape[-1] != 1:
    return None
  shape = tuple(full_shape[full_axes.index(a)] for a in ij_axes)
  if math.prod(shape) != math.prod(full_shape):
    return None
  return _series_data(tif, series, lazy).reshape(shape), axes


def _channel_names_from_labels(labels: Any, n_channels: int) -> list[str] | None:
  """ImageJ slice labels -> channel names: one per channel, or repeated per plane."""
  if isinstance(labels, str):  # tifffile gives a single label as a plain string
    labels = [labels]
  if not isinstance(labels, (list, tuple)) or not labels or n_channels < 1:
    return None
  labels = [str(label) for label in labels]
  if len(labels) % n_channels:
    return None
  # ImageJ planes are ordered with C fastest, so label i belongs to channel i % C.
  if any(label != labels[i % n_channels] for i, label in enumerate(labels)):
    return None
  return labels[:n_channels]


def _channel_names_from_ome(ome_xml: str, n_channels: int) -> list[str] | None:
  try:
    root = ET.fromstring(ome_xml)
  except ET.ParseError:
    return None
  for element in root.iter():
    if element.tag.endswith("}Pixels") or element.tag == "Pixels":
      channels = [c for c in element if c.tag.endswith("Channel")]
      names = [c.get("Name") for c in channels]
      if len(names) == n_channels and all(names):
        return [str(n) for n in names]
      return None  # only the first image (series 0) is read
  return None


class _HeldWarnings(logging.Filter):
  """Holds back tifffile's log records until close(): emitted then, or dropped."""

  def __init__(self):
    super().__init__()
    self.records = []
    logging.getLogger("tifffile").addFilter(self)

  def filter(self, record: logging.LogRecord) -> bool:
    self.records.append(record)
    return False

  def close(self, emit: bool) -> None:
    logger = logging.getLogger("tifffile")
    logger.removeFilter(self)
    for record in self.records if emit else ():
      logger.handle(record)


def read_image(path: str | os.PathLike, axes: str | None = None, lazy: bool = False) -> Image:
  """Read series 0 of a TIFF with its axes; `axes` overrides the file's own letters.

  lazy: read no pixels; `data` is a read-only `np.memmap` of an uncompressed file, else
  an `Unread` (shape and dtype only).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise NotFoundError(f"{path}: no such file")
  if os.path.isdir(path):
    raise N2VError(f"{path}: is a folder, not a TIFF file")
  held = _HeldWarnings()  # tifffile's warnings about a file we then refuse are noise
  try:
    with tifffile.TiffFile(path) as tif:
      series = tif.series[0]
      pixels.check(path, tuple(series.shape), series.dtype, whole=not lazy)
      n2v = _n2v_imagej_read(tif, series, lazy) if tif.is_imagej else None
      if n2v is not None:
        data, file_axes = n2v
        meaningful = True
      else:
        data = _series_data(tif, series, lazy)
        raw_axes = series.axes
        shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else {}
        if tif.is_shaped and isinstance(shaped.get("axes"), str):
          # our own shaped files: the letters are ours verbatim (S = samples axis)
          file_axes = shaped["axes"].upper()
          if file_axes.endswith("S") and "C" not in file_axes and (
              tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
          ):  # other tifffile users write 'YXS' for RGB samples
            file_axes = file_axes[:-1] + "C"
          meaningful = True
        else:
          file_axes = _tifffile_axes_to_ours(raw_axes)
          meaningful = (tif.is_imagej or tif.is_ome or not any(a in raw_axes for a in "QI"))
        if len(file_axes) != data.ndim:  # defensive: never trust a mismatch
          file_axes, meaningful = "", False
      imagej_metadata = dict(tif.imagej_metadata) if tif.is_imagej else None
      ome_metadata = tif.ome_metadata if tif.is_ome else None
      shaped_metadata = (dict(tif.shaped_metadata[0]) if tif.is_shaped and tif.shaped_metadata
                         else None)
      page = tif.pages[0]
      resolution = resolution_unit = None
      if "XResolution" in page.tags and "YResolution" in page.tags:
        resolution = tuple(page.resolution)
        resolution_unit = int(page.resolutionunit)
  except N2VError:
    held.close(emit=False)
    raise
  except Exception as exc:  # tifffile raises many types for broken/unsupported files
    held.close(emit=False)
    reason = str(exc) or type(exc).__name__
    raise N2VError(f"{path}: not a readable TIFF file ({reason})") from exc
  held.close(emit=True)

  if axes is not None:
    try:
      given = validate_axes(axes)
    except N2VError as e:
      raise N2VError(f"{path}: {e}") from None
    if meaningful and len(given) != data.ndim:
      raise N2VError(f"{path}: axes {given!r} given, but the file has {data.ndim} dimensions "
                     f"(shape {data.shape}, axes {file_axes!r} in its metadata)")
    if len(given) != data.ndim:
      raise N2VError(f"{path}: axes {given!r} given, but the image has {data.ndim} dimensions "
                     f"(shape {data.shape})")
    final_axes = given
  elif meaningful:
    try:
      final_axes = validate_axes(file_axes, data.ndim)
    except N2VError as exc:
      raise N2VError(f"{path}: the file's axes {file_axes!r} (shape {data.shape}) are not usable "
                     f"({exc}); pass --axes") from None
  elif data.ndim == 2:
    final_axes = "YX"
  else:
    examples = {3: "SYX, ZYX or CYX", 4: "SCYX, CZYX or SZYX", 5: "SCZYX or TZCYX"}
    raise N2VError(f"{path}: image of shape {data.shape} has no axes metadata, so its "
                   f"{data.ndim} dimensions are ambiguous; pass --axes "
                   f"(e.g. {examples.get(data.ndim, 'SCZYX')})")

  channel_names = None
  if "C" in final_axes:
    n_channels = data.shape[final_axes.index("C")]
    if shaped_metadata and isinstance(shaped_metadata.get("channel_names"), list):
      names = [str(n) for n in shaped_metadata["channel_names"]]
      channel_names = names if len(names) == n_channels else None
    if channel_names is None and imagej_metadata:
      channel_names = _channel_names_from_labels(imagej_metadata.get("Labels"), n_channels)
    if channel_names is None and ome_metadata:
      channel_names = _channel_names_from_ome(ome_metadata, n_channels)

  return Image(data=data, axes=final_axes, path=path, imagej_metadata=imagej_metadata,
               ome_metadata=ome_metadata, resolution=resolution, channel_names=channel_names,
               resolution_unit=resolution_unit)


# --------------------------------------------------------------------------- writing


def _imagej_axes(axes: str) -> str | None:
  """ImageJ axes for our axes (S stored as frames T), or None if ImageJ can't hold them."""
  if "S" in axes:
    if "T" in axes:
      return None
    axes = axes.replace("S", "T")
  positions = [_IMAGEJ_ORDER.find(a) for a in axes]
  if -1 in positions or positions != sorted(positions):
    return None  # ImageJ needs TZCYX order; we never reorder the caller's data
  return axes


def _imagej_write_metadata(
    data: np.ndarray, axes: str, ij_axes: str, like: Image | None, names: list[str] | None
) -> dict:
  metadata: dict[str, Any] = {"axes": ij_axes, _N2V_AXES_KEY: axes}
  source = (like.imagej_metadata or {}) if like is not None else {}
  for key in _IMAGEJ_KEEP:
    if key in source:
      metadata[key] = source[key]
  if "Z" in axes and "spacing" in source:
    metadata["spacing"] = source["spacing"]
  if "T" in axes:  # only real time axes keep frame timing
    for key in ("finterval", "fps"):
      if key in source:
        metadata[key] = source[key]
  if "C" in axes:
    c_axis = axes.index("C")
    n_channels = data.shape[c_axis]
    if "mode" in source:
      metadata["mode"] = source["mode"]
    luts = source.get("LUTs")
    if isinstance(luts, (list, tuple)) and len(luts) == n_channels:
      metadata["LUTs"] = list(luts)
    n_planes = math.prod(data.shape[axes.index(a)] for a in axes if a not in "YX")
    if names is not None:
      metadata["Labels"] = list(names) * (n_planes // n_channels)
    # display ranges must follow the new values (the old ones would be wrong)
    ranges: list[float] = []
    for c in range(n_channels):
      channel = np.take(data, c, axis=c_axis)
      finite = channel[np.isfinite(channel)] if channel.dtype.kind == "f" else channel
      lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
      ranges += [lo, hi]
    metadata["Ranges"] = tuple(ranges)
  return metadata


def _write_kwargs(
    data: np.ndarray, axes: str, like: Image | None, names: list[str] | None,
    extra: dict | None = None,
) -> dict:
  kwargs: dict[str, Any] = {"photometric": "minisblack"}
  if like is not None and like.resolution is not None:
    kwargs["resolution"] = tuple(float(r) for r in like.resolution)
    if like.resolution_unit is not None:
      kwargs["resolutionunit"] = like.resolution_unit
  ij_axes = _imagej_axes(axes)
  if ij_axes is not None and data.dtype.char in _IMAGEJ_DTYPES:
    kwargs["imagej"] = True
    kwargs["metadata"] = _imagej_write_metadata(data, axes, ij_axes, like, names)
    kwargs["metadata"].update(extra or {})
  else:
    metadata: dict[str, Any] = {"axes": axes}
    if names is not None:
      metadata["channel_names"] = list(names)
    metadata.update(extra or {})
    kwargs["metadata"] = metadata
  return kwargs


def write_image(
    path: str | os.PathLike,
    data: np.ndarray,
    axes: str,
    *,
    like: Image | None = None,
    overwrite: bool = False,
    channel_names: list[str] | None = None,
    extra_metadata: dict | None = None,
) -> None:
  """Atomically write `data` with `axes`; `like` supplies metadata to carry over.

  Channel names come from `channel_names`, else from `like` when its channel count fits.
  `extra_metadata`: scalar key/values added to the ImageJ (or shaped JSON) description.
  """
  path = os.fspath(path)
  data = np.asarray(data)
  axes = validate_axes(axes, data.ndim)
  if os.path.isdir(path):
    raise N2VError(f"{path}: is a folder; give an output file name")
  files.refuse_existing(path, overwrite)
  files.check_output_folder(path)

  names = None
  if "C" in axes:
    n_channels = data.shape[axes.index("C")]
    if channel_names is not None:
      if len(channel_names) != n_channels:
        raise N2VError(f"{path}: {len(channel_names)} channel names given for {n_channels} "
                       "channels")
      names = [str(n) for n in channel_names]
    elif like is not None and like.channel_names and len(like.channel_names) == n_channels:
      names = list(like.channel_names)
  kwargs = _write_kwargs(data, axes, like, names, extra_metadata)

  with files.atomic_output(path, overwrite) as tmp, open(tmp, "wb") as fh:
    tifffile.imwrite(fh, data, **kwargs)


# --------------------------------------------------------------------------- listing


def list_images(path: str | os.PathLike) -> list[str]:
  """A file -> [file]; a folder -> its sorted .tif/.tiff files (no hidden/temp files)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise NotFoundError(f"{path}: no such file or folder")
  if not os.path.isdir(path):
    return [path]
  names = sorted(name for name in os.listdir(path) if not name.startswith(".")
                 and name.lower().endswith((".tif", ".tiff"))
                 and os.path.isfile(os.path.join(path, name)))
  if not names:
    raise N2VError(f"{path}: no .tif/.tiff files")
  return [os.path.join(path, name) for name in names]
