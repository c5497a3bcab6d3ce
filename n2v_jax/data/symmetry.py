"""The 8 symmetries of the square in the (Y, X) plane: augmentation and test-time
augmentation use these, numbered alike. Arrays end in (..., Y, X, C); `xp` is numpy or
jax.numpy."""

from typing import Any

import numpy as np

COUNT = 8


def apply(x: Any, k: int, xp: Any = np) -> Any:
  """Symmetry k (0..7): k >= 4 flips X first, then k % 4 quarter turns."""
  y_axis, x_axis = x.ndim - 3, x.ndim - 2
  return xp.rot90(xp.flip(x, axis=x_axis) if k >= 4 else x, k % 4, axes=(y_axis, x_axis))


def invert(x: Any, k: int, xp: Any = np) -> Any:
  """The inverse of `apply(., k)`."""
  y_axis, x_axis = x.ndim - 3, x.ndim - 2
  x = xp.rot90(x, -(k % 4), axes=(y_axis, x_axis))
  return xp.flip(x, axis=x_axis) if k >= 4 else x


def square_yx(spatial_shape: Any) -> bool:
  """Whether every symmetry keeps this (..., Y, X) shape (augmentation needs that)."""
  return spatial_shape[-1] == spatial_shape[-2]
