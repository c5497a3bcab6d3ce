"""U-Net for Noise2Void / N2V2 (2D or 3D, channels-last), in flax.linen.

Architecture (CSBDeep / CAREamics style):
  encoder level l (l = 0..depth-1): 2 x [conv k^n 'SAME' -> BatchNorm? -> ReLU] with
    features * 2**l features, then 2x down-sampling: max-pool 2^n (or MaxBlurPool for N2V2);
  bottom (level depth): the same conv block with features * 2**depth features;
  decoder level l (depth-1..0): nearest-neighbour up-sampling x2, concatenation with the
    encoder skip of level l (N2V2: no skip at level 0), conv block with features * 2**l;
  final 1^n conv to out_channels, linear; optionally + input (residual, in float32).

Up-sampling is nearest-neighbour followed by the convs of the block (as CSBDeep's
UpSampling): cheaper than bilinear or transposed convs and keeps the receptive field
easy to bound exactly (see `receptive_field_radius`).

`independent_channels`: every conv is grouped with feature_group_count = C_in and
per-group feature counts equal to the joint setting's, and skip concatenations interleave
per group, so output channel c depends on input channel c only.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def divisor(depth: int) -> int:
  """Spatial sizes fed to a U-Net of this depth must be multiples of this."""
  return 2**depth


def _receptive_field_extent(depth: int, kernel_size: int, n2v2: bool) -> int:
  """Exact max distance (pixels) from an output pixel to an input pixel it depends on.

  Track, per level l (pixel footprint 2**l input pixels), how far the dependence extends
  beyond a pixel's own footprint: each 'SAME' conv adds r * 2**l (r = k // 2) on each
  side; max-pool adds nothing (footprint union); MaxBlurPool (max window 2 stride 1, then
  3-tap blur stride 2) adds 2**l on each side; nearest up-sampling adds 2**l on one side
  (the parent's footprint is twice the child's). Two convs per block.
  """
  r = kernel_size // 2
  conv_levels = (2 ** (depth + 1) - 1) + (2**depth - 1)  # sum 2**l: encoder+bottom, decoder
  shifts = 2**depth - 1  # sum 2**l over l < depth
  return 2 * r * conv_levels + shifts * (2 if n2v2 else 1)


def receptive_field_radius(model_cfg: Any) -> int:
  """Halo (pixels, each side) so that tiled prediction equals whole-image prediction.

  The exact extent of dependence rounded up to a multiple of `divisor(depth)`, so that a
  tile starting `radius` before a divisor-aligned core is itself aligned to the pooling
  grid (tiles must start at multiples of the divisor in the full image for equality).
  """
  depth, kernel_size = int(model_cfg.depth), int(model_cfg.kernel_size)
  extent = _receptive_field_extent(depth, kernel_size, bool(model_cfg.n2v2))
  div = divisor(depth)
  return int(math.ceil(extent / div) * div)


def _binomial_kernel(ndim: int) -> np.ndarray:
  """Separable [1, 2, 1] binomial blur, normalized, shape (3,) * ndim."""
  k1 = np.array([1.0, 2.0, 1.0])
  k = k1
  for _ in range(ndim - 1):
    k = np.multiply.outer(k, k1)
  return k / k.sum()


def max_blur_pool(x: jax.Array) -> jax.Array:
  """N2V2 / CAREamics MaxBlurPool on (B, *spatial, C): max-pool window 2 stride 1
  (no padding), then a depthwise binomial [1,2,1] blur with zero padding 1 and stride 2.
  Halves every (even) spatial size."""
  ndim = x.ndim - 2
  x = nn.max_pool(x, (2,) * ndim, strides=(1,) * ndim, padding="VALID")
  channels = x.shape[-1]
  kernel = jnp.asarray(_binomial_kernel(ndim), dtype=x.dtype)
  kernel = jnp.broadcast_to(kernel[..., None, None], (3,) * ndim + (1, channels))
  spatial = "DHW"[-ndim:]
  dn = jax.lax.conv_dimension_numbers(
      x.shape, kernel.shape, ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"))
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(2,) * ndim, padding=[(1, 1)] * ndim,
      dimension_numbers=dn, feature_group_count=channels)


def _upsample_nearest(x: jax.Array) -> jax.Array:
  for axis in range(1, x.ndim - 1):
    x = jnp.repeat(x, 2, axis=axis)
  return x


def _concat_groups(a: jax.Array, b: jax.Array, groups: int) -> jax.Array:
  """Concatenate features so that group g of the result holds group g of a then of b
  (contiguous groups, as feature_group_count expects)."""
  if groups == 1:
    return jnp.concatenate([a, b], axis=-1)
  lead = a.shape[:-1]
  a = a.reshape(*lead, groups, a.shape[-1] // groups)
  b = b.reshape(*lead, groups, b.shape[-1] // groups)
  return jnp.concatenate([a, b], axis=-1).reshape(*lead, -1)


class UNet(nn.Module):
  """U-Net on (B, *spatial, C_in) channels-last input; returns (B, *spatial, out_channels)
  float32. `ndim=None` infers 2D/3D from the input rank."""

  ndim: int | None = 2
  out_channels: int = 1
  depth: int = 2
  features: int = 32
  kernel_size: int = 3
  batch_norm: bool = True
  residual: bool = False
  n2v2: bool = False
  independent_channels: bool = False
  dtype: Any = jnp.float32

  def _block(self, x: jax.Array, features: int, groups: int, name: str, train: bool):
    # He init suits ReLU (fan-in is per group for grouped convs); BatchNorm momentum 0.9
    # (PyTorch/CAREamics default) so running stats settle within short N2V trainings.
    nd = x.ndim - 2
    for i in range(2):
      x = nn.Conv(features * groups, (self.kernel_size,) * nd, padding="SAME",
                  feature_group_count=groups, dtype=self.dtype, param_dtype=jnp.float32,
                  kernel_init=nn.initializers.he_normal(), name=f"{name}_conv{i}")(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, param_dtype=jnp.float32,
                         name=f"{name}_bn{i}")(x)
      x = nn.relu(x)
    return x

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    nd = x.ndim - 2 if self.ndim is None else self.ndim
    if nd not in (2, 3) or x.ndim != nd + 2:
      raise ValueError(f"UNet(ndim={self.ndim}) expects input (B, *spatial, C) with 2 or 3 "
                       f"spatial axes; got shape {tuple(x.shape)}")
    if self.kernel_size % 2 != 1:
      raise ValueError(f"UNet kernel_size must be odd; got {self.kernel_size}")
    if self.depth < 0:
      raise ValueError(f"UNet depth must be >= 0; got {self.depth}")
    spatial = tuple(x.shape[1:-1])
    div = divisor(self.depth)
    if any(s % div for s in spatial):
      raise ValueError(f"UNet(depth={self.depth}) needs spatial sizes divisible by {div}; "
                       f"got spatial shape {spatial} (input {tuple(x.shape)}); pad the input")
    in_channels = x.shape[-1]
    if self.residual and self.out_channels != in_channels:
      raise ValueError(f"UNet residual=True needs out_channels == input channels; got "
                       f"out_channels={self.out_channels}, input channels={in_channels}")
    groups = in_channels if self.independent_channels else 1
    if self.out_channels % groups:
      raise ValueError(f"UNet independent_channels needs out_channels to be a multiple of "
                       f"input channels {in_channels}; got {self.out_channels}")

    x_in = x.astype(jnp.float32)
    h = x.astype(self.dtype)
    skips = []
    for level in range(self.depth):
      h = self._block(h, self.features * 2**level, groups, f"enc{level}", train)
      skips.append(h)
      if self.n2v2:
        h = max_blur_pool(h)
      else:
        h = nn.max_pool(h, (2,) * nd, strides=(2,) * nd, padding="VALID")
    h = self._block(h, self.features * 2**self.depth, groups, "bottom", train)
    for level in reversed(range(self.depth)):
      h = _upsample_nearest(h)
      if not (self.n2v2 and level == 0):  # N2V2 drops the top-level skip only
        h = _concat_groups(skips[level], h, groups)
      h = self._block(h, self.features * 2**level, groups, f"dec{level}", train)
    out = nn.Conv(self.out_channels, (1,) * nd, feature_group_count=groups,
                  dtype=self.dtype, param_dtype=jnp.float32, name="final")(h)
    out = out.astype(jnp.float32)
    if self.residual:
      out = out + x_in
    return out


def make_model(model_cfg: Any, in_channels: int, ndim: int | None = None) -> UNet:
  """Build the U-Net from a config with fields depth, features, kernel_size, batch_norm,
  residual, n2v2, independent_channels, dtype ('float32' | 'bfloat16'); out = in channels.
  `ndim` (2 or 3) may also come from `model_cfg.ndim`; if neither is given the model
  infers it from the input rank."""
  dtype_name = str(model_cfg.dtype)
  if dtype_name not in _DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}; got {dtype_name!r}")
  if ndim is None:
    ndim = getattr(model_cfg, "ndim", None)
  if ndim is not None and int(ndim) not in (2, 3):
    raise ValueError(f"model ndim must be 2 or 3; got {ndim}")
  return UNet(
      ndim=None if ndim is None else int(ndim),
      out_channels=int(in_channels),
      depth=int(model_cfg.depth),
      features=int(model_cfg.features),
      kernel_size=int(model_cfg.kernel_size),
      batch_norm=bool(model_cfg.batch_norm),
      residual=bool(model_cfg.residual),
      n2v2=bool(model_cfg.n2v2),
      independent_channels=bool(model_cfg.independent_channels),
      dtype=_DTYPES[dtype_name],
  )
