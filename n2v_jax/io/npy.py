""".npy files: memory-mapped plain arrays, never unpickled (no JAX here)."""

import numpy as np

from n2v_jax.errors import N2VError
from n2v_jax.io import pixels
from n2v_jax.io.axes import validate_axes


def open_npy(path: str, axes: str | None) -> tuple[np.ndarray, str]:
  """A .npy file memory-mapped (plain arrays only: never unpickled), with its axes."""
  if not axes:
    raise N2VError(f"{path}: set data.axes (e.g. 'SYX', 'CYX') for a .npy file")
  try:
    data = np.load(path, allow_pickle=False, mmap_mode="r")
  except ValueError as e:
    raise N2VError(f"{path}: not a plain NumPy array file ({e})") from None
  pixels.check_dtype(path, data.dtype)
  try:
    return data, validate_axes(axes, data.ndim)
  except N2VError as e:
    raise N2VError(f"{path}: {e}") from None

