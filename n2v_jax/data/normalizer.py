"""What happens to a pixel's value between the file and the network, and back.

`Normalizer` is the one place: the intensity transform (`data.transform`), then the
per-channel statistics (`data.normalization`), forward for training, validation and
prediction, inverse for prediction's output.

Photon-counting data (fluorescence, Cell Painting) has noise that grows with intensity:
bright nuclei carry noise of hundreds of counts, the background ~10. On the raw scale the
MSE loss is then dominated by the bright structures and the background, where the noise
is most visible, hardly counts. The Anscombe transform 2*sqrt(x + 3/8) makes Poisson noise
roughly unit-variance at every intensity, so every region weighs alike in the loss.
The model learns and predicts in the transformed space; prediction maps back.
"""

import dataclasses

import numpy as np

from n2v_jax import reporter
from n2v_jax.choices import NORMALIZATIONS, TRANSFORMS
from n2v_jax.errors import N2VError


def check(kind: str) -> str:
  if kind not in TRANSFORMS:
    raise N2VError(f"data.transform={kind!r}: expected one of {', '.join(TRANSFORMS)}")
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
      reporter.warning(f"data.transform=anscombe expects counts >= 0; {negative} negative "
                       "pixel(s) are treated as 0 (use data.transform=none for signed data)")


def statistics(images: list[np.ndarray], kind: str,
               percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel (offset, scale) of transformed (*, C) images: mean/std, or the low
  percentile and the width up to the high one."""
  flat = np.concatenate([im.reshape(-1, im.shape[-1]) for im in images]).astype(np.float64)
  if kind == "meanstd":
    mean, std = flat.mean(0), flat.std(0)
  elif kind == "percentile":
    lo, hi = np.percentile(flat, percentiles, axis=0)
    mean, std = lo, hi - lo
  else:
    raise N2VError(f"data.normalization={kind!r}: expected one of {', '.join(NORMALIZATIONS)}")
  flat_channels = std <= 1e-8 * (np.abs(mean) + 1.0)
  if flat_channels.any():
    reporter.warning(f"channel(s) {np.flatnonzero(flat_channels).tolist()} are constant in "
                     "the training data; normalizing them by offset only")
    std = np.where(flat_channels, 1.0, std)
  return mean, std


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """x_norm = (forward(x, transform) - mean) / std, per channel (the last axis)."""
  mean: np.ndarray  # (C,) float64
  std: np.ndarray  # (C,) float64
  transform: str = "none"

  @classmethod
  def fit(cls, images: list[np.ndarray], kind: str, percentiles: tuple[float, float],
          transform: str) -> "Normalizer":
    """From (a sample of) the raw training pixels."""
    warn_if_negative(images, transform)
    mean, std = statistics([forward(im, transform) for im in images], kind, percentiles)
    return cls(mean, std, transform)

  def __call__(self, x: np.ndarray) -> np.ndarray:
    """Patches and training images: float64 arithmetic, float32 result."""
    return ((forward(x, self.transform) - self.mean) / self.std).astype(np.float32)

  def image(self, x: np.ndarray) -> np.ndarray:
    """A whole image to predict: float32 throughout (no image-sized float64 copy)."""
    x = np.array(x, dtype=np.float32)
    if self.transform != "none":
      x = forward(x, self.transform)
    x -= self.mean.astype(np.float32)
    x /= self.std.astype(np.float32)
    return x

  def inverse(self, y: np.ndarray) -> np.ndarray:
    """Network output (float32, modified in place) -> data units."""
    y *= self.std.astype(np.float32)
    y += self.mean.astype(np.float32)
    return inverse(y, self.transform)
