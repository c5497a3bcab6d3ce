"""U-Net for Noise2Void / N2V2 (2D or 3D, channels-last), in flax.linen.

Architecture (CSBDeep / CAREamics style):
  encoder level l (l = 0..depth-1): 2 x [conv k^n 'SAME' -> BatchNorm? -> ReLU] with
    features * 2**l features, then 2x down-sampling: max-pool 2^n (or MaxBlurPool for N2V2);
  bottom (level depth): convs with features * 2**depth, then features * 2**(depth-1);
  decoder level l (depth-1..0): up-sampling x2, concatenation with the encoder skip of
    level l (N2V2: no skip at level 0; computed by Conv without the copy), convs
    with features * 2**l, then 2**max(l-1, 0);
  final 1^n conv to out_channels, linear; optionally + input (residual, in float32).
Each block's second conv halves the features on the way up, as in CSBDeep's `unet_block`
(the original N2V) and CAREamics' UNet: depth 2 with 32 features has 333,729 parameters
with batch norm, as CAREamics' does.

Up-sampling is nearest-neighbour (CSBDeep's UpSampling) or bilinear with half-pixel
centres (CAREamics' nn.Upsample(mode='bilinear'), align_corners=False); both keep the
receptive field easy to bound exactly (see `receptive_field_radius`).

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

from n2v_jax.choices import MODEL_DTYPES, UPSAMPLINGS
from n2v_jax.errors import N2VError
from n2v_jax.nn import conv_algorithms
from n2v_jax.nn.conv import Conv, batch_chunks_of, chunked_conv, slice_count

_DTYPES = {name: getattr(jnp, name) for name in MODEL_DTYPES}


def divisor(depth: int) -> int:
  """Spatial sizes fed to a U-Net of this depth must be multiples of this."""
  return 2**depth


def _receptive_field_extent(depth: int, kernel_size: int, n2v2: bool,
                            bilinear: bool = False) -> int:
  """Exact max distance (pixels) from an output pixel to an input pixel it depends on.

  Track, per level l (pixel footprint 2**l input pixels), how far the dependence extends
  beyond a pixel's own footprint: each 'SAME' conv adds r * 2**l (r = k // 2) on each
  side; max-pool adds nothing (footprint union); MaxBlurPool (max window 2 stride 1, then
  3-tap blur stride 2) adds 2**l on each side; nearest up-sampling adds 2**l on one side
  (the parent's footprint is twice the child's), bilinear up-sampling at most 2 * 2**l
  (the parent and its nearer neighbour). Two convs per block.
  """
  r = kernel_size // 2
  conv_levels = (2 ** (depth + 1) - 1) + (2**depth - 1)  # sum 2**l: encoder+bottom, decoder
  shifts = 2**depth - 1  # sum 2**l over l < depth
  return 2 * r * conv_levels + shifts * ((2 if n2v2 else 1) + (1 if bilinear else 0))


def receptive_field_radius(model_cfg: Any) -> int:
  """Halo (pixels, each side) so that tiled prediction equals whole-image prediction.

  The exact extent of dependence rounded up to a multiple of `divisor(depth)`, so that a
  tile starting `radius` before a divisor-aligned core is itself aligned to the pooling
  grid (tiles must start at multiples of the divisor in the full image for equality).
  """
  depth, kernel_size = int(model_cfg.depth), int(model_cfg.kernel_size)
  extent = _receptive_field_extent(depth, kernel_size, bool(model_cfg.n2v2),
                                   upsampling_of(model_cfg) == "bilinear")
  div = divisor(depth)
  return int(math.ceil(extent / div) * div)


# Pooling is written with slices instead of nn.max_pool / a depthwise convolution: the
# same values (up to float rounding of the blur), but XLA:CPU's reduce_window gradient
# (select_and_scatter) and its depthwise convolution are slow (experiments/benchmark/).
# Gradients at exact ties of the max (in practice only ReLU zeros, whose gradient is zero
# anyway) are shared instead of given to one.

def _max_pool2(x: jax.Array) -> jax.Array:
  """2x2(x2) max-pool, stride 2, on (B, *spatial, C) with even spatial sizes."""
  shape = [x.shape[0]]
  for s in x.shape[1:-1]:
    shape += [s // 2, 2]
  return x.reshape(*shape, x.shape[-1]).max(axis=tuple(range(2, 2 * (x.ndim - 2) + 1, 2)))


def _blur2_axis(x: jax.Array, axis: int) -> jax.Array:
  """[1, 2, 1] / 4 blur along `axis`, zero padding 1, stride 2: size n -> (n + 1) // 2."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  xp = jnp.pad(x, pad)
  m = (x.shape[axis] + 1) // 2
  taps = [jax.lax.slice_in_dim(xp, k, 2 * m - 1 + k, 2, axis) for k in range(3)]
  return 0.25 * taps[0] + 0.5 * taps[1] + 0.25 * taps[2]


def max_blur_pool(x: jax.Array) -> jax.Array:
  """N2V2 / CAREamics MaxBlurPool on (B, *spatial, C): max-pool window 2 stride 1
  (no padding), then a depthwise binomial [1,2,1] blur with zero padding 1 and stride 2.
  Halves every (even) spatial size."""
  for axis in range(1, x.ndim - 1):  # the 2-window max is separable, like the blur
    n = x.shape[axis]
    x = jnp.maximum(jax.lax.slice_in_dim(x, 0, n - 1, axis=axis),
                    jax.lax.slice_in_dim(x, 1, n, axis=axis))
  for axis in range(1, x.ndim - 1):
    x = _blur2_axis(x, axis)
  return x


def _upsample_nearest(x: jax.Array) -> jax.Array:
  for axis in range(1, x.ndim - 1):
    x = jnp.repeat(x, 2, axis=axis)
  return x


def _upsample_bilinear(x: jax.Array) -> jax.Array:
  """x2 linear interpolation per spatial axis with half-pixel centres and edge clamping:
  PyTorch's Upsample(mode='bilinear'/'trilinear', align_corners=False). Written with
  shifted copies, not jax.image.resize, whose dense weight matrices grow with the image."""
  for axis in range(1, x.ndim - 1):
    n = x.shape[axis]
    prev = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis),
                            jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
    nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis),
                           jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis=axis)
    even, odd = 0.25 * prev + 0.75 * x, 0.75 * x + 0.25 * nxt
    x = jnp.stack([even, odd], axis=axis + 1)
    x = x.reshape(*x.shape[:axis], 2 * n, *x.shape[axis + 2:])
  return x


BATCH_NORM_EPSILON = 1e-5


def apply_model(model: "UNet", variables: Any, x: jax.Array, **kwargs) -> jax.Array:
  """model.apply; without BatchNorm, on batch slices as fully independent branches (no
  state is shared between samples, so this is exact), the most parallel form."""
  k = slice_count(model.batch_chunks, model.min_slice_voxels, x.shape)
  if model.batch_norm or k <= 1 or kwargs.get("mutable"):
    return model.apply(variables, x, **kwargs)
  return jnp.concatenate([model.apply(variables, part, **kwargs) for part in jnp.split(x, k)])


def upsampling_of(model_cfg: Any) -> str:
  up = str(model_cfg.upsampling)
  if up not in UPSAMPLINGS:
    raise N2VError(f"model.upsampling={up!r}: expected one of {', '.join(UPSAMPLINGS)}")
  return up


def _concat_groups(a: jax.Array, b: jax.Array, groups: int) -> jax.Array:
  """Concatenate features so that group g of the result holds group g of a then of b
  (contiguous groups, as feature_group_count expects)."""
  if groups == 1:
    return jnp.concatenate([a, b], axis=-1)
  lead = a.shape[:-1]
  a = a.reshape(*lead, groups, a.shape[-1] // groups)
  b = b.reshape(*lead, groups, b.shape[-1] // groups)
  return jnp.concatenate([a, b], axis=-1).reshape(*lead, -1)


def _decoder_input(skip: jax.Array, up: jax.Array, groups: int) -> jax.Array | list[jax.Array]:
  """[skip, up], which the block's first conv (Conv) convolves apart; with grouped convs
  (independent channels) their per-group concatenation."""
  return [skip, up] if groups == 1 else _concat_groups(skip, up, groups)


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
  upsampling: str = "nearest"
  batch_chunks: int = 1  # performance only: see chunked_conv
  min_slice_voxels: int = 0  # performance only: see slice_count
  conv_algorithm: str = "direct"  # performance only: nn.conv_algorithms
  conv_precision: str = "float32"  # bf16_products: bfloat16 operands in im2col/Winograd
  dtype: Any = jnp.float32

  def _block(self, x: jax.Array, features: tuple[int, int], groups: int, name: str,
             train: bool, slices: int):
    # He init suits ReLU (fan-in is per group for grouped convs); BatchNorm momentum 0.9
    # (PyTorch/CAREamics default) so running stats settle within short N2V trainings.
    nd = (x[0] if isinstance(x, list) else x).ndim - 2
    for i in range(2):
      conv = Conv(features[i] * groups, (self.kernel_size,) * nd, groups, self.dtype,
                  self.conv_algorithm, self.conv_precision, name=f"{name}_conv{i}")
      x = chunked_conv(conv, x, slices)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         epsilon=BATCH_NORM_EPSILON,
                         dtype=self.dtype, param_dtype=jnp.float32,
                         name=f"{name}_bn{i}")(x)
      x = nn.relu(x)
    return x

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    nd = x.ndim - 2 if self.ndim is None else self.ndim
    if nd not in (2, 3) or x.ndim != nd + 2:
      raise N2VError(f"UNet(ndim={self.ndim}) expects input (B, *spatial, C) with 2 or 3 "
                     f"spatial axes; got shape {tuple(x.shape)}")
    if self.kernel_size % 2 != 1:
      raise N2VError(f"UNet kernel_size must be odd; got {self.kernel_size}")
    if self.depth < 0:
      raise N2VError(f"UNet depth must be >= 0; got {self.depth}")
    spatial = tuple(x.shape[1:-1])
    div = divisor(self.depth)
    if any(s % div for s in spatial):
      raise N2VError(f"UNet(depth={self.depth}) needs spatial sizes divisible by {div}; "
                     f"got spatial shape {spatial} (input {tuple(x.shape)}); pad the input")
    in_channels = x.shape[-1]
    if self.residual and self.out_channels != in_channels:
      raise N2VError(f"UNet residual=True needs out_channels == input channels; got "
                     f"out_channels={self.out_channels}, input channels={in_channels}")
    groups = in_channels if self.independent_channels else 1
    if self.out_channels % groups:
      raise N2VError(f"UNet independent_channels needs out_channels to be a multiple of "
                     f"input channels {in_channels}; got {self.out_channels}")

    # Slices of the batch for every conv, from the input's shape; without BatchNorm,
    # apply_model slices the whole network instead (faster still).
    slices = (slice_count(self.batch_chunks, self.min_slice_voxels, x.shape)
              if self.batch_norm else 1)
    x_in = x.astype(jnp.float32)
    h = x.astype(self.dtype)
    skips = []
    for level in range(self.depth):
      h = self._block(h, (self.features * 2**level,) * 2, groups, f"enc{level}", train,
                      slices)
      skips.append(h)
      if self.n2v2:
        h = max_blur_pool(h)
      else:
        h = _max_pool2(h)
    half = lambda level: self.features * 2 ** max(level - 1, 0)
    h = self._block(h, (self.features * 2**self.depth, half(self.depth)), groups, "bottom",
                    train, slices)
    for level in reversed(range(self.depth)):
      h = _upsample_bilinear(h) if self.upsampling == "bilinear" else _upsample_nearest(h)
      if not (self.n2v2 and level == 0):  # N2V2 drops the top-level skip only
        h = _decoder_input(skips[level], h, groups)
      h = self._block(h, (self.features * 2**level, half(level)), groups, f"dec{level}",
                      train, slices)
    out = nn.Conv(self.out_channels, (1,) * nd, feature_group_count=groups,
                  dtype=self.dtype, param_dtype=jnp.float32, name="final")(h)
    out = out.astype(jnp.float32)
    if self.residual:
      out = out + x_in
    return out


def fold_batch_norm(model: UNet, variables: Any) -> tuple[UNet, dict]:
  """The inference form of a batch-norm U-Net: each BatchNorm (running statistics and
  affine) folded into the convolution in front of it, and the network without batch norm,
  so `apply_model` runs it as independent batch slices: fewer operations per pixel, the
  same output up to float rounding. A model without batch norm is returned as it is."""
  if not model.batch_norm:
    return model, variables
  params = {k: dict(v) for k, v in variables["params"].items()}
  for bn_name, stats in variables["batch_stats"].items():
    bn, conv = params.pop(bn_name), params[bn_name.replace("_bn", "_conv")]
    gain = bn["scale"] * jax.lax.rsqrt(stats["var"] + BATCH_NORM_EPSILON)
    conv["kernel"] = conv["kernel"] * gain  # output features are the kernel's last axis
    conv["bias"] = (conv["bias"] - stats["mean"]) * gain + bn["bias"]
  return model.clone(batch_norm=False), {"params": params}


def make_model(model_cfg: Any, in_channels: int, ndim: int | None = None) -> UNet:
  """Build the U-Net from a config with fields depth, features, kernel_size, batch_norm,
  residual, n2v2, independent_channels, dtype ('float32' | 'bfloat16'); out = in channels.
  `ndim` (2 or 3) may also come from `model_cfg.ndim`; if neither is given the model
  infers it from the input rank."""
  dtype_name = str(model_cfg.dtype)
  if dtype_name not in _DTYPES:
    raise N2VError(f"model.dtype must be one of {sorted(_DTYPES)}; got {dtype_name!r}")
  if ndim is None:
    ndim = getattr(model_cfg, "ndim", None)
  if ndim is not None and int(ndim) not in (2, 3):
    raise N2VError(f"model ndim must be 2 or 3; got {ndim}")
  chunks, min_slice_voxels = batch_chunks_of(model_cfg)
  algorithm = str(getattr(model_cfg, "conv_algorithm", "direct"))
  precision = str(getattr(model_cfg, "conv_precision", "float32"))
  conv_algorithms.check(algorithm, precision)
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
      upsampling=upsampling_of(model_cfg),
      batch_chunks=chunks,
      min_slice_voxels=min_slice_voxels,
      conv_algorithm=algorithm,
      conv_precision=precision,
      dtype=_DTYPES[dtype_name],
  )
