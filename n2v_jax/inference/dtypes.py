"""The output's data type: float32 (default) or the input's own (predict --dtype input).

For integer inputs the stored value is `round((denoised - offset) / scale)` clipped to the
dtype's range (default scale 1, offset 0: the same intensity units as the input), and
`denoised ~= stored * scale + offset`; scale and offset are written to the file
(`n2v_scale`, `n2v_offset`, and for ImageJ files the calibration `c0`/`c1`), and
`read_denoised` applies them.
"""

import os

import numpy as np
import tifffile

from n2v_jax.errors import N2VError
from n2v_jax.inference.options import PredictOptions


def to_output_dtype(denoised: np.ndarray, in_dtype: np.dtype,
                    options: PredictOptions) -> tuple[np.ndarray, dict, list[str]]:
  """(array to write, extra metadata, notes) for options.dtype (and int_scale, int_offset)."""
  in_dtype = np.dtype(in_dtype)
  if options.dtype == "float32":
    return denoised.astype(np.float32), {}, []
  if in_dtype.kind == "f":
    return denoised.astype(in_dtype), {}, []
  if in_dtype.kind not in "ui":
    raise N2VError(f"input dtype {in_dtype} cannot be written back; use --dtype float32")
  scale, offset = options.int_scale, options.int_offset
  info = np.iinfo(in_dtype)
  q = np.rint((denoised.astype(np.float64) - offset) / scale)
  low, high = int((q < info.min).sum()), int((q > info.max).sum())
  notes = []
  if low or high:
    notes.append(f"{low + high} pixel(s) clipped to the {in_dtype} range "
                 f"({low} below {info.min}, {high} above {info.max})")
  meta = {"n2v_scale": float(scale), "n2v_offset": float(offset)}
  if scale != 1.0 or offset != 0.0:  # ImageJ calibration: value = c0 + c1 * stored
    meta.update({"cf": 0, "c0": float(offset), "c1": float(scale), "vunit": "denoised"})
  return np.clip(q, info.min, info.max).astype(in_dtype), meta, notes


def output_dtype(in_dtype: np.dtype, options: PredictOptions) -> np.dtype:
  """The type an input of `in_dtype` is written as (N2VError if it cannot be)."""
  return to_output_dtype(np.zeros(1, np.float32), in_dtype, options)[0].dtype


def report_info(input_path: str, options: PredictOptions) -> dict:
  """What a folder's or plate's report records about the run's output."""
  return {"input": os.path.abspath(input_path), "dtype": options.dtype,
          "int_scale": options.int_scale, "int_offset": options.int_offset}


def read_denoised(path: str) -> np.ndarray:
  """An output of `denoise_folder` as float32 data units (undoes the integer scaling)."""
  with tifffile.TiffFile(path) as tif:
    data = tif.asarray()
    meta = dict(tif.imagej_metadata or {})
    if tif.is_shaped and tif.shaped_metadata:
      meta.update(tif.shaped_metadata[0])
  scale, offset = float(meta.get("n2v_scale", 1.0)), float(meta.get("n2v_offset", 0.0))
  return (data.astype(np.float64) * scale + offset).astype(np.float32)
