import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n2v_jax.choices import CHANNEL_MODES, STRATEGIES
from n2v_jax.nn.masking import (_channel_coords, grid_edge, mask_image,
                                num_cells, stratified_coords)

KEY = jax.random.key(0)


@functools.lru_cache(maxsize=None)
def _jitted(vmapped, struct, kw):
  sm = None if struct is None else np.array(struct[1]).reshape(struct[0])
  f = functools.partial(mask_image, struct_mask=sm, **dict(kw))
  if vmapped:  # vmap over keys, same image
    f = jax.vmap(f, in_axes=(0, None))
  return jax.jit(f)


def jmask(key, image, *, struct_mask=None, **kw):
  """jit-compiled mask_image (cached per static config): eager op-by-op is slow to test."""
  return _jitted(False, _struct_key(struct_mask), tuple(sorted(kw.items())))(key, image)


def jmask_keys(ks, image, *, struct_mask=None, **kw):
  """mask_image of one image for many keys: outputs (n_keys, *image.shape)."""
  return _jitted(True, _struct_key(struct_mask), tuple(sorted(kw.items())))(ks, image)


def _struct_key(struct_mask):
  if struct_mask is None:
    return None
  m = np.asarray(struct_mask)
  return (m.shape, tuple(m.ravel().tolist()))


def keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


def arange_image(spatial, channels=1, offset=0.0):
  """Unique value per pixel: value -> flat pixel index (+ 10000 * channel)."""
  flat = np.arange(int(np.prod(spatial)), dtype=np.float32).reshape(spatial)
  return jnp.asarray(np.stack([flat + offset + 10000.0 * c for c in range(channels)], -1))


@functools.lru_cache(maxsize=None)
def many_draws(spatial, radius, strategy, n_keys):
  """Mask an arange image with perc_pix=100 (every pixel a blind spot) for n_keys keys."""
  image = arange_image(spatial)
  masked, lm = jmask_keys(keys(n_keys), image, perc_pix=100, strategy=strategy, radius=radius)
  return np.asarray(image), np.asarray(masked), np.asarray(lm)


@functools.partial(jax.jit, static_argnums=(1, 2))
def coords_many(ks, spatial, perc):
  return jax.vmap(lambda k: stratified_coords(k, spatial, perc))(ks)


def source_offsets(spatial, masked):
  """(n_keys, *spatial, ndim) offset from each pixel to the pixel its value came from."""
  src = np.stack(np.unravel_index(masked[..., 0].astype(np.int64), spatial), -1)
  here = np.stack(np.indices(spatial), -1)
  return src - here


# ----------------------------------------------------------------------------- grid / coordinates

def test_grid_edge_and_num_cells():
  assert grid_edge(1.0, 2) == 10.0
  assert grid_edge(12.5, 3) == 2.0
  assert grid_edge(100 / 64, 3) == 4.0  # snapped, 64 ** (1/3) is 3.9999999999999996 in floats
  assert grid_edge(0.2, 2) == pytest.approx((100 / 0.2) ** 0.5)
  assert num_cells((64, 64), 1.0) == 49
  assert num_cells((10, 10, 10), 12.5) == 125
  assert num_cells((64, 64), 0.2) == 9
  for bad in (0, -1, 101, float("nan")):
    with pytest.raises(ValueError, match="perc_pix"):
      grid_edge(bad, 2)


@pytest.mark.parametrize("spatial,perc", [((37, 50), 1.7), ((23, 20), 4.0), ((13, 17, 11), 3.0),
                                          ((9, 10, 8), 12.5)])
def test_exactly_one_coordinate_per_stratum(spatial, perc):
  ndim = len(spatial)
  edge = grid_edge(perc, ndim)
  grid = tuple(int(np.ceil(s / edge)) for s in spatial)
  cells = np.indices(grid).reshape(ndim, -1).T
  coords, valid = coords_many(keys(200), spatial, perc)
  coords, valid = np.asarray(coords), np.asarray(valid)
  assert coords.shape == (200, num_cells(spatial, perc), ndim) and coords.dtype == np.int32
  assert len(cells) == num_cells(spatial, perc)
  size = np.array(spatial)
  # Row n of the output lies in cell n: floor(i*edge + u*edge) in [floor(i*edge), (i+1)*edge).
  assert np.all(coords >= np.floor(cells * edge - 1e-6))
  assert np.all(coords < (cells + 1) * edge + 1e-6)
  assert np.all(coords >= 0)
  np.testing.assert_array_equal(valid, np.all(coords < size, -1))
  # Invalid only in border cells, and never clamped into the image.
  border = np.any(cells == np.array(grid) - 1, -1)
  assert not np.any(~valid & ~border[None])
  assert np.all(np.any(coords[~valid] >= size, -1))
  if edge == int(edge):
    # Integer edge: the pixel cell index recovers the stratum, all distinct.
    e = int(edge)
    np.testing.assert_array_equal(coords // e, np.broadcast_to(cells, coords.shape))
    # All pixels of the first cell get drawn (uniform within the cell).
    first = coords[:, 0]
    assert len({tuple(c) for c in first}) == e ** ndim


def test_percentage_same_in_2d_and_3d():
  perc = 1.5
  fracs = []
  for spatial in ((50, 50), (14, 14, 14)):
    _, valid = coords_many(keys(400), spatial, perc)
    fracs.append(float(np.mean(np.sum(np.asarray(valid), -1))) / np.prod(spatial))
  assert fracs[0] == pytest.approx(perc / 100, rel=0.05)
  assert fracs[1] == pytest.approx(perc / 100, rel=0.05)
  # The same holds for the loss mask of mask_image.
  image = jnp.zeros((14, 14, 14, 1))
  lm = jmask_keys(keys(100), image, perc_pix=perc, strategy="identity", radius=1)[1]
  assert float(jnp.mean(lm)) == pytest.approx(perc / 100, rel=0.08)


# ----------------------------------------------------------------------------- neighbour sampling

SAMPLING_CASES = [((7, 7), 2, 2000), ((4, 5, 4), 1, 500)]


@pytest.mark.parametrize("strategy", ["uniform_withCP", "uniform_withoutCP", "normal_withoutCP"])
@pytest.mark.parametrize("spatial,radius,n", SAMPLING_CASES)
def test_sampled_neighbour_within_radius_inside_image(strategy, spatial, radius, n):
  image, masked, lm = many_draws(spatial, radius, strategy, n)
  assert lm.all()  # perc_pix=100: every pixel is a blind spot
  vals = masked[..., 0]
  # Values are exactly pixels of the image (no wrap, no padding, no interpolation).
  assert np.all(vals == np.round(vals)) and vals.min() >= 0 and vals.max() < image.size
  off = source_offsets(spatial, masked)
  assert np.abs(off).max() <= radius
  centre = np.all(off == 0, -1)
  if strategy.endswith("withoutCP"):
    assert not centre.any()
  else:
    assert centre.any()
  # Corner pixel: only in-image neighbours are allowed, each one gets chosen.
  corner = off[(slice(None),) + (0,) * len(spatial)]
  allowed = {o for o in itertools.product(range(radius + 1), repeat=len(spatial))}
  if strategy.endswith("withoutCP"):
    allowed.discard((0,) * len(spatial))
  chosen = {tuple(o) for o in corner}
  if strategy == "normal_withoutCP":  # far diagonals are rare (exp(-6) at r=1 in 3D)
    assert chosen <= allowed and len(chosen) >= len(spatial)
  else:
    assert chosen == allowed


def _offset_freqs(off, sl):
  sub = off[(slice(None),) + sl].reshape(-1, off.shape[-1])
  uniq, counts = np.unique(sub, axis=0, return_counts=True)
  return {tuple(u): c / len(sub) for u, c in zip(uniq, counts)}


def test_uniform_withoutCP_is_uniform_over_neighbours():
  image, masked, _ = many_draws((7, 7), 2, "uniform_withoutCP", 2000)
  off = source_offsets((7, 7), masked)
  interior = _offset_freqs(off, (slice(2, 5), slice(2, 5)))  # full window inside the image
  assert len(interior) == 24
  np.testing.assert_allclose(list(interior.values()), 1 / 24, rtol=0.15)
  # At the corner only the 8 in-image neighbours compete, still uniformly (no clamping bias).
  corner = _offset_freqs(off, (0, 0))
  assert len(corner) == 8
  np.testing.assert_allclose(list(corner.values()), 1 / 8, rtol=0.2)


def test_uniform_withCP_includes_centre_uniformly():
  _, masked, _ = many_draws((7, 7), 2, "uniform_withCP", 2000)
  freqs = _offset_freqs(source_offsets((7, 7), masked), (slice(2, 5), slice(2, 5)))
  assert len(freqs) == 25
  np.testing.assert_allclose(list(freqs.values()), 1 / 25, rtol=0.15)


def test_normal_withoutCP_follows_discrete_gaussian():
  _, masked, _ = many_draws((7, 7), 2, "normal_withoutCP", 2000)
  freqs = _offset_freqs(source_offsets((7, 7), masked), (slice(2, 5), slice(2, 5)))
  offs = [o for o in itertools.product(range(-2, 3), repeat=2) if o != (0, 0)]
  w = np.array([np.exp(-(a * a + b * b) / (2 * 1.0 ** 2)) for a, b in offs])  # sigma = r/2 = 1
  w /= w.sum()
  emp = np.array([freqs.get(o, 0.0) for o in offs])
  np.testing.assert_allclose(emp, w, atol=0.01)


# ----------------------------------------------------------------------------- keys, vmap, jit

def test_same_key_same_output_different_key_different():
  image = jnp.asarray(np.random.default_rng(0).normal(size=(16, 16, 2)), jnp.float32)
  kw = dict(perc_pix=5, strategy="uniform_withoutCP", radius=2)
  a = jmask(KEY, image, **kw)
  b = jmask(jax.random.key(0), image, **kw)
  c = jmask(jax.random.key(1), image, **kw)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("kw", [
    dict(strategy="uniform_withoutCP", radius=2),
    dict(strategy="normal_fitted", radius=1, channel_mode="shared"),
    dict(strategy="median", radius=2, struct_mask=np.array([[1, 1, 1]])),
])
def test_vmap_equals_python_loop(kw):
  images = jnp.asarray(np.random.default_rng(0).normal(size=(4, 12, 12, 2)), jnp.float32)
  ks = keys(4, seed=3)
  f = lambda k, x: mask_image(k, x, perc_pix=5, **kw)  # noqa: E731
  vm, vl = jax.jit(jax.vmap(f))(ks, images)
  single = jax.jit(f)
  for i in range(4):
    m, lm = single(ks[i], images[i])
    np.testing.assert_array_equal(vl[i], lm)
    np.testing.assert_allclose(vm[i], m, rtol=1e-6, atol=1e-6)


def test_no_retrace_under_jit():
  traces = []

  @jax.jit
  def step(k, x):
    traces.append(1)
    return mask_image(k, x, perc_pix=2, strategy="normal_withoutCP", radius=3)

  x = jnp.zeros((16, 16, 1))
  step(jax.random.key(1), x)
  step(jax.random.key(2), x + 1)
  assert len(traces) == 1


# ----------------------------------------------------------------------------- channel modes

def test_shared_channel_mode_same_positions_same_source():
  image = arange_image((12, 12), channels=3)
  masked, lm = (np.asarray(a) for a in jmask_keys(
      keys(50), image, perc_pix=5, strategy="uniform_withoutCP", radius=2, channel_mode="shared"))
  assert lm.any()
  np.testing.assert_array_equal(lm[..., 0], lm[..., 1])
  np.testing.assert_array_equal(lm[..., 0], lm[..., 2])
  m = masked[lm[..., 0]]  # (n_masked, 3)
  src = m - 10000.0 * np.arange(3)
  np.testing.assert_array_equal(src[:, 0], src[:, 1])  # whole pixel vector from one neighbour
  np.testing.assert_array_equal(src[:, 0], src[:, 2])
  np.testing.assert_array_equal(masked[~lm], np.broadcast_to(image, masked.shape)[~lm])


def test_independent_channel_mode_positions_differ():
  image = arange_image((32, 32), channels=2)
  masked, lm = (np.asarray(a) for a in jmask(
      KEY, image, perc_pix=2, strategy="uniform_withoutCP", radius=2))
  assert lm[..., 0].sum() > 5 and lm[..., 1].sum() > 5
  assert not np.array_equal(lm[..., 0], lm[..., 1])
  # Each channel's replacement comes from the same channel.
  for c in range(2):
    assert np.all(masked[..., c][lm[..., c]] // 10000 == c)


@pytest.mark.parametrize("channel_mode", CHANNEL_MODES)
@pytest.mark.parametrize("spatial,perc", [((20, 25), 4.0), ((6, 8, 10), 12.5)])
def test_loss_mask_is_scatter_of_valid_coords_identity(channel_mode, spatial, perc):
  image = jnp.asarray(np.random.default_rng(0).normal(size=spatial + (2,)), jnp.float32)
  k = jax.random.key(7)
  kw = dict(perc_pix=perc, strategy="identity", radius=1, channel_mode=channel_mode)
  masked, lm = jmask(k, image, **kw)
  np.testing.assert_array_equal(masked, image)  # value unchanged, mask still set
  coords, valid = (np.asarray(a) for a in jax.jit(
      lambda k: _channel_coords(k, image.shape, **kw))(k))
  expected = np.zeros(image.shape, bool)
  for c in range(2):
    cc = coords[c][valid[c]]
    expected[tuple(cc.T) + (c,)] = True
    assert lm[..., c].sum() == valid[c].sum()  # integer edge: no duplicate pixels
  np.testing.assert_array_equal(lm, expected)


# ----------------------------------------------------------------------------- structN2V

STRUCT_CASES = [
    ((20, 20), np.array([[1, 1, 1, 1, 1]]), 2, 2.0),
    ((20, 20), np.array([[1], [1], [1], [1], [1]]), 2, 2.0),
    ((8, 8, 8), np.array([[[1]], [[1]], [[1]]]), 1, 5.0),
]


@pytest.mark.parametrize("spatial,struct,radius,perc", STRUCT_CASES)
def test_struct_mask(spatial, struct, radius, perc):
  image = arange_image(spatial, offset=100.0)  # all values >= 100, noise is in [-2, 2)
  ks = keys(100, seed=5)
  kw = dict(perc_pix=perc, strategy="uniform_withoutCP", radius=radius, struct_mask=struct)
  masked, lm = (np.asarray(a)[..., 0] for a in jmask_keys(ks, image, **kw))
  img = np.asarray(image)[..., 0]
  coords, valid = (np.asarray(a)[:, 0] for a in jax.jit(jax.vmap(
      lambda k: _channel_coords(k, image.shape, **kw)))(ks))
  s_off = np.argwhere(struct) - np.array(struct.shape) // 2
  s_off = s_off[np.any(s_off != 0, 1)]
  size = np.array(spatial)
  n_noise = 0
  for i in range(len(ks)):
    centres = coords[i][valid[i]]
    exp_lm = np.zeros(spatial, bool)
    exp_lm[tuple(centres.T)] = True
    np.testing.assert_array_equal(lm[i], exp_lm)  # loss only at the blind spots
    touched = exp_lm.copy()
    for c in centres:
      nb = c + s_off
      nb = nb[np.all((nb >= 0) & (nb < size), 1)]
      touched[tuple(nb.T)] = True
      nb = nb[~exp_lm[tuple(nb.T)]]  # a blind spot keeps its own replacement
      v = masked[i][tuple(nb.T)]
      assert np.all((v >= -2) & (v < 2))
      n_noise += len(v)
    # Nothing outside centres / struct neighbours changes.
    np.testing.assert_array_equal(masked[i][~touched], img[~touched])
    # Centres are replaced by an image pixel, never from a struct position nor the centre.
    cv = masked[i][tuple(centres.T)]
    assert np.all(cv >= 100)
    src = np.stack(np.unravel_index((cv - 100).astype(np.int64), spatial), -1)
    off = src - centres
    assert np.abs(off).max() <= radius
    assert not np.any(np.all(off == 0, 1))
    assert not np.any(np.all(off[:, None, :] == s_off[None], -1))
  assert n_noise > 50


def test_struct_mask_excludes_all_positions_falls_back_to_original():
  image = arange_image((6, 6))

  @jax.jit
  def run(k):
    return [mask_image(k, image, perc_pix=5, strategy=s, radius=1, struct_mask=np.ones((3, 3)))
            for s in ("uniform_withoutCP", "mean", "median")]

  for masked, lm in run(KEY):
    masked, lm = np.asarray(masked), np.asarray(lm)
    assert lm.sum() >= 1
    np.testing.assert_array_equal(masked[lm], np.asarray(image)[lm])


# ----------------------------------------------------------------------------- statistics strategies

def _np_window_stat(img, r, fn, struct_offsets=()):
  out = np.empty_like(img)
  H, W = img.shape
  for y, x in np.ndindex(H, W):
    vals = [img[y + dy, x + dx] for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if (dy, dx) != (0, 0) and (dy, dx) not in struct_offsets
            and 0 <= y + dy < H and 0 <= x + dx < W]
    out[y, x] = fn(vals)
  return out


@pytest.mark.parametrize("radius", [1, 2])
def test_mean_median_match_numpy(radius):
  img = np.random.default_rng(radius).normal(size=(6, 7)).astype(np.float32)

  @jax.jit
  def run(x):
    return {s: mask_image(KEY, x, perc_pix=100, strategy=s, radius=radius)
            for s in ("mean", "median")}

  for strategy, (masked, lm) in run(jnp.asarray(img)[..., None]).items():
    assert np.asarray(lm).all()
    ref = _np_window_stat(img, radius, np.mean if strategy == "mean" else np.median)
    np.testing.assert_allclose(np.asarray(masked)[..., 0], ref, rtol=1e-5, atol=1e-6)


def test_median_excludes_struct_positions():
  img = np.random.default_rng(9).normal(size=(6, 7)).astype(np.float32)
  masked, _ = jmask(KEY, jnp.asarray(img)[..., None], perc_pix=100, strategy="median",
                    radius=1, struct_mask=np.array([[1, 1, 1]]))
  # Every pixel is a blind spot (written last), so the struct noise is fully overwritten.
  ref = _np_window_stat(img, 1, np.median, struct_offsets={(0, 1), (0, -1)})
  np.testing.assert_allclose(np.asarray(masked)[..., 0], ref, rtol=1e-5, atol=1e-6)


def test_normal_fitted_statistics():
  img = np.random.default_rng(2).normal(size=(5, 5)).astype(np.float32)
  vals = np.asarray(jmask_keys(keys(2000), jnp.asarray(img)[..., None], perc_pix=100,
                               strategy="normal_fitted", radius=1)[0])[..., 0]
  for y, x in [(2, 2), (0, 0), (4, 2)]:
    win = img[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]  # in-image window, centre included
    mu, sd = win.mean(), win.std()
    assert vals[:, y, x].mean() == pytest.approx(mu, abs=4 * sd / np.sqrt(2000))
    assert vals[:, y, x].std() == pytest.approx(sd, rel=0.1)
  const = jnp.full((5, 5, 1), 3.0)
  np.testing.assert_allclose(jmask(KEY, const, perc_pix=100, strategy="normal_fitted",
                                   radius=1)[0], const)


def test_normal_additive_noise_sigma_is_radius():
  v = np.asarray(jmask_keys(keys(200), jnp.full((8, 8, 1), 5.0), perc_pix=100,
                            strategy="normal_additive", radius=3)[0])
  assert v.mean() == pytest.approx(5.0, abs=0.05)
  assert v.std() == pytest.approx(3.0, rel=0.03)


def test_single_pixel_image_no_nan():
  image = jnp.array([[[1.5, -2.0]]])

  @jax.jit
  def run(x):
    return {(s, m): mask_image(KEY, x, perc_pix=100, strategy=s, radius=2, channel_mode=m)
            for s in STRATEGIES for m in CHANNEL_MODES}

  for (strategy, _), (masked, lm) in run(image).items():
    assert np.asarray(lm).all() and np.all(np.isfinite(np.asarray(masked)))
    if strategy != "normal_additive":  # no neighbour at all: the original value is kept
      np.testing.assert_array_equal(masked, image)


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("kw,match", [
    (dict(strategy="gaussian"), "uniform_withCP, uniform_withoutCP"),
    (dict(radius=0), "radius"),
    (dict(perc_pix=0.0), "perc_pix"),
    (dict(perc_pix=150), "perc_pix"),
    (dict(channel_mode="mixed"), "channel_mode"),
    (dict(struct_mask=np.ones((1, 4))), "odd"),
    (dict(struct_mask=np.ones((3, 3, 3))), "2 dims"),
    (dict(struct_mask=np.full((1, 3), 2)), "binary"),
])
def test_validation_errors(kw, match):
  args = dict(perc_pix=1.0, strategy="uniform_withoutCP", radius=2) | kw
  with pytest.raises(ValueError, match=match):
    mask_image(KEY, jnp.zeros((8, 8, 1)), **args)


def test_image_shape_and_dtype_errors():
  with pytest.raises(ValueError, match="image must be"):
    mask_image(KEY, jnp.zeros((8, 8)), perc_pix=1, strategy="mean", radius=1)
  with pytest.raises(ValueError, match="floating"):
    mask_image(KEY, jnp.zeros((8, 8, 1), jnp.int32), perc_pix=1, strategy="mean", radius=1)
  # identity does not need a window
  jmask(KEY, jnp.zeros((8, 8, 1)), perc_pix=1, strategy="identity", radius=0)
