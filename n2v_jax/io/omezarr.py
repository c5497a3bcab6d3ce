"""Zarr arrays, OME-Zarr images and HCS plates: what n2v_jax reads and writes (no JAX here).

Reading. A path is a zarr store when it is a folder with zarr metadata (`zarr.json`: zarr
v3; `.zarray`/`.zgroup`/`.zattrs`: v2). Of an OME-Zarr image (NGFF 0.4 in zarr v2, NGFF
0.5 in zarr v3 under the `ome` attribute; the 0.6 draft's coordinateSystems axes too)
level 0 (the first dataset of `multiscales`) is read, lazily: a `zarr.Array` is sliced like
a NumPy array and reads only the chunks a region touches. Axes come from the metadata
(t->T, c->C, z->Z, y->Y, x->X; a z of size 1 is read as a sample axis, so a TCZYX plane is
a 2D image), channel names from `omero.channels[].label`. A plain zarr array has no axes:
they must be given. A plate (`plate` metadata: plate -> wells -> fields) or a well lists
its fields as images.

Writing. `create_image` makes an output like an input image: the same NGFF version and zarr
format, axes, omero channels, and the input's pyramid: every level with its shape, chunks,
shards and coordinateTransformations, no pixels yet. Level k > 0 is then made from the
denoised level k - 1 (`downsample`: the factor per axis that the two levels' shapes give,
the block mean, or every f-th pixel where the input's multiscales `type` says 'nearest').
It is built under a temporary name and renamed into place, so an output that exists has
whole metadata. Pixels are then written
block by block (`block_grid`: whole chunks or shards, never part of one, so a block never
rewrites a chunk another block wrote); zarr's local store writes each chunk to a temporary
file renamed into place, so a chunk is whole or absent. `BlockLog` records each finished
block (a line appended and fsynced after its chunks are stored): a killed run resumes with
the blocks not listed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import uuid
from typing import Any

import numpy as np
import zarr

from n2v_jax.errors import N2VError, NotFoundError
from n2v_jax.io import files, pixels
from n2v_jax.io.axes import validate_axes

NGFF_AXES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}
NGFF_TYPES = {"time": "T", "channel": "C"}  # axes with other names, known by their type
METADATA_FILES = ("zarr.json", ".zarray", ".zgroup", ".zattrs")
PROGRESS_FILE = ".n2v_blocks"  # BlockLog, inside an output image (zarr ignores it)
PROGRESS_FORMAT = 1
# A block is read with its halo and predicted at once: at most this many input voxels
# (channels included; float32: 16 MiB), unless one chunk (shard) is larger.
BLOCK_VOXELS = 1 << 22


def write_chunks(array: Any) -> tuple[int, ...]:
  """The smallest unit of a zarr array written whole: the shard when it is sharded."""
  shards = getattr(array, "shards", None)
  return tuple(int(n) for n in (shards or array.chunks))


def is_zarr(path: str | os.PathLike) -> bool:
  path = os.fspath(path)
  return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m))
                                     for m in METADATA_FILES)


def _attributes(node: Any) -> dict:
  """A group's or array's attributes, with NGFF 0.5's `ome` namespace unwrapped."""
  attrs = dict(node.attrs)
  return dict(attrs["ome"]) if isinstance(attrs.get("ome"), dict) else attrs


def _open(path: str) -> Any:
  try:
    return zarr.open(path, mode="r")
  except Exception as e:  # zarr raises several kinds for damaged metadata
    raise N2VError(f"{path}: not a readable zarr store ({type(e).__name__}: {e})") from None


@dataclasses.dataclass
class ZarrImage:
  """Level 0 of an OME-Zarr image (or a plain zarr array) and what its output carries."""
  path: str  # the image group, or the array for a plain zarr array
  array: Any  # zarr.Array of level 0, sliced like a NumPy array
  axes: str  # ours, one letter per array axis
  channel_names: list[str] | None = None
  version: str | None = None  # NGFF version ('0.4', '0.5'); None: a plain array
  multiscale: dict | None = None  # multiscales[0], as written
  omero: dict | None = None
  level_path: str = ""  # level 0 inside the group ('' for a plain array)

  shape = property(lambda self: tuple(int(n) for n in self.array.shape))
  dtype = property(lambda self: np.dtype(self.array.dtype))

  @property
  def chunks(self) -> tuple[int, ...]:
    return tuple(int(n) for n in self.array.chunks)

  def levels(self) -> list[Any]:
    """The zarr arrays of every level, level 0 first (a plain array: itself)."""
    if self.multiscale is None:
      return [self.array]
    group = zarr.open_group(self.path, mode="r")
    return [group[d["path"]] for d in self.multiscale["datasets"]]

  @property
  def downsampling(self) -> str:
    """How the input's pyramid was made, as far as its metadata says: 'nearest' or 'mean'."""
    ms = self.multiscale or {}
    named = f"{ms.get('type', '')} {(ms.get('metadata') or {}).get('method', '')}".lower()
    return "nearest" if "nearest" in named else "mean"

  @property
  def write_chunks(self) -> tuple[int, ...]:
    return write_chunks(self.array)

  @property
  def zarr_format(self) -> int:
    return int(self.array.metadata.zarr_format)

  @property
  def metadata_file(self) -> str:
    """The level-0 array's metadata file: its size tells a rewritten array (sources)."""
    folder = os.path.join(self.path, self.level_path)
    return os.path.join(folder, "zarr.json" if self.zarr_format == 3 else ".zarray")

  def describe(self) -> str:
    return f"shape {self.shape} (axes {self.axes}), chunks {self.chunks}, {self.dtype}"


def _axis_letter(path: str, axis: Any) -> str:
  name, kind = (axis, None) if isinstance(axis, str) else (axis.get("name"), axis.get("type"))
  letter = NGFF_AXES.get(str(name).lower()) or NGFF_TYPES.get(kind)
  if letter is None:
    raise N2VError(f"{path}: axis {name!r} (type {kind!r}) has no n2v_jax equivalent; "
                   "expected t, c, z, y, x (or a time/channel axis)")
  return letter


def _our_axes(path: str, ngff_axes: list, shape: tuple[int, ...]) -> tuple[str, str]:
  """(the metadata's axes in our letters, the axes read: a z of size 1 as S)."""
  if len(ngff_axes) != len(shape):
    raise N2VError(f"{path}: {len(ngff_axes)} axes in the metadata for a "
                   f"{len(shape)}-dimensional level 0")
  letters = [_axis_letter(path, a) for a in ngff_axes]
  try:
    named = validate_axes("".join(letters), len(shape))
  except N2VError as e:
    raise N2VError(f"{path}: {e}") from None
  if "Z" in named and shape[named.index("Z")] == 1 and "S" not in named:
    return named, named.replace("Z", "S")  # one plane: 2D (bioformats2raw writes TCZYX)
  return named, named


def _channel_names(omero: dict | None, n_channels: int) -> list[str] | None:
  channels = (omero or {}).get("channels") or []
  names = [c.get("label") for c in channels if isinstance(c, dict)]
  if len(names) == n_channels and all(isinstance(n, str) and n for n in names):
    return names
  return None


def open_image(path: str, axes: str | None = None) -> ZarrImage:
  """Level 0 of the OME-Zarr image (or the plain zarr array) at path; nothing read yet.
  axes: required for a plain array; for an OME-Zarr image, must match its metadata."""
  path = os.fspath(path)
  node = _open(path)
  if isinstance(node, zarr.Array):
    if not axes:
      raise N2VError(f"{path}: a zarr array without OME-Zarr metadata has no axes; give them "
                     f"(data.axes / --axes, e.g. 'CYX' for shape {tuple(node.shape)})")
    try:
      letters = validate_axes(axes, node.ndim)
    except N2VError as e:
      raise N2VError(f"{path}: {e}") from None
    pixels.check_dtype(path, node.dtype)
    return ZarrImage(path, node, letters)
  attrs = _attributes(node)
  multiscales = attrs.get("multiscales")
  if not multiscales:
    what = "an HCS plate" if "plate" in attrs else "a well" if "well" in attrs else "a group"
    raise N2VError(f"{path}: {what}, not an OME-Zarr image (no 'multiscales' metadata)")
  ms = multiscales[0]
  level = ms["datasets"][0]["path"]
  try:
    array = node[level]
  except KeyError:
    raise N2VError(f"{path}: level 0 ({level!r}) of the multiscales is missing") from None
  pixels.check_dtype(path, array.dtype)
  named, letters = _our_axes(path, _ngff_axes(ms), tuple(array.shape))
  if axes and validate_axes(axes) not in (named, letters):
    raise N2VError(f"{path}: axes {axes} given, but the OME-Zarr metadata says {named} "
                   f"({', '.join(_axis_names(ms))})")
  version = str(attrs.get("version") or ms.get("version") or "0.4")
  omero = attrs.get("omero")
  n_channels = array.shape[letters.index("C")] if "C" in letters else 1
  return ZarrImage(path, array, letters, _channel_names(omero, n_channels), version, ms, omero,
                   level)


def _ngff_axes(ms: dict) -> list:
  """multiscales[0]'s axes; in the NGFF 0.6 draft, those of its first coordinate system."""
  if ms.get("axes"):
    return ms["axes"]
  systems = ms.get("coordinateSystems") or [{}]
  return systems[0].get("axes") or []


def _axis_names(ms: dict) -> list[str]:
  return [a if isinstance(a, str) else str(a.get("name")) for a in _ngff_axes(ms)]


def kind(path: str) -> str:
  """'plate', 'well', 'image' (OME-Zarr multiscales) or 'array' (a plain zarr array)."""
  node = _open(path)
  if isinstance(node, zarr.Array):
    return "array"
  attrs = _attributes(node)
  for k in ("plate", "well", "multiscales"):
    if k in attrs:
      return "image" if k == "multiscales" else k
  raise N2VError(f"{path}: a zarr group without OME-Zarr image, well or plate metadata")


def well_fields(path: str) -> list[str]:
  """The field paths of a well (relative to it), in metadata order."""
  well = _attributes(_open(path)).get("well") or {}
  return [str(image["path"]) for image in well.get("images") or []]


def plate_wells(path: str) -> list[str]:
  plate = _attributes(_open(path)).get("plate") or {}
  return [str(w["path"]) for w in plate.get("wells") or []]


def plate_fields(path: str) -> list[str]:
  """Every field of a plate as 'row/column/field' (relative to the plate), in order."""
  for w in plate_wells(path):
    if not is_zarr(os.path.join(path, w)):
      raise NotFoundError(f"{os.path.join(path, w)}: well {w} is listed in the plate's "
                          "metadata but is not there (an incomplete copy?)")
  return [f"{w}/{f}" for w in plate_wells(path) for f in well_fields(os.path.join(path, w))]


def image_paths(path: str) -> list[str]:
  """The images at path: a plate's or well's fields, else the path itself."""
  k = kind(path)
  if k == "plate":
    names = plate_fields(path)
  elif k == "well":
    names = well_fields(path)
  else:
    return [path]
  if not names:
    raise N2VError(f"{path}: a {k} without fields")
  return [os.path.join(path, n) for n in names]


# ----------------------------------------------------------------------------- blocks


def block_grid(shape: tuple[int, ...], axes: str, write_chunks: tuple[int, ...],
               budget: int = BLOCK_VOXELS) -> tuple[list[int], list[int]]:
  """(block shape, blocks per axis): blocks of whole write chunks (shards), one chunk deep
  along sample axes (S, T), every channel, and along the spatial axes as many chunks as
  keep a block within `budget` voxels (the smallest edge grown first)."""
  block = [c if a in "STZYX" else n for a, n, c in zip(axes, shape, write_chunks)]
  block = [min(b, n) for b, n in zip(block, shape)]
  spatial = [i for i, a in enumerate(axes) if a in "ZYX"]
  while True:
    growable = [i for i in spatial if block[i] < shape[i]]
    if not growable:
      break
    i = min(growable, key=lambda j: block[j])
    trial = list(block)
    trial[i] = min(shape[i], block[i] + write_chunks[i])
    if math.prod(trial) > budget:
      break
    block = trial
  return block, [-(-n // b) for n, b in zip(shape, block)]


def level_factors(shapes: list[tuple[int, ...]]) -> list[list[int]]:
  """Per level k > 0, the integer factor per axis from level k - 1 to level k (1 where the
  size is kept); a pyramid whose levels are not such is refused."""
  out = []
  for k in range(1, len(shapes)):
    prev, this = shapes[k - 1], shapes[k]
    f = [max(1, round(p / t)) if t else 0 for p, t in zip(prev, this)]
    if any(not t or t not in (p // g, -(-p // g)) for p, t, g in zip(prev, this, f)):
      raise N2VError(f"level {k} of shape {tuple(this)} is not level {k - 1} {tuple(prev)} "
                     "downsampled by integer factors")
    out.append(f)
  return out


def downsample(region: np.ndarray, factors: list[int], method: str) -> np.ndarray:
  """The next level's pixels of a region whose start is on the factor grid: each the mean of
  its `factors` window (cut where the region ends), or its first pixel ('nearest')."""
  if method == "nearest":
    return region[tuple(slice(None, None, f) for f in factors)]
  out = np.asarray(region, np.float64)
  for axis, f in enumerate(factors):
    if f > 1:
      n = out.shape[axis]
      starts = np.arange(0, n, f)
      out = np.add.reduceat(out, starts, axis=axis) / np.diff(np.append(starts, n)).reshape(
          [-1 if a == axis else 1 for a in range(out.ndim)])
  return out


def block_slices(index: int, shape: tuple[int, ...], block: list[int],
                 counts: list[int]) -> tuple[slice, ...]:
  corner = np.unravel_index(index, counts)
  return tuple(slice(int(c) * b, min(n, (int(c) + 1) * b))
               for c, b, n in zip(corner, block, shape))


class BlockLog:
  """The finished blocks of an output image: a JSON header (the plan: shape, dtype, block
  shape), then one line per block, appended and fsynced after the block's chunks are
  stored. A listed block is complete; a torn last line (a killed run) is not counted."""

  def __init__(self, image_path: str):
    self.path = os.path.join(image_path, PROGRESS_FILE)

  def exists(self) -> bool:
    return os.path.exists(self.path)

  def read(self) -> tuple[dict, set[int]]:
    """(header, finished block indices); ValueError if this is not such a log."""
    try:
      with open(self.path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
      raise N2VError(f"{os.path.dirname(self.path)}: not an n2v_jax output (no "
                     f"{PROGRESS_FILE})") from None
    first, _, rest = text.partition("\n")
    try:
      header = json.loads(first)
    except ValueError:
      header = None
    if not isinstance(header, dict) or header.get("format") != PROGRESS_FORMAT:
      raise N2VError(f"{self.path}: unreadable progress record (header {first[:80]!r})")
    lines = rest.split("\n")[:-1]  # the part after the last newline is torn or empty
    return header, {int(l) for l in lines if l.strip().isdigit()}

  def start(self, header: dict) -> None:
    """A new log with only the header (no block finished), replacing any old one."""
    files.write_text_atomic(self.path, json.dumps({"format": PROGRESS_FORMAT, **header}) + "\n")

  def add(self, index: int) -> None:
    try:
      fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
      try:
        os.write(fd, f"{index}\n".encode())
        os.fsync(fd)
      finally:
        os.close(fd)
    except OSError as e:
      raise files.write_error(self.path, e) from None


# ----------------------------------------------------------------------------- writing


def _image_attributes(like: ZarrImage, extra: dict) -> dict:
  """The output's group attributes: the input's axes, levels and their transforms, omero;
  the downsampling the output's pyramid was made with."""
  ms = {k: v for k, v in like.multiscale.items() if k not in ("datasets", "type", "metadata")}
  ms["datasets"] = [dict(d) for d in like.multiscale["datasets"]]  # paths and scales
  if len(ms["datasets"]) > 1:
    ms["type"] = like.downsampling
    ms["metadata"] = {"method": "n2v_jax.io.omezarr.downsample",
                      "kwargs": {"method": like.downsampling}}
  ome = {"multiscales": [ms]}
  if like.omero is not None:
    ome["omero"] = like.omero
  if like.zarr_format == 2:  # NGFF <= 0.4: the version in the multiscale
    ms["version"] = like.version
    return {**ome, "n2v": extra}
  ms.pop("version", None)  # zarr v3 (NGFF >= 0.5): the version is the 'ome' namespace's
  return {"ome": {"version": like.version, **ome}, "n2v": extra}


def _create_array(where: Any, name: str | None, like: ZarrImage, dtype: np.dtype,
                  attributes: dict | None = None, src: Any = None) -> Any:
  """An empty array shaped, chunked and sharded like `src` (default: like's level 0)."""
  src = like.array if src is None else src
  kwargs: dict[str, Any] = dict(shape=tuple(src.shape), dtype=dtype, chunks=src.chunks,
                                fill_value=0, attributes=attributes)
  if like.zarr_format == 3:
    kwargs.update(shards=getattr(src, "shards", None),
                  chunk_key_encoding=src.metadata.chunk_key_encoding,
                  dimension_names=src.metadata.dimension_names)
  else:
    kwargs["chunk_key_encoding"] = {"name": "v2",
                                    "separator": src.metadata.dimension_separator}
  if name is None:  # a plain array: `where` is its path
    return zarr.create_array(store=where, zarr_format=like.zarr_format, **kwargs)
  return where.create_array(name=name, **kwargs)


def _build_image(folder: str, like: ZarrImage, dtype: np.dtype, extra: dict,
                 header: dict) -> None:
  if like.version is None:
    _create_array(folder, None, like, dtype, {"n2v": extra})
  else:
    group = zarr.open_group(folder, mode="w-", zarr_format=like.zarr_format,
                            attributes=_image_attributes(like, extra))
    for d, src in zip(like.multiscale["datasets"], like.levels()):
      _create_array(group, d["path"], like, dtype, src=src)
  BlockLog(folder).start(header)


def _rename_into_place(build, path: str) -> bool:
  """build(tmp) under a hidden temporary name beside path, then renamed to path. False
  (and nothing left behind) if path appeared meanwhile (another process made it)."""
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  if not os.path.isdir(parent):
    raise NotFoundError(f"{parent}: no such folder (for output {path})")
  tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
  try:
    build(tmp)
    os.rename(tmp, path)  # a directory onto a non-empty one fails: never merged
    return True
  except OSError as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if os.path.exists(path) and not os.path.exists(tmp):
      return False
    raise files.write_error(path, e) from None
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def create_image(path: str, like: ZarrImage, dtype: Any, extra: dict, header: dict) -> bool:
  """An empty output image like `like` (see the module doc) with a BlockLog started with
  `header`; False if path exists (then nothing is changed)."""
  if os.path.exists(path):
    return False
  return _rename_into_place(lambda tmp: _build_image(tmp, like, np.dtype(dtype), extra, header),
                            path)


def create_plate(path: str, like: str) -> None:
  """The output plate of plate `like`: its plate and well metadata copied, no fields (each
  field is created by its own job). Several processes may call this at once: one creates
  it, the others find it; an existing folder must be a plate with the same wells."""
  node = _open(like)
  fmt = node.metadata.zarr_format
  wells = plate_wells(like)

  def build(tmp: str) -> None:
    root = zarr.open_group(tmp, mode="w-", zarr_format=fmt, attributes=dict(node.attrs))
    for w in wells:
      src = _open(os.path.join(like, w))
      row, col = w.split("/")
      root.require_group(row).create_group(col, attributes=dict(src.attrs))

  if not os.path.exists(path):
    _rename_into_place(build, path)
  if not is_zarr(path) or kind(path) != "plate" or plate_wells(path) != wells:
    raise N2VError(f"--output {path} exists and is not the output plate of {like} (its "
                   "wells differ); give a new --output")


def remove_output(path: str) -> None:
  """Removes an output image before it is redone (--overwrite); refuses anything that is not
  a zarr store, so a mistyped --output never deletes a folder of other files."""
  if not is_zarr(path):
    raise N2VError(f"--output {path} exists and is not a zarr store; refusing to replace it")
  try:
    shutil.rmtree(path)
  except OSError as e:
    raise files.write_error(path, e) from None
