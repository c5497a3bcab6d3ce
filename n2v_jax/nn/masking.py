"""Noise2Void blind-spot masking for ONE channels-last image `(*spatial, C)`.

Spatial dims are (Y, X) or (Z, Y, X). Every function is pure and keyed; shapes,
strategy names, radii and the structN2V mask are static Python/numpy values, so
`mask_image` can be `jax.jit`-ed and `jax.vmap`-ed over (key, image) for a batch.

Pipeline of `mask_image` (per channel group, see `channel_mode`):
  1. `stratified_coords`: one blind spot per grid cell (cell edge from `grid_edge`).
  2. Replacement value for each valid blind spot, computed from the ORIGINAL image.
  3. structN2V: the struct neighbours of each valid blind spot get U[-2, 2) noise.
  4. Blind spots are written last, so a blind spot that falls inside another one's
     struct neighbourhood still carries its own replacement value.
  5. `loss_mask` = scatter of the valid blind-spot coordinates.

Median of an even number of window values = mean of the two middle values (as np.median).
All randomness of one `mask_image` call comes from ONE `jax.random.uniform(key, ...)` draw
(sliced per use), so `stratified_coords(key, ...)` alone does not reproduce the blind spots
of `mask_image(key, ...)`; `_channel_coords` does.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from n2v_jax.choices import CHANNEL_MODES, STRATEGIES
from n2v_jax.errors import N2VError


_SAMPLING = ("uniform_withCP", "uniform_withoutCP", "normal_withoutCP")
_WINDOW_STATS = ("normal_fitted", "mean", "median")
_STRUCT_NOISE_RANGE = (-2.0, 2.0)  # normalized units, as in the original structN2V


# ----------------------------------------------------------------------------- validation

def _check_perc_pix(perc_pix) -> float:
  if isinstance(perc_pix, bool) or not isinstance(perc_pix, numbers.Real) \
          or not (0.0 < float(perc_pix) <= 100.0):
    raise N2VError(f"perc_pix must be a number in (0, 100], got {perc_pix!r}")
  return float(perc_pix)


def _check_spatial_shape(spatial_shape) -> tuple[int, ...]:
  shape = tuple(int(s) for s in spatial_shape)
  if len(shape) < 1 or any(s < 1 for s in shape):
    raise N2VError(f"spatial_shape must be a non-empty tuple of sizes >= 1, got {spatial_shape!r}")
  return shape


def _check_struct_mask(struct_mask, ndim: int) -> np.ndarray | None:
  if struct_mask is None:
    return None
  try:
    m = np.asarray(struct_mask)
  except Exception as err:  # e.g. a tracer: the struct mask must be static
    raise N2VError("struct_mask must be a static numpy array") from err
  if m.ndim != ndim:
    raise N2VError(f"struct_mask must have {ndim} dims like the spatial axes, got shape {m.shape}")
  if any(s % 2 == 0 for s in m.shape):
    raise N2VError(f"struct_mask sizes must all be odd (centred on the blind spot), got shape {m.shape}")
  if not np.all((m == 0) | (m == 1)):
    raise N2VError("struct_mask must be binary (only 0 and 1 values)")
  return m.astype(bool)


def _check_radius(radius, strategy: str) -> int:
  if isinstance(radius, bool) or not isinstance(radius, numbers.Integral):
    raise N2VError(f"radius must be a Python int, got {radius!r}")
  radius = int(radius)
  if strategy != "identity" and radius < 1:
    raise N2VError(f"radius must be >= 1 for strategy {strategy!r}, got {radius}")
  return max(radius, 0)


# ----------------------------------------------------------------------------- coordinates

def grid_edge(perc_pix: float, ndim: int) -> float:
  """Cell edge per spatial axis: one blind spot per edge**ndim pixels = perc_pix percent."""
  perc_pix = _check_perc_pix(perc_pix)
  if int(ndim) < 1:
    raise N2VError(f"ndim must be >= 1, got {ndim!r}")
  edge = (100.0 / perc_pix) ** (1.0 / int(ndim))
  # Snap float noise (64 ** (1/3) = 3.9999999999999996) so integer edges stay exact and
  # do not create an extra, almost-empty border cell.
  nearest = round(edge)
  if abs(edge - nearest) < 1e-9 * max(1.0, edge):
    edge = float(nearest)
  return edge


def _grid_shape(spatial_shape: tuple[int, ...], perc_pix: float) -> tuple[int, ...]:
  edge = grid_edge(perc_pix, len(spatial_shape))
  return tuple(int(math.ceil(s / edge)) for s in spatial_shape)


def num_cells(spatial_shape: tuple[int, ...], perc_pix: float) -> int:
  """Static number of strata = prod(ceil(size_i / edge))."""
  return int(np.prod(_grid_shape(_check_spatial_shape(spatial_shape), perc_pix)))


def _coords_from_uniform(u: jax.Array, spatial_shape: tuple[int, ...], perc_pix: float
                         ) -> tuple[jax.Array, jax.Array]:
  """Stratified coordinates from u ~ U[0, 1) of shape (N, ndim), N = num_cells."""
  ndim = len(spatial_shape)
  edge = grid_edge(perc_pix, ndim)
  grid = _grid_shape(spatial_shape, perc_pix)
  cells = np.indices(grid).reshape(ndim, -1).T.astype(np.float64)  # (N, ndim), C order
  # Static per-cell bounds; the clip only undoes float32 rounding at the cell edges.
  lo = np.floor(cells * edge).astype(np.int32)
  hi = (np.ceil((cells + 1.0) * edge) - 1.0).astype(np.int32)
  pos = (jnp.asarray(cells, jnp.float32) + u) * jnp.float32(edge)
  coords = jnp.clip(jnp.floor(pos).astype(jnp.int32), lo, hi)
  valid = jnp.all(coords < jnp.asarray(spatial_shape, jnp.int32), axis=-1)
  return coords, valid


def stratified_coords(key, spatial_shape: tuple[int, ...], perc_pix: float
                      ) -> tuple[jax.Array, jax.Array]:
  """One coordinate per grid cell: (coords int32 (N, ndim), valid bool (N,)).

  Cells are enumerated in C order over the grid (`np.indices(grid).reshape(ndim, -1).T`).
  Border cells may yield coordinates >= size: flagged invalid, never clamped.
  """
  spatial_shape = _check_spatial_shape(spatial_shape)
  n = num_cells(spatial_shape, perc_pix)
  u = jax.random.uniform(key, (n, len(spatial_shape)), jnp.float32)
  return _coords_from_uniform(u, spatial_shape, perc_pix)


# ----------------------------------------------------------------------------- randomness
# mask_image draws ALL its randomness with one jax.random.uniform call and slices it:
# every threefry call costs ~0.2 s of XLA compile time on CPU, per call site.

def _random_layout(spatial: tuple[int, ...], n_ch: int, perc_pix: float, strategy: str,
                   radius: int, struct: np.ndarray | None) -> tuple[tuple[str, tuple[int, ...]], ...]:
  """Shapes of the uniform blocks one channel group consumes."""
  ndim = len(spatial)
  n = num_cells(spatial, perc_pix)
  if strategy in _SAMPLING:
    value = (n, (2 * radius + 1) ** ndim)  # Gumbel noise per window position
  elif strategy in ("normal_additive", "normal_fitted"):
    value = (n, n_ch)  # one normal draw per blind spot and channel
  else:
    value = (n, 0)
  s = len(_struct_offsets(struct, ndim))
  return (("coords", (n, ndim)), ("value", value), ("struct", (n, s, n_ch)))


def _draw_uniform(key, layout, lead: tuple[int, ...] = ()) -> dict[str, jax.Array]:
  sizes = [int(np.prod(shape)) for _, shape in layout]
  u = jax.random.uniform(key, lead + (sum(sizes),), jnp.float32)
  out, start = {}, 0
  for (name, shape), size in zip(layout, sizes):
    out[name] = u[..., start:start + size].reshape(lead + shape)
    start += size
  return out


def _to_normal(u: jax.Array) -> jax.Array:
  """U[0, 1) -> N(0, 1) by inverse CDF (as jax.random.normal does)."""
  v = jnp.maximum(2.0 * u - 1.0, jnp.nextafter(jnp.float32(-1.0), jnp.float32(0.0)))
  return jnp.sqrt(jnp.float32(2.0)) * jax.lax.erf_inv(v)


def _to_gumbel(u: jax.Array) -> jax.Array:
  return -jnp.log(-jnp.log(jnp.maximum(u, jnp.finfo(jnp.float32).tiny)))


def _draws(key, image_shape: tuple[int, ...], perc_pix: float, strategy: str, radius: int,
           channel_mode: str, struct: np.ndarray | None) -> dict[str, jax.Array]:
  """Uniform blocks for mask_image; independent mode has a leading channel axis."""
  spatial, n_ch = tuple(image_shape[:-1]), image_shape[-1]
  if channel_mode == "shared":
    return _draw_uniform(key, _random_layout(spatial, n_ch, perc_pix, strategy, radius, struct))
  return _draw_uniform(key, _random_layout(spatial, 1, perc_pix, strategy, radius, struct), (n_ch,))


def _channel_coords(key, image_shape: tuple[int, ...], *, perc_pix: float, strategy: str,
                    radius: int, channel_mode: str = "independent",
                    struct_mask: np.ndarray | None = None) -> tuple[jax.Array, jax.Array]:
  """Blind spots mask_image(key, image, ...) uses: coords (C, N, ndim), valid (C, N)."""
  spatial, n_ch = tuple(image_shape[:-1]), image_shape[-1]
  struct = _check_struct_mask(struct_mask, len(spatial))
  u = _draws(key, image_shape, perc_pix, strategy, radius, channel_mode, struct)["coords"]
  if channel_mode == "shared":
    coords, valid = _coords_from_uniform(u, spatial, perc_pix)
    return (jnp.broadcast_to(coords, (n_ch,) + coords.shape),
            jnp.broadcast_to(valid, (n_ch,) + valid.shape))
  return jax.vmap(lambda x: _coords_from_uniform(x, spatial, perc_pix))(u)


# ----------------------------------------------------------------------------- replacement

def _window_offsets(radius: int, ndim: int) -> np.ndarray:
  """All offsets in [-r, r]^ndim, C order; the zero offset is at index W // 2."""
  ax = np.arange(-radius, radius + 1)
  return np.stack(np.meshgrid(*([ax] * ndim), indexing="ij"), axis=-1).reshape(-1, ndim)


def _struct_offsets(struct: np.ndarray | None, ndim: int) -> np.ndarray:
  """Offsets of struct_mask==1 relative to its centre, centre itself excluded: (S, ndim)."""
  if struct is None:
    return np.zeros((0, ndim), np.int32)
  centre = np.array(struct.shape) // 2
  off = np.argwhere(struct) - centre
  return off[np.any(off != 0, axis=1)].astype(np.int32)


def _in_struct(offsets: np.ndarray, struct: np.ndarray | None) -> np.ndarray:
  """Static bool (W,): window offset is a struct neighbour (never the centre)."""
  if struct is None:
    return np.zeros(len(offsets), bool)
  half = np.array(struct.shape) // 2
  idx = offsets + half
  inside = np.all((idx >= 0) & (idx < np.array(struct.shape)), axis=1)
  hit = np.zeros(len(offsets), bool)
  hit[inside] = struct[tuple(idx[inside].T)]
  return hit & np.any(offsets != 0, axis=1)


def _gather(image: jax.Array, pos: jax.Array) -> jax.Array:
  """image[pos] for pos (..., ndim) -> (..., C); positions clipped (callers mask them out)."""
  spatial = image.shape[:-1]
  idx = tuple(jnp.clip(pos[..., d], 0, spatial[d] - 1) for d in range(len(spatial)))
  return image[idx]


def _inside(pos: jax.Array, spatial: tuple[int, ...]) -> jax.Array:
  return jnp.all((pos >= 0) & (pos < jnp.asarray(spatial, jnp.int32)), axis=-1)


def _replacement(u: jax.Array, image: jax.Array, coords: jax.Array, strategy: str, radius: int,
                 struct: np.ndarray | None) -> jax.Array:
  """Replacement values (N, C) for the blind spots `coords` (N, ndim), from `image`.

  u: the "value" uniform block of _random_layout.
  """
  spatial = image.shape[:-1]
  ndim = len(spatial)
  n, c = coords.shape[0], image.shape[-1]
  orig = _gather(image, coords)
  if strategy == "identity":
    return orig
  if strategy == "normal_additive":
    noise = _to_normal(u) * radius
    return (orig + noise).astype(image.dtype)

  offsets = _window_offsets(radius, ndim)
  centre = np.all(offsets == 0, axis=1)
  struct_hit = _in_struct(offsets, struct)
  win = coords[:, None, :] + jnp.asarray(offsets, jnp.int32)[None]  # (N, W, ndim)
  inside = _inside(win, spatial)  # (N, W)

  if strategy in _SAMPLING:
    if strategy == "normal_withoutCP":
      sigma = max(radius / 2.0, 0.5)
      base = -np.sum(offsets.astype(np.float64) ** 2, axis=1) / (2.0 * sigma ** 2)
    else:
      base = np.zeros(len(offsets))
    excluded = struct_hit | (centre if strategy != "uniform_withCP" else False)
    base = np.where(excluded, -np.inf, base).astype(np.float32)
    logw = jnp.where(inside, jnp.asarray(base), -jnp.inf)
    ok = jnp.any(jnp.isfinite(logw), axis=-1)  # (N,) at least one candidate
    # Gumbel-max = categorical sample over the window offsets.
    idx = jnp.argmax(jnp.where(ok[:, None], logw, 0.0) + _to_gumbel(u), axis=-1)
    src = coords + jnp.asarray(offsets, jnp.int32)[idx]
    return jnp.where(ok[:, None], _gather(image, src), orig)

  # Window statistics over in-image, non-struct positions (centre only for normal_fitted).
  allowed = inside & jnp.asarray(~struct_hit & (~centre if strategy != "normal_fitted" else True))
  vals = _gather(image, win).astype(jnp.float32)  # (N, W, C)
  w = allowed[..., None]
  count = jnp.sum(allowed, axis=-1)  # (N,)
  denom = jnp.maximum(count, 1).astype(jnp.float32)[:, None]
  if strategy in ("mean", "normal_fitted"):
    mean = jnp.sum(jnp.where(w, vals, 0.0), axis=1) / denom
    if strategy == "mean":
      out = mean
    else:
      var = jnp.sum(jnp.where(w, (vals - mean[:, None]) ** 2, 0.0), axis=1) / denom
      out = mean + jnp.sqrt(var) * _to_normal(u)
  else:  # median: excluded positions sorted to the end as +inf
    srt = jnp.sort(jnp.where(w, vals, jnp.inf), axis=1)
    lo = jnp.maximum((count - 1) // 2, 0)[:, None, None]
    hi = jnp.minimum(count // 2, len(offsets) - 1)[:, None, None]
    a = jnp.take_along_axis(srt, jnp.broadcast_to(lo, (n, 1, c)), axis=1)[:, 0]
    b = jnp.take_along_axis(srt, jnp.broadcast_to(hi, (n, 1, c)), axis=1)[:, 0]
    out = 0.5 * (a + b)
  return jnp.where((count > 0)[:, None], out.astype(image.dtype), orig)


def _mask_group(u: dict[str, jax.Array], image: jax.Array, perc_pix: float, strategy: str, radius: int,
                struct: np.ndarray | None) -> tuple[jax.Array, jax.Array]:
  """Mask all channels of `image` (*spatial, C) at the same blind spots / source location."""
  spatial = image.shape[:-1]
  ndim = len(spatial)
  coords, valid = _coords_from_uniform(u["coords"], spatial, perc_pix)
  values = _replacement(u["value"], image, coords, strategy, radius, struct)

  oob = jnp.asarray(spatial, jnp.int32)  # out-of-bounds sentinel: dropped by the scatter
  masked = image
  s_off = _struct_offsets(struct, ndim)
  if len(s_off):
    spos = coords[:, None, :] + jnp.asarray(s_off)[None]  # (N, S, ndim)
    keep = valid[:, None] & _inside(spos, spatial)
    spos = jnp.where(keep[..., None], spos, oob)
    lo, hi = _STRUCT_NOISE_RANGE
    noise = (lo + (hi - lo) * u["struct"]).astype(image.dtype)  # (N, S, C)
    masked = masked.at[tuple(spos[..., d] for d in range(ndim))].set(noise, mode="drop")

  cpos = jnp.where(valid[:, None], coords, oob)
  cidx = tuple(cpos[:, d] for d in range(ndim))
  masked = masked.at[cidx].set(values, mode="drop")
  loss_mask = jnp.zeros(image.shape, bool).at[cidx].set(True, mode="drop")
  return masked, loss_mask


def mask_image(key, image: jax.Array, *, perc_pix: float, strategy: str, radius: int,
               channel_mode: str = "independent", struct_mask: np.ndarray | None = None,
               ) -> tuple[jax.Array, jax.Array]:
  """Blind-spot mask one image (*spatial, C): returns (masked_image, loss_mask bool).

  channel_mode "independent": each channel has its own blind spots and draws;
  "shared": same blind spots in all channels, whole pixel vector from one neighbour.
  """
  if strategy not in STRATEGIES:
    raise N2VError(f"unknown masking strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
  if channel_mode not in CHANNEL_MODES:
    raise N2VError(f"unknown channel_mode {channel_mode!r}; expected one of {', '.join(CHANNEL_MODES)}")
  perc_pix = _check_perc_pix(perc_pix)
  radius = _check_radius(radius, strategy)
  if image.ndim not in (3, 4):
    raise N2VError(f"image must be (Y, X, C) or (Z, Y, X, C), got shape {image.shape}")
  if not jnp.issubdtype(image.dtype, jnp.floating):
    raise N2VError(f"image must be floating point, got dtype {image.dtype}")
  _check_spatial_shape(image.shape[:-1])
  if image.shape[-1] < 1:
    raise N2VError(f"image must have at least one channel, got shape {image.shape}")
  struct = _check_struct_mask(struct_mask, image.ndim - 1)

  u = _draws(key, image.shape, perc_pix, strategy, radius, channel_mode, struct)
  if channel_mode == "shared":
    return _mask_group(u, image, perc_pix, strategy, radius, struct)

  def one_channel(u_c, x):
    m, lm = _mask_group(u_c, x[..., None], perc_pix, strategy, radius, struct)
    return m[..., 0], lm[..., 0]

  return jax.vmap(one_channel, in_axes=(0, -1), out_axes=-1)(u, image)
