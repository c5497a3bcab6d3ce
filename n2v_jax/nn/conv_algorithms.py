"""Ways to compute one 2D 'SAME' convolution (B, H, W, C) x (k, k, C, F) -> (B, H, W, F),
all the same function up to float rounding, for `model.conv_algorithm`:

- `direct`: XLA's own convolution (`lax.conv_general_dilated`).
- `im2col`: the k * k shifted views of the padded input side by side, one dot with the
  kernel as a (k * k * C, F) matrix; autodiff gives the gradients (pads and dots).
- `winograd` (F(4x4, 3x3)), `winograd2` (F(2x2, 3x3)): Winograd's minimal filtering (Lavin &
  Gray 2016), for 3x3 kernels: the input cut into overlapping (m + 2)^2 tiles at stride m,
  each transformed (B^T d B), the kernel transformed (G g G^T), (m + 2)^2 batched dots over
  the channels, the result transformed back (A^T M A). The gradients have their own rule
  (a custom VJP), in the Winograd domain too: the input gradient is the same algorithm on
  the output gradient with the flipped, transposed kernel (for a stride-1 'SAME'
  convolution that is its transpose); the weight gradient transforms the output gradient's
  tiles with A and the input's with B^T, takes (m + 2)^2 batched dots over the tiles, and
  transforms back with G^T. Autodiff through the strided tile slices would pad instead.

`bf16_products` (`model.conv_precision`): the dots of im2col and F(2x2, 3x3) take bfloat16
operands and accumulate in float32 (`preferred_element_type`): half the bytes to move, and
the bfloat16 units of hardware that has them. The transforms stay in float32. F(4x4, 3x3)
keeps float32 dots: its transform matrices' larger entries widen the tiles' range, where
bfloat16's 8 significant bits lose an order of magnitude more than the other algorithms do
(the bounds: tests/test_conv_algorithms.py; timings: experiments/benchmark/README.md).
`direct` ignores it (XLA:CPU computes a bfloat16 convolution in float32 anyway).

The exactness of each (forward, input and weight gradients against `direct`) is tested in
tests/test_conv_algorithms.py, with its bounds; the speed of each per U-Net level is what
experiments/benchmark/conv_algorithms.py prints.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from n2v_jax.choices import CONV_ALGORITHMS, CONV_PRECISIONS
from n2v_jax.errors import N2VError

# Winograd's matrices (Lavin & Gray 2016, the points 0, +-1, +-2, inf for F(4, 3)):
# Y = A^T [(G g G^T) * (B^T d B)] A.
_F2 = dict(
    BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    G=[[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    AT=[[1, 1, 1, 0], [0, 1, -1, -1]])
_F4 = dict(
    BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    G=[[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
       [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])
WINOGRAD = {"winograd2": (2, _F2), "winograd": (4, _F4)}


def check(algorithm: str, precision: str) -> None:
  if algorithm not in CONV_ALGORITHMS:
    raise N2VError(f"model.conv_algorithm={algorithm!r}: expected one of "
                   f"{', '.join(CONV_ALGORITHMS)}")
  if precision not in CONV_PRECISIONS:
    raise N2VError(f"model.conv_precision={precision!r}: expected one of "
                   f"{', '.join(CONV_PRECISIONS)}")


def _dot_dtype(precision: str, algorithm: str = "im2col"):
  if precision == "bf16_products" and algorithm != "winograd":
    return jnp.bfloat16
  return jnp.float32


def direct(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def im2col(x: jax.Array, kernel: jax.Array, precision: str = "float32") -> jax.Array:
  k = kernel.shape[0]
  r = k // 2
  h, w = x.shape[1:3]
  dt = _dot_dtype(precision)
  # cast before the k * k copies: the views are moved at the dot's width (half in bf16)
  padded = jnp.pad(x.astype(dt), [(0, 0), (r, r), (r, r), (0, 0)])
  cols = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(k) for j in range(k)],
                         axis=-1)  # (B, H, W, k*k*C), tap-major as the kernel's reshape
  y = jnp.dot(cols, kernel.reshape(-1, kernel.shape[-1]).astype(dt),
              preferred_element_type=jnp.float32)
  return y.astype(x.dtype)


def _matrices(algorithm: str, dtype) -> tuple[int, jax.Array, jax.Array, jax.Array]:
  m, mats = WINOGRAD[algorithm]
  return (m, *(jnp.asarray(np.asarray(mats[k], np.float64), dtype) for k in ("BT", "G", "AT")))


def _input_tiles(x: jax.Array, m: int) -> tuple[jax.Array, int, int]:
  """(alpha, alpha, B, th, tw, C) overlapping tiles of x padded by 1 (SAME) and up to whole
  tiles; th, tw tiles per axis."""
  b, h, w, c = x.shape
  alpha = m + 2
  th, tw = -(-h // m), -(-w // m)
  padded = jnp.pad(x, [(0, 0), (1, th * m - h + 1), (1, tw * m - w + 1), (0, 0)])
  rows = [[padded[:, i:i + m * th:m, j:j + m * tw:m] for j in range(alpha)]
          for i in range(alpha)]
  return jnp.stack([jnp.stack(r) for r in rows]), th, tw


def _forward(x: jax.Array, kernel: jax.Array, algorithm: str, precision: str) -> jax.Array:
  m, BT, G, AT = _matrices(algorithm, jnp.float32)
  b, h, w, _ = x.shape
  d, th, tw = _input_tiles(x.astype(jnp.float32), m)
  V = jnp.einsum("xi,yj,ijbhwc->xybhwc", BT, BT, d)
  U = jnp.einsum("xi,yj,ijcf->xycf", G, G, kernel.astype(jnp.float32))
  dt = _dot_dtype(precision, algorithm)
  M = jnp.einsum("xybhwc,xycf->xybhwf", V.astype(dt), U.astype(dt),
                 preferred_element_type=jnp.float32)
  Y = jnp.einsum("ux,vy,xybhwf->bhuwvf", AT, AT, M)
  return Y.reshape(b, th * m, tw * m, -1)[:, :h, :w].astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def winograd(x: jax.Array, kernel: jax.Array, algorithm: str = "winograd",
             precision: str = "float32") -> jax.Array:
  return _forward(x, kernel, algorithm, precision)


def _winograd_fwd(x, kernel, algorithm, precision):
  return _forward(x, kernel, algorithm, precision), (x, kernel)


def _winograd_bwd(algorithm, precision, residuals, dy):
  x, kernel = residuals
  # the input gradient: the transposed convolution, i.e. the flipped kernel, C <-> F
  flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
  dx = _forward(dy, flipped, algorithm, precision).astype(x.dtype)
  # the weight gradient: dU[xy] = V[xy]^T dM[xy] over the tiles, dM = A dY A^T, dg = G^T dU G
  m, BT, G, AT = _matrices(algorithm, jnp.float32)
  b, h, w, f = dy.shape
  d, th, tw = _input_tiles(x.astype(jnp.float32), m)
  V = jnp.einsum("xi,yj,ijbhwc->xybhwc", BT, BT, d)
  dy_tiles = jnp.pad(dy.astype(jnp.float32), [(0, 0), (0, th * m - h), (0, tw * m - w),
                                              (0, 0)]).reshape(b, th, m, tw, m, f)
  dM = jnp.einsum("ux,vy,bhuwvf->xybhwf", AT, AT, dy_tiles)
  dt = _dot_dtype(precision, algorithm)
  dU = jnp.einsum("xybhwc,xybhwf->xycf", V.astype(dt), dM.astype(dt),
                  preferred_element_type=jnp.float32)
  dkernel = jnp.einsum("xi,yj,xycf->ijcf", G, G, dU).astype(kernel.dtype)
  return dx, dkernel


winograd.defvjp(_winograd_fwd, _winograd_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, algorithm: str = "direct",
           precision: str = "float32") -> jax.Array:
  """'SAME' 2D convolution of x (B, H, W, C) with an odd kernel (k, k, C, F) by `algorithm`
  (Winograd only for 3x3 kernels: other sizes fall back to im2col)."""
  if algorithm == "direct":
    return direct(x, kernel)
  if algorithm in WINOGRAD and kernel.shape[:2] == (3, 3):
    return winograd(x, kernel, algorithm, precision)
  return im2col(x, kernel, precision)
