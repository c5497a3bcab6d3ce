"""Intensity transforms applied before normalization (`data.transform`), and their inverses.

Photon-counting data (fluorescence, Cell Painting) has noise that grows with intensity:
bright nuclei carry noise of hundreds of counts, the background ~10. On the raw scale the
MSE loss is then dominated by the bright structures and the background, where the noise
is most visible, hardly counts. The Anscombe transform 2*sqrt(x + 3/8) makes Poisson noise
roughly unit-variance at every intensity, so every region weighs alike in the loss.
The model learns and predicts in the transformed space; prediction maps back.
"""

import logging

import numpy as np

TRANSFORMS = ("none", "anscombe")


def check(kind: str) -> str:
  if kind not in TRANSFORMS:
    raise ValueError(f"data.transform={kind!r}: expected one of {', '.join(TRANSFORMS)}")
  return kind


def forward(x: np.ndarray, kind: str) -> np.ndarray:
  """Data units -> the space the model is trained in (float32; the input is not modified)."""
  if check(kind) == "none":
    return x
  x = np.asarray(x, np.float32)
  # Counts are >= 0; negative values (e.g. background-subtracted data) are clipped, since
  # a square root has no meaning for them.
  return 2.0 * np.sqrt(np.maximum(x, 0.0) + np.float32(0.375))


def inverse(y: np.ndarray, kind: str) -> np.ndarray:
  """The algebraic inverse of `forward` (its bias, ~1/4 count, is negligible above ~20
  counts); in place where y is a float32 array."""
  if check(kind) == "none":
    return y
  y = np.asarray(y, np.float32)
  np.maximum(y, 0.0, out=y)
  y *= 0.5
  np.square(y, out=y)
  y -= np.float32(0.375)
  return y


def warn_if_negative(images: list[np.ndarray], kind: str) -> None:
  if kind == "anscombe":
    negative = sum(int((im < 0).sum()) for im in images)
    if negative:
      logging.warning("data.transform=anscombe expects counts >= 0; %d negative pixel(s) are "
                      "treated as 0 (use data.transform=none for signed data)", negative)
