"""The U-Net's convolutions and the one CPU performance trick: convolutions on slices of
the batch.

`Conv` is flax's nn.Conv ('SAME', He-normal kernel, zero bias: the same parameter names,
shapes and initial values), computed by `conv_same`. Two things differ from nn.Conv, both
for speed on XLA:CPU and both the same function up to float rounding:

- 3D is written as one 2D convolution per depth tap, summed: XLA:CPU runs its 2D
  convolutions through a fast library but not its 3D ones.
- `Conv` takes one input or several given apart: the decoder's first conv takes
  [skip, up-sampled] and sums one conv per part, each with its slice of the kernel's input
  features, instead of convolving their concatenation, whose copy XLA:CPU makes slowly.

Batch slices (`chunked_conv`, `slice_count`): XLA:CPU runs one convolution, and above all
its weight gradient, on about one core, and its weight gradient gets slower per patch as the
batch grows. The same conv applied to several slices of the batch gives XLA independent,
smaller convolutions (forward and backward) that its runtime runs side by side; BatchNorm
still sees the whole batch. How many slices pay depends on the CPU, so `model.batch_chunks`
0 (auto) asks for `AUTO_SLICES[vendor]` = (slices, minimum voxels per slice); the table was
measured with experiments/benchmark/benchmark.py (its README holds the figures).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from n2v_jax.errors import N2VError
from n2v_jax.nn import conv_algorithms

# (slices, minimum voxels per slice) by /proc/cpuinfo vendor; slice_count never asks for
# fewer than a quarter of the slices where the batch allows.
AUTO_SLICES = {"AuthenticAMD": (8, 8 * 64 * 64)}
AUTO_SLICES_OTHER = (32, 4 * 64 * 64)
# model.conv_algorithm 'auto': per CPU vendor, (largest spatial edge, least channels,
# algorithm) rules, the first that a conv meets wins; none: XLA's direct convolution.
# Measured with experiments/benchmark/conv_algorithms.py (its README holds the figures).
AUTO_ALGORITHMS: dict[str, tuple[tuple[int, int, str], ...]] = {
    # the U-Net's deepest level (16 x 16, 64 and 128 channels): Winograd F(4x4, 3x3) with
    # its own gradients beats XLA's convolution in training; direct everywhere else
    "GenuineIntel": ((16, 64, "winograd"),),
}


@functools.cache
def cpu_vendor() -> str:
  """The CPU's vendor id from /proc/cpuinfo ('GenuineIntel', 'AuthenticAMD'; '' if unknown)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("vendor_id"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return ""


def batch_chunks_of(model_cfg: Any) -> tuple[int, int]:
  """(slices, minimum voxels per slice) for model.batch_chunks: a positive count is used
  as given; 0 = auto: on CPU the CPU vendor's AUTO_SLICES, 1 on accelerators."""
  n = int(model_cfg.batch_chunks)
  if n < 0:
    raise N2VError(f"model.batch_chunks={n}: expected 0 (auto) or a positive count")
  if n == 0:
    if jax.default_backend() != "cpu":
      return 1, 0
    return AUTO_SLICES.get(cpu_vendor(), AUTO_SLICES_OTHER)
  return n, 0


def slice_count(chunks: int, min_slice_voxels: int, shape: tuple[int, ...]) -> int:
  """Slices for an input of `shape` (B, *spatial, C): gcd(chunks, B), or with a minimum
  the largest divisor of it whose slices keep min_slice_voxels spatial voxels each (but
  never fewer than max(2, chunks // 4) slices where gcd(chunks, B) allows)."""
  g = math.gcd(int(chunks), shape[0])
  floor = max(2, int(chunks) // 4)
  if not min_slice_voxels or g <= floor:
    return g
  limit = max(floor, shape[0] * math.prod(shape[1:-1]) // int(min_slice_voxels))
  return max(d for d in range(1, g + 1) if g % d == 0 and d <= limit)


def chunked_conv(conv: nn.Module, x: jax.Array | list[jax.Array], k: int) -> jax.Array:
  """conv(x) on k slices of the batch; x may be a list of arrays (Conv's parts)."""
  if k <= 1:
    return conv(x)
  if isinstance(x, list):
    return jnp.concatenate([conv(list(parts)) for parts in zip(*(jnp.split(a, k) for a in x))])
  return jnp.concatenate([conv(part) for part in jnp.split(x, k)], axis=0)


def auto_algorithm(shape: tuple[int, ...], features: int, kernel: tuple[int, ...]) -> str:
  """model.conv_algorithm 'auto' for a conv of input `shape` (B, *spatial, C): the first rule
  of AUTO_ALGORITHMS[vendor] whose largest edge and least channels it meets, else direct."""
  if jax.default_backend() != "cpu" or tuple(kernel)[-2:] != (3, 3):
    return "direct"
  edge, channels = max(shape[-3:-1]), min(shape[-1], features)
  for max_edge, min_channels, algorithm in AUTO_ALGORITHMS.get(cpu_vendor(), ()):
    if edge <= max_edge and channels >= min_channels:
      return algorithm
  return "direct"


def conv_same(x: jax.Array, kernel: jax.Array, groups: int = 1, algorithm: str = "direct",
              precision: str = "float32") -> jax.Array:
  """'SAME' convolution of x (B, *spatial, C) with an odd kernel (*k, C / groups, F); 3D as
  one 2D convolution per depth tap, summed (see the module doc). algorithm, precision:
  nn.conv_algorithms' (grouped convolutions are always direct)."""
  if x.ndim == 4:
    if groups == 1 and algorithm != "direct":
      return conv_algorithms.conv2d(x, kernel, algorithm, precision)
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", feature_group_count=groups,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  batch, depth, r = x.shape[0], x.shape[1], kernel.shape[0] // 2
  padded = jnp.pad(x, [(0, 0), (r, r)] + [(0, 0)] * 3)
  out = None
  for dz in range(kernel.shape[0]):
    plane = padded[:, dz:dz + depth].reshape(batch * depth, *x.shape[2:])
    y = conv_same(plane, kernel[dz], groups, algorithm, precision)
    out = y if out is None else out + y
  return out.reshape(batch, depth, *out.shape[1:])


class Conv(nn.Module):
  """flax's nn.Conv computed by conv_same, on one input or on a list of inputs given apart
  (one conv per part with its slice of the kernel's input features, summed: the
  convolution of their concatenation without the copy)."""

  features: int
  kernel_size: tuple[int, ...]
  groups: int = 1  # feature_group_count; with one input only
  dtype: Any = jnp.float32
  algorithm: str = "direct"  # model.conv_algorithm ('auto': auto_algorithm per input shape)
  precision: str = "float32"  # model.conv_precision

  @nn.compact
  def __call__(self, x: jax.Array | list[jax.Array]) -> jax.Array:
    parts = x if isinstance(x, list) else [x]
    widths = [p.shape[-1] // self.groups for p in parts]
    kernel = self.param("kernel", nn.initializers.he_normal(),
                        (*self.kernel_size, sum(widths), self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    out, start = None, 0
    for part, width in zip(parts, widths):
      k = jax.lax.slice_in_dim(kernel, start, start + width, axis=len(self.kernel_size))
      algorithm = (auto_algorithm(part.shape, self.features, self.kernel_size)
                   if self.algorithm == "auto" else self.algorithm)
      y = conv_same(part.astype(self.dtype), k.astype(self.dtype), self.groups, algorithm,
                    self.precision)
      out, start = y if out is None else out + y, start + width
    return out + bias.astype(self.dtype)
