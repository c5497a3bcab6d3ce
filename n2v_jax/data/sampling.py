"""Where each training patch is cut: views of the samples, the host sampler of streaming
runs and the device sampler of in-memory runs.

Both draw images in proportion to their patch positions, a uniform corner and one of the 8
symmetries (augmentation). The host sampler (`PatchSampler`) reads only the patches of a
step from the files; the batch of step s depends only on (seed, s) and the files, so a
resumed run sees the same patches. The device sampler (`sample_batch`) cuts them from the
padded in-memory images inside the jitted step.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from n2v_jax.data import normalizer as normalizer_lib, sources, symmetry
from n2v_jax.errors import N2VError

BATCH_STREAM, STATS_STREAM = 0, 1  # rng streams: default_rng([seed, stream, ...])


@dataclasses.dataclass
class Views:
  """Regions of samples: e.g. the training part of each (all of it, or the top rows)."""
  source: sources.Source
  sample: np.ndarray  # (n,) index into source
  origin: np.ndarray  # (n, ndim)
  size: np.ndarray  # (n, ndim)

  @classmethod
  def whole(cls, source: sources.Source) -> "Views":
    return cls(source, np.arange(len(source)), np.zeros_like(source.sizes), source.sizes.copy())

  def __len__(self) -> int:
    return len(self.sample)

  def subset(self, keep: np.ndarray) -> "Views":
    return Views(self.source, self.sample[keep], self.origin[keep], self.size[keep])

  def read(self, v: int, corner: Any, shape: Any) -> np.ndarray:
    return self.source.read(int(self.sample[v]), self.origin[v] + np.asarray(corner), shape)

  def read_whole(self, v: int) -> np.ndarray:
    return self.read(v, np.zeros(self.size.shape[1], int), self.size[v])

  def files(self, v: np.ndarray) -> np.ndarray:
    return self.source.file_idx[self.sample[v]]


def draw_patches(rng: np.random.Generator, cdf: np.ndarray, views: Views,
                 patch: tuple[int, ...], n: int,
                 per_view: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """n (view, corner) pairs; views in proportion to their patch positions (cdf), each view
  drawn giving `per_view` patches (consecutive)."""
  u = rng.random(-(-n // per_view))
  v = np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)
  v = np.repeat(v, per_view)[:n]
  return v, rng.integers(0, views.size[v] - np.asarray(patch) + 1)


def positions_cdf(views: Views, patch: tuple[int, ...]) -> np.ndarray:
  return np.cumsum(np.prod((views.size - np.asarray(patch) + 1).astype(np.float64), axis=1))


def check_patches_per_image(per_image: Any, batch_size: int) -> int:
  """data.stream_patches_per_image: from 1 to the batch size."""
  if not isinstance(per_image, int) or not 1 <= per_image <= batch_size:
    raise N2VError(f"config.data.stream_patches_per_image={per_image!r}: expected an integer "
                   f"from 1 to train.batch_size ({batch_size})")
  return per_image


class PatchSampler:
  """Host-side: the batch for step s from (seed, s) alone: a resumed run draws the same."""

  def __init__(self, views: Views, patch: tuple[int, ...], batch_size: int, augment: bool,
               seed: int, normalize: normalizer_lib.Normalizer, per_image: int = 1):
    self.views, self.patch, self.batch_size, self.seed = views, tuple(patch), batch_size, seed
    self.augment = augment and symmetry.square_yx(patch)  # as on device
    self.normalize = normalize
    self.per_image = check_patches_per_image(per_image, batch_size)
    self._cdf = positions_cdf(views, self.patch)

  def draw(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(view index (B,), corner in the view (B, ndim), symmetry 0..7 (B,)) for `step`."""
    rng = np.random.default_rng([self.seed, BATCH_STREAM, step])
    v, corners = draw_patches(rng, self._cdf, self.views, self.patch, self.batch_size,
                              self.per_image)
    return v, corners, rng.integers(0, symmetry.COUNT, self.batch_size)

  def batch(self, step: int) -> np.ndarray:
    """(B, *patch, C) float32, normalized; `step` = completed steps before it (state.step)."""
    v, corners, sym = self.draw(step)
    files = self.views.files(v)
    for f in np.unique(files):
      self.views.source.store.check_unchanged(int(f))
    out = np.empty((self.batch_size, *self.patch, self.views.source.channels), np.float32)
    for b in np.argsort(files, kind="stable"):
      x = self.normalize(self.views.read(v[b], corners[b], self.patch))
      out[b] = symmetry.apply(x, int(sym[b])) if self.augment else x
    self.views.source.release(self.views.sample[v])
    return out


def sample_patch(key: jax.Array, images_NSC: jax.Array, sizes: jax.Array,
                 patch: tuple[int, ...], augment: bool) -> jax.Array:
  """Device-side: one random patch (*patch, C); images chosen in proportion to their patch
  positions, as PatchSampler chooses them."""
  k_img, k_pos, k_aug = jax.random.split(key, 3)
  positions = jnp.prod(sizes - jnp.asarray(patch) + 1, axis=1).astype(jnp.float32)
  idx = jax.random.choice(k_img, sizes.shape[0], p=positions / positions.sum())
  corner = jax.random.randint(k_pos, (len(patch),), 0, sizes[idx] - jnp.asarray(patch) + 1)
  start = (idx, *corner, 0)
  out = jax.lax.dynamic_slice(images_NSC, start, (1, *patch, images_NSC.shape[-1]))[0]
  if augment and symmetry.square_yx(patch):
    variants = jnp.stack([symmetry.apply(out, k, jnp) for k in range(symmetry.COUNT)])
    out = variants[jax.random.randint(k_aug, (), 0, symmetry.COUNT)]
  return out


def sample_batch(key: jax.Array, images_NSC: jax.Array, sizes: jax.Array,
                 patch: tuple[int, ...], batch_size: int, augment: bool) -> jax.Array:
  keys = jax.random.split(key, batch_size)
  return jax.vmap(sample_patch, in_axes=(0, None, None, None, None))(
      keys, images_NSC, sizes, patch, augment)
