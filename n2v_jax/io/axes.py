"""Axis letters and the model layout (no JAX here).

Letters: S (independent samples; Q and I are read as S), T (time, also treated as
independent samples), C (channels), Z, Y, X, in any order. `to_canonical` turns an array
into the model layout `(S, [Z,] Y, X, C)` and `from_canonical` undoes it exactly.
"""

import math

import numpy as np

from n2v_jax.errors import N2VError

KNOWN_AXES = "STCZYX"
ALIASES = {"Q": "S", "I": "S"}


def validate_axes(axes: str, ndim: int | None = None) -> str:
  """Upper-cased axes with Q/I mapped to S; ValueError naming the problem."""
  if not isinstance(axes, str) or not axes.strip():
    raise N2VError(f"axes {axes!r}: expected a string of axis letters such as 'YX' or 'SCYX'")
  normalized = "".join(ALIASES.get(a, a) for a in axes.strip().upper())
  for letter in normalized:
    if letter not in KNOWN_AXES:
      raise N2VError(f"axes {axes!r}: unknown axis letter {letter!r} "
                     f"(known: S, T, C, Z, Y, X; Q and I are read as S)")
  for letter in dict.fromkeys(normalized):
    if normalized.count(letter) > 1:
      raise N2VError(f"axes {axes!r}: axis {letter!r} appears more than once "
                     "(Q and I count as S)")
  if "Y" not in normalized or "X" not in normalized:
    raise N2VError(f"axes {axes!r}: must contain both Y and X")
  if ndim is not None and len(normalized) != ndim:
    raise N2VError(f"axes {axes!r} have {len(normalized)} letters but the data has {ndim} "
                   "dimensions")
  return normalized


def _canonical_order(axes: str) -> tuple[list[int], list[int], str]:
  """(permutation to S/T..., [Z], Y, X, [C]; indices of the sample axes; spatial axes)."""
  sample_idx = [i for i, a in enumerate(axes) if a in "ST"]
  spatial = "ZYX" if "Z" in axes else "YX"
  perm = sample_idx + [axes.index(a) for a in spatial]
  if "C" in axes:
    perm.append(axes.index("C"))
  return perm, sample_idx, spatial


def to_canonical(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
  """Reorder/reshape to (S, [Z,] Y, X, C), keeping the dtype; returns (array, spatial_axes)."""
  data = np.asarray(data)
  axes = validate_axes(axes, data.ndim)
  perm, sample_idx, spatial = _canonical_order(axes)
  n_samples = math.prod(data.shape[i] for i in sample_idx)
  n_channels = data.shape[axes.index("C")] if "C" in axes else 1
  spatial_shape = tuple(data.shape[axes.index(a)] for a in spatial)
  array = np.transpose(data, perm).reshape((n_samples, *spatial_shape, n_channels))
  return array, spatial


def from_canonical(array_SZYXC: np.ndarray, axes: str, original_shape: tuple) -> np.ndarray:
  """Exact inverse of `to_canonical` for data of `original_shape` with `axes`."""
  array = np.asarray(array_SZYXC)
  original_shape = tuple(int(n) for n in original_shape)
  axes = validate_axes(axes, len(original_shape))
  perm, sample_idx, spatial = _canonical_order(axes)
  expected = (math.prod(original_shape[i] for i in sample_idx),
              *(original_shape[axes.index(a)] for a in spatial),
              original_shape[axes.index("C")] if "C" in axes else 1)
  if array.shape != expected:
    raise N2VError(f"array of shape {array.shape} does not fit axes {axes!r} with original shape "
                   f"{original_shape} (expected canonical shape {expected})")
  transposed = array.reshape(tuple(original_shape[i] for i in perm))
  return np.transpose(transposed, np.argsort(perm))

