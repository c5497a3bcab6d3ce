"""The bad-input corpus: files a user may hand to n2v_jax that it must refuse, made by code
(never committed binaries). `make(kind, folder)` writes one and returns its path."""

import io
import json
import os
import shutil

import numpy as np
import tifffile
import zarr

from tests.helpers import noisy_stack, write_tiff
from tests.omezarr_files import NAMES, write_ome, write_plate

SHAPE = (48, 48)


def _tiff(folder, name, data, axes="YX", **kwargs):
  path = os.path.join(folder, name)
  tifffile.imwrite(path, data, photometric=kwargs.pop("photometric", "minisblack"),
                   metadata={"axes": axes}, **kwargs)
  return path


def _with_value(value):
  def make(folder):
    data = noisy_stack(0, SHAPE)
    data[5, 7] = value
    return write_tiff(os.path.join(folder, f"{value}.tif"), data, "YX")
  return make


def _truncated(folder):
  whole = write_tiff(os.path.join(folder, "whole.tif"), noisy_stack(0, (256, 256)), "YX")
  data = open(whole, "rb").read()
  os.remove(whole)
  path = os.path.join(folder, "truncated.tif")
  open(path, "wb").write(data[:len(data) // 2])
  return path


def _bytes(folder, name, data):
  path = os.path.join(folder, name)
  open(path, "wb").write(data)
  return path


def _png(folder):
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(noisy_stack(0, SHAPE, np.uint8)).save(buffer, format="PNG")
  path = os.path.join(folder, "photo.tif")
  open(path, "wb").write(buffer.getvalue())
  return path


def _rgb(folder):
  rgb = np.stack([noisy_stack(i, SHAPE, np.uint8) for i in range(3)], axis=-1)
  path = os.path.join(folder, "rgb.tif")
  tifffile.imwrite(path, rgb, photometric="rgb")
  return path


def _huge(folder):
  """A header that declares 200,000 x 200,000 float32 pixels (149 GiB) in a sparse file of a
  few KiB: readable, too large for memory."""
  path = os.path.join(folder, "huge.tif")
  tifffile.imwrite(path, shape=(200_000, 200_000), dtype="float32", photometric="minisblack")
  return path


def _empty(folder):
  path = os.path.join(folder, "empty.tif")
  open(path, "wb").close()
  return path


def _folder_as_file(folder):
  path = os.path.join(folder, "folder.tif")
  os.makedirs(path)
  return path


def _npy(dtype_name, data):
  def make(folder):
    path = os.path.join(folder, f"{dtype_name}.npy")
    np.save(path, data, allow_pickle=True)
    return path
  return make


def _random_zarr(folder):
  path = os.path.join(folder, "random.ome.zarr")
  os.makedirs(path)
  rng = np.random.default_rng(0)
  for name in ("zarr.json", "0"):
    open(os.path.join(path, name), "wb").write(rng.bytes(512))
  return path


def _zarr_array(name, data):
  def make(folder):
    path = os.path.join(folder, name)
    array = zarr.create_array(path, shape=data.shape, dtype=data.dtype, chunks=data.shape)
    array[...] = data
    return path
  return make


def _ome_image(folder, name="field.ome.zarr", names=NAMES):
  data = np.stack([noisy_stack(i, SHAPE, np.uint16) for i in range(3)])
  return write_ome(os.path.join(folder, name), data, "CYX", (1, 16, 16), names=names)


def _ome_nan(folder):
  data = noisy_stack(0, (1, *SHAPE))
  data[0, 40, 30] = np.nan
  return write_ome(os.path.join(folder, "nan.ome.zarr"), data, "CYX", (1, 16, 16),
                   names=["DNA"])


def _ome_unknown_axis(folder):
  """An OME-Zarr image whose channel axis is named 'w' with no type."""
  path = _ome_image(folder, "unknown_axis.ome.zarr")
  meta_path = os.path.join(path, "zarr.json")
  meta = json.load(open(meta_path))
  meta["attributes"]["ome"]["multiscales"][0]["axes"][0] = {"name": "w"}
  json.dump(meta, open(meta_path, "w"))
  return path


def _plate_nan_field(folder):
  """A plate of two 1-channel fields, the second with a NaN pixel."""
  bad = noisy_stack(1, (1, *SHAPE))
  bad[0, 5, 7] = np.nan
  fields = {"A/1/0": noisy_stack(0, (1, *SHAPE)), "A/2/0": bad}
  return write_plate(os.path.join(folder, "plate.ome.zarr"), fields)


def _plate_missing_well(folder):
  fields = {f"{w}/0": np.stack([noisy_stack(i, SHAPE, np.uint16) for i in range(3)])
            for w in ("A/1", "A/2")}
  path = write_plate(os.path.join(folder, "plate.ome.zarr"), fields)
  shutil.rmtree(os.path.join(path, "A", "2"))
  return path


MAKERS = {
    "missing": lambda folder: os.path.join(folder, "missing.tif"),
    "nan": _with_value(np.nan),
    "inf": _with_value(np.inf),
    "truncated": _truncated,
    # tests/test_cluster.py's first case: a TIFF signature, then garbage (tifffile used to
    # warn on a second line)
    "bad_header": lambda folder: _bytes(folder, "header.tif", b"II*" + bytes(1) + b"x" * 500),
    "png_named_tif": _png,
    "rgb": _rgb,
    "complex": lambda folder: _tiff(folder, "complex.tif",
                                    noisy_stack(0, SHAPE).astype(np.complex64) * (1 + 1j)),
    "huge": _huge,
    "empty": _empty,
    "folder_as_file": _folder_as_file,
    "bool_npy": _npy("bool", noisy_stack(0, SHAPE) > 500),
    "string_npy": _npy("string", np.array([["a", "b"], ["c", "d"]] * 24)),
    "object_npy": _npy("object", np.array([[None, 1]] * 48, dtype=object)),
    "random_zarr": _random_zarr,
    "complex_zarr": _zarr_array("complex.zarr",
                                noisy_stack(0, SHAPE).astype(np.complex64)),
    "ome_unknown_axis": _ome_unknown_axis,
    "ome_nan": _ome_nan,
    "ome_other_channels": lambda folder: _ome_image(folder, "other.ome.zarr",
                                                    names=["AGP", "DNA", "RNA"]),
    "plate_missing_well": _plate_missing_well,
    "plate_nan_field": _plate_nan_field,
    # not bad: an input for the cases where only the output is wrong
    "ome_good": lambda folder: write_ome(os.path.join(folder, "good.ome.zarr"),
                                         noisy_stack(0, (1, *SHAPE), np.uint16), "CYX",
                                         (1, 16, 16), names=["DNA"]),
}


def make(kind: str, folder: str) -> str:
  os.makedirs(folder, exist_ok=True)
  return MAKERS[kind](str(folder))
