"""Tests for n2v_jax.nn.unet and nn.conv: shapes, N2V2, residual, independent channels, BatchNorm,
mixed precision, receptive field (empirical), input validation."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from n2v_jax.nn import conv
from n2v_jax.nn import unet
from n2v_jax.nn.unet import (UNet, _receptive_field_extent, _upsample_bilinear, apply_model,
                             divisor, make_model, max_blur_pool, receptive_field_radius)


@pytest.fixture(autouse=True, scope="module")
def _fast_rng_compile():
  # Partitionable threefry costs ~1 s of XLA:CPU compile per distinct parameter shape at
  # init; the classic lowering compiles ~5x faster. Scoped to this module.
  with jax.threefry_partitionable(False):
    yield


def _init(model, x, seed=0):
  """Random variables with the model's tree, drawn with numpy (He-scaled kernels, small
  random biases / BN affine, unit running variance): no per-shape RNG compiles, so the
  file stays fast. `test_model_init` covers the model's own initializers."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), leaf.shape), jnp.float32)
    if name == "mean":
      return jnp.zeros(leaf.shape, jnp.float32)
    if name == "var":
      return jnp.ones(leaf.shape, jnp.float32)
    if name == "scale":
      return jnp.asarray(1 + 0.1 * rng.normal(size=leaf.shape), jnp.float32)
    return jnp.asarray(0.1 * rng.normal(size=leaf.shape), jnp.float32)  # biases

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _x(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _cfg(**kw):
  cfg = ml_collections.ConfigDict(dict(
      depth=2, features=4, kernel_size=3, batch_norm=True, residual=False, n2v2=False,
      independent_channels=False, dtype="float32", upsampling="nearest", batch_chunks=0))
  cfg.update(kw)
  return cfg


@pytest.mark.parametrize("shape,n2v2", [((2, 16, 16, 3), False), ((2, 16, 32, 1), True),
                                        ((1, 8, 16, 16, 3), False), ((1, 8, 16, 16, 3), True)])
def test_output_shape_and_dtype(shape, n2v2):
  model = UNet(ndim=len(shape) - 2, out_channels=shape[-1], features=4, n2v2=n2v2)
  x = _x(shape)
  variables = _init(model, x)
  out = model.apply(variables, x, train=False)
  assert out.shape == shape and out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("ndim", [2])
def test_model_init(ndim):
  # The model's own initializers: float32 params, BN running stats at (0, 1), finite output.
  shape = (1,) + (8,) * (ndim - 1) + (16, 2)
  model = UNet(ndim=ndim, out_channels=2, features=4)
  x = _x(shape)
  variables = model.init(jax.random.key(0), x, train=False)
  assert set(variables) == {"params", "batch_stats"}
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))
  k = variables["params"]["enc0_conv0"]["kernel"]
  assert k.shape == (3,) * ndim + (2, 4) and float(jnp.std(k)) > 0
  for bn in variables["batch_stats"].values():
    np.testing.assert_array_equal(bn["mean"], 0)
    np.testing.assert_array_equal(bn["var"], 1)
  out = model.apply(variables, x, train=False)
  assert out.shape == shape and bool(jnp.all(jnp.isfinite(out)))


def test_make_model_infers_ndim_and_sets_out_channels():
  model = make_model(_cfg(), in_channels=3)
  assert model.out_channels == 3 and model.ndim is None
  for shape in [(1, 16, 16, 3), (1, 8, 16, 16, 3)]:
    x = _x(shape)
    assert model.apply(_init(model, x), x, train=False).shape == shape
  assert make_model(_cfg(), 1, ndim=3).ndim == 3
  with pytest.raises(ValueError, match="dtype"):
    make_model(_cfg(dtype="float16"), 1)


@pytest.mark.parametrize("ndim", [2, 3])
def test_n2v2_drops_top_skip_only(ndim):
  shape = (1,) + (8,) * (ndim - 1) + (16, 2)
  x = _x(shape)
  f = 4
  p_std = _init(UNet(ndim=ndim, out_channels=2, features=f), x)["params"]
  p_n2v2 = _init(UNet(ndim=ndim, out_channels=2, features=f, n2v2=True), x)["params"]
  assert set(p_std) == set(p_n2v2)
  # dec0 input: skip (f) + up-sampled dec1 output (f); N2V2: up-sampled only.
  assert p_std["dec0_conv0"]["kernel"].shape[-2] == 2 * f
  assert p_n2v2["dec0_conv0"]["kernel"].shape[-2] == f
  # Level-1 skip (2f) + up-sampled bottom output (2f) is kept in both.
  assert p_std["dec1_conv0"]["kernel"].shape[-2] == 4 * f
  assert p_n2v2["dec1_conv0"]["kernel"].shape[-2] == 4 * f
  # The second conv of the bottom and decoder blocks halves the features (CSBDeep).
  assert p_std["bottom_conv0"]["kernel"].shape[-1] == 4 * f
  assert p_std["bottom_conv1"]["kernel"].shape[-1] == 2 * f
  assert p_std["dec1_conv1"]["kernel"].shape[-1] == f


@pytest.mark.parametrize("ndim", [2, 3])
def test_max_blur_pool_matches_reference(ndim):
  shape = (1,) + (4,) * (ndim - 1) + (6, 2)
  x = np.asarray(_x(shape))
  out = np.asarray(max_blur_pool(jnp.asarray(x)))
  assert out.shape == (1,) + tuple(s // 2 for s in shape[1:-1]) + (2,)
  # Reference: max over a 2-window stride 1 (no padding), zero pad 1, [1,2,1] blur, stride 2.
  spatial = shape[1:-1]
  m = np.full((1,) + tuple(s - 1 for s in spatial) + (2,), -np.inf)
  for off in np.ndindex(*(2,) * ndim):
    sl = tuple(slice(o, o + s - 1) for o, s in zip(off, spatial))
    m = np.maximum(m, x[(slice(None),) + sl])
  pad = [(0, 0)] + [(1, 1)] * ndim + [(0, 0)]
  mp = np.pad(m, pad)
  w1 = np.array([1.0, 2.0, 1.0]) / 4
  ref = np.zeros(out.shape)
  for q in np.ndindex(*out.shape[1:-1]):
    for off in np.ndindex(*(3,) * ndim):
      w = np.prod([w1[o] for o in off])
      idx = tuple(2 * qi + o for qi, o in zip(q, off))
      ref[(0,) + q] += w * mp[(0,) + idx]
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_residual_adds_input():
  x = _x((2, 16, 16, 3))
  plain = UNet(out_channels=3, features=4)
  resid = UNet(out_channels=3, features=4, residual=True)
  variables = _init(plain, x)
  # Same parameter tree: the residual adds no parameters.
  assert jax.tree.structure(variables) == jax.tree.structure(_init(resid, x))
  out_plain = plain.apply(variables, x, train=False)
  out_resid = resid.apply(variables, x, train=False)
  np.testing.assert_allclose(out_resid - out_plain, x, atol=1e-5)
  # With a zeroed final conv the residual network is exactly the identity.
  params = jax.tree_util.tree_map(lambda a: a, variables["params"])
  params["final"] = jax.tree.map(jnp.zeros_like, params["final"])
  out_id = resid.apply({**variables, "params": params}, x, train=False)
  np.testing.assert_array_equal(out_id, x)
  with pytest.raises(ValueError, match="residual"):
    _init(UNet(out_channels=1, residual=True, features=4), x)


@pytest.mark.parametrize("n2v2,train", [(False, False), (True, True)])
def test_independent_channels_do_not_mix(n2v2, train):
  c = 3
  x = _x((2, 16, 16, c))
  model = UNet(out_channels=c, features=4, independent_channels=True, n2v2=n2v2)
  variables = _init(model, x)
  # Grouped convs: per-group features equal the joint setting's.
  p = variables["params"]
  assert p["enc0_conv0"]["kernel"].shape == (3, 3, 1, 4 * c)
  assert p["dec1_conv0"]["kernel"].shape == (3, 3, 8 + 8, 8 * c)
  assert p["final"]["kernel"].shape == (1, 1, 4, c)

  def f(x):
    if train:
      out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
      return out
    return model.apply(variables, x, train=False)

  pullback = jax.jit(lambda x, cot: jax.vjp(f, x)[1](cot)[0])
  cot = np.asarray(_x(x.shape, seed=7))  # random cotangent: no accidental cancellation
  for co in range(c):
    cot_c = np.zeros_like(cot)
    cot_c[..., co] = cot[..., co]
    g = np.asarray(pullback(x, jnp.asarray(cot_c)))
    for ci in range(c):
      if ci == co:
        assert np.abs(g[..., ci]).max() > 0
      else:
        assert np.all(g[..., ci] == 0), (co, ci)


def test_joint_channels_do_mix():
  # Control for the test above: without independent_channels, channels interact.
  x = _x((1, 16, 16, 3))
  model = UNet(out_channels=3, features=4)
  variables = _init(model, x)
  g = jax.jit(jax.grad(lambda x: model.apply(variables, x, train=False)[..., 0].sum()))(x)
  assert np.abs(np.asarray(g[..., 1])).max() > 0


def test_batch_norm_off_has_no_batch_stats():
  x = _x((2, 16, 16, 1))
  variables = _init(UNet(features=4, batch_norm=False), x)
  assert set(variables) == {"params"}
  assert not any("bn" in k for k in variables["params"])
  variables_bn = _init(UNet(features=4), x)
  assert set(variables_bn) == {"params", "batch_stats"}


def test_train_updates_batch_stats():
  x = 3.0 + 2.0 * _x((2, 16, 16, 1))
  model = UNet(features=4)
  variables = _init(model, x)
  out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out.shape == x.shape
  old, new = variables["batch_stats"], updates["batch_stats"]
  assert jax.tree.structure(old) == jax.tree.structure(new)
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), old, new))
  assert all(changed)
  # Eval mode uses running averages: no mutation requested, output differs from train mode.
  out_eval = model.apply(variables, x, train=False)
  assert not np.allclose(out_eval, out)


def test_bfloat16_compute_float32_params_and_output():
  x = _x((2, 16, 16, 2))
  m32 = UNet(out_channels=2, features=4)
  m16 = UNet(out_channels=2, features=4, dtype=jnp.bfloat16)
  variables = _init(m16, x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))
  out16 = m16.apply(variables, x, train=False)
  assert out16.dtype == jnp.float32
  out32 = m32.apply(variables, x, train=False)
  # bf16 has ~3 significant digits: close, but not bit-identical.
  scale = float(jnp.abs(out32).max())
  assert float(jnp.abs(out16 - out32).max()) < 0.05 * scale
  assert not np.array_equal(out16, out32)
  out_t, upd = m16.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out_t.dtype == jnp.float32
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(upd))
  m = make_model(_cfg(dtype="bfloat16"), 2)
  assert m.dtype == jnp.bfloat16


@pytest.mark.parametrize("n2v2,up,extent", [(False, "nearest", 23), (True, "nearest", 26),
                                            (False, "bilinear", 26), (True, "bilinear", 29)])
def test_receptive_field_empirical(n2v2, up, extent):
  depth, k = 2, 3
  cfg = _cfg(depth=depth, kernel_size=k, n2v2=n2v2, upsampling=up)
  radius = receptive_field_radius(cfg)
  assert _receptive_field_extent(depth, k, n2v2, up == "bilinear") == extent
  assert radius % divisor(depth) == 0 and extent <= radius < extent + divisor(depth)

  size = 64
  model = UNet(depth=depth, kernel_size=k, n2v2=n2v2, features=8, upsampling=up)
  x = _x((1, size, size, 1))
  variables = _init(model, x)
  apply = jax.jit(lambda x: model.apply(variables, x, train=False))
  d = divisor(depth)
  c0 = 28  # aligned block of d x d output pixels covering every residue mod d

  # Gradient measurement: farthest input pixel with nonzero influence on each output.
  def block(x):
    return apply(x)[0, c0:c0 + d, c0:c0 + d, 0].reshape(-1)

  jac = np.asarray(jax.jacrev(block)(x))[:, 0, :, :, 0]
  measured = 0
  for i in range(d * d):
    oy, ox = c0 + i // d, c0 + i % d
    nz = np.argwhere(jac[i] != 0)
    assert len(nz) > 0
    measured = max(measured, int(np.abs(nz - [oy, ox]).max()))
  assert measured == extent  # the derivation is exact, the halo conservative

  # Perturbation: for each output pixel, replace every input pixel farther than `extent`
  # (Chebyshev distance) by large noise: that output stays bit-identical.
  noise = np.asarray(_x(x.shape, seed=5)) * 10
  ref = np.asarray(apply(x))
  yy, xx = np.mgrid[:size, :size]
  for i in range(d * d):
    oy, ox = c0 + i // d, c0 + i % d
    far = np.maximum(np.abs(yy - oy), np.abs(xx - ox)) > extent
    x_far = np.where(far[None, :, :, None], noise, np.asarray(x))
    assert np.asarray(apply(jnp.asarray(x_far)))[0, oy, ox, 0] == ref[0, oy, ox, 0]


@pytest.mark.parametrize("n2v2,up", [(False, "nearest"), (True, "nearest"), (True, "bilinear")])
def test_tiled_prediction_with_radius_matches_whole_image(n2v2, up):
  cfg = _cfg(n2v2=n2v2, upsampling=up)
  radius = receptive_field_radius(cfg)
  model = make_model(cfg, 1)
  size = 96
  x = _x((1, size, size, 1))
  variables = _init(model, x)
  whole = np.asarray(model.apply(variables, x, train=False))
  core0, core = 40, 8  # aligned core [40, 48) in both axes
  for margin, equal in [(radius, True), (radius - 2 * divisor(cfg.depth), False)]:
    lo, hi = core0 - margin, core0 + core + margin
    tile = model.apply(variables, x[:, lo:hi, lo:hi], train=False)
    got = np.asarray(tile)[:, margin:margin + core, margin:margin + core]
    assert np.allclose(got, whole[:, core0:core0 + core, core0:core0 + core],
                       rtol=0, atol=1e-5) == equal, margin


def test_bilinear_upsampling_is_pytorchs_align_corners_false():
  # Half-pixel centres, clamped at the edges: [0, 4] -> [0, 1, 3, 4] along each axis
  # (values PyTorch's nn.Upsample(scale_factor=2, mode='bilinear') gives).
  x = jnp.asarray([[0.0, 4.0], [8.0, 12.0]]).reshape(1, 2, 2, 1)
  got = np.asarray(_upsample_bilinear(x))[0, :, :, 0]
  row = np.array([0.0, 1.0, 3.0, 4.0])
  np.testing.assert_allclose(got, row[None, :] + 2 * row[:, None], atol=1e-6)
  x3 = jnp.arange(8.0).reshape(1, 2, 2, 2, 1)
  got3 = np.asarray(_upsample_bilinear(x3))
  assert got3.shape == (1, 4, 4, 4, 1) and np.isclose(got3.mean(), 3.5)


def test_csbdeep_widths_match_careamics_parameter_count():
  # Depth 2, 32 features, batch norm: CAREamics 0.3.5's UNet has 333,729 parameters.
  model = make_model(_cfg(features=32, upsampling="bilinear"), 1)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)),
                                             train=False))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"])) == 333729


def test_radius_formula_other_settings():
  # Extent formula checked by gradient for depth 2/k 3 above; spot-check its arithmetic.
  assert _receptive_field_extent(1, 5, False) == 17
  assert _receptive_field_extent(3, 3, False) == 51
  assert _receptive_field_extent(0, 3, False) == 2
  assert receptive_field_radius(_cfg(depth=3, n2v2=True)) == 64  # 58 -> 64


@pytest.mark.parametrize("shape", [(1, 18, 16, 1), (1, 16, 22, 1), (1, 8, 16, 14, 1)])
def test_non_divisible_size_raises(shape):
  model = UNet(ndim=len(shape) - 2, features=4)
  with pytest.raises(ValueError, match=r"divisible by 4.*" + str(shape[1:-1]).replace(
      "(", r"\(").replace(")", r"\)")):
    _init(model, jnp.zeros(shape))


def test_bad_input_rank_and_kernel_raise():
  with pytest.raises(ValueError, match="spatial axes"):
    _init(UNet(ndim=2, features=4), jnp.zeros((1, 8, 16, 16, 1)))
  with pytest.raises(ValueError, match="odd"):
    _init(UNet(kernel_size=4, features=4), jnp.zeros((1, 16, 16, 1)))


@pytest.mark.parametrize("vendor,slices,minimum", [("AuthenticAMD", 8, 8 * 64 * 64),
                                                   ("GenuineIntel", 32, 4 * 64 * 64),
                                                   ("", 32, 4 * 64 * 64)])
def test_auto_batch_chunks_follow_the_cpu_vendor(monkeypatch, vendor, slices, minimum):
  # 0 = auto: the slices and minimum slice size measured for the CPU vendor; an explicit
  # count is kept as given.
  monkeypatch.setattr(conv, "cpu_vendor", lambda: vendor)
  assert conv.batch_chunks_of(_cfg(batch_chunks=0)) == (slices, minimum)
  assert conv.batch_chunks_of(_cfg(batch_chunks=3)) == (3, 0)
  with pytest.raises(ValueError, match="batch_chunks=-1"):
    conv.batch_chunks_of(_cfg(batch_chunks=-1))
  model = make_model(_cfg(batch_chunks=0), 1)
  assert (model.batch_chunks, model.min_slice_voxels) == (slices, minimum)


def test_slice_count():
  amd = 8 * 64 * 64
  # training batches of 64x64 patches on AMD: slices of >= 8 patches, at least 2
  assert [conv.slice_count(8, amd, (b, 64, 64, 1)) for b in (1, 4, 8, 16, 32, 64, 128, 256)] \
      == [1, 2, 2, 2, 4, 8, 8, 8]
  assert conv.slice_count(8, amd, (12, 64, 64, 1)) == 2  # a divisor of the batch
  assert conv.slice_count(8, amd, (16, 16, 64, 64, 1)) == 8  # 3D patches are large
  assert conv.slice_count(8, amd, (8, 568, 568, 1)) == 8  # prediction tiles (TTA)
  # elsewhere: slices of >= 4 patches, but at least 8 (a quarter of the 32 asked)
  intel = 4 * 64 * 64
  assert [conv.slice_count(32, intel, (b, 64, 64, 1))
          for b in (1, 4, 8, 12, 16, 32, 64, 128, 256)] == [1, 4, 8, 4, 8, 8, 16, 32, 32]
  assert conv.slice_count(32, intel, (4, 16, 64, 64, 1)) == 4  # 3D patches are large
  assert conv.slice_count(32, intel, (32, 312, 312, 1)) == 32  # prediction tiles
  # no minimum: gcd(chunks, batch), as before
  assert [conv.slice_count(8, 0, (b, 64, 64, 1)) for b in (1, 4, 12, 16, 128)] \
      == [1, 4, 4, 8, 8]
  for b in range(1, 70):
    for chunks in (1, 2, 3, 4, 8):
      k = conv.slice_count(chunks, amd, (b, 32, 32, 2))
      assert b % k == 0 and chunks % k == 0 and k >= 1


def test_cpu_vendor_reads_proc_cpuinfo():
  vendor = conv.cpu_vendor()
  assert isinstance(vendor, str)
  if os.path.exists("/proc/cpuinfo"):
    assert vendor and vendor in open("/proc/cpuinfo").read()


@pytest.mark.parametrize("batch_norm", [True, False])
def test_batch_chunks_change_speed_not_results(batch_norm):
  # model.batch_chunks: convs (BN) or the whole network (no BN) on batch slices. Outputs,
  # BatchNorm statistics (still over the whole batch) and gradients equal the unsliced ones.
  x = _x((8, 16, 16, 2))
  one = UNet(out_channels=2, features=4, batch_norm=batch_norm, batch_chunks=1)
  # 8 slices asked, at least 2 x 16 x 16 voxels each: 4 slices of the batch of 8
  four = UNet(out_channels=2, features=4, batch_norm=batch_norm, batch_chunks=8,
              min_slice_voxels=2 * 16 * 16)
  assert conv.slice_count(8, 2 * 16 * 16, x.shape) == 4
  variables = _init(one, x)

  def run(model):
    def loss(params):
      v = {**variables, "params": params}
      if batch_norm:
        out, upd = apply_model(model, v, x, train=True, mutable=["batch_stats"])
      else:
        out, upd = apply_model(model, v, x, train=True), {}
      return (out ** 2).mean(), (out, upd)
    (value, (out, upd)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables["params"])
    return out, upd, grads

  (o1, u1, g1), (o4, u4, g4) = run(one), run(four)
  np.testing.assert_allclose(o1, o4, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves((u1, g1)), jax.tree.leaves((u4, g4))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert len(jax.tree.leaves(g1)) > 10
  # The sliced program really holds separate convolutions (4 per conv layer or more).
  hlo = jax.jit(lambda v: apply_model(four, v, x, train=False)).lower(variables).as_text()
  hlo1 = jax.jit(lambda v: apply_model(one, v, x, train=False)).lower(variables).as_text()
  assert hlo.count("convolution") >= 4 * hlo1.count("convolution") - 4


@pytest.mark.parametrize("ndim", [2, 3])
def test_max_pool2_equals_flax_max_pool(ndim):
  x = _x((2,) + (4,) * (ndim - 1) + (6, 3))
  ref = nn.max_pool(x, (2,) * ndim, strides=(2,) * ndim, padding="VALID")
  np.testing.assert_array_equal(np.asarray(unet._max_pool2(x)), np.asarray(ref))


@pytest.mark.parametrize("ndim,independent", [(2, False), (3, False), (2, True)])
def test_fold_batch_norm_keeps_the_output(ndim, independent):
  model = UNet(ndim=ndim, out_channels=2, depth=1, features=4, batch_norm=True,
               independent_channels=independent, batch_chunks=2)
  x = _x((4,) + (8,) * ndim + (2,))
  variables = model.init(jax.random.key(0), x, train=False)
  # Running statistics and affine far from the identity, as after training.
  rng = np.random.default_rng(0)
  rand = lambda a, lo, hi: jnp.asarray(rng.uniform(lo, hi, a.shape), a.dtype)
  params = {k: ({"scale": rand(v["scale"], 0.5, 2.0), "bias": rand(v["bias"], -1, 1)}
                if "_bn" in k else v) for k, v in variables["params"].items()}
  stats = {k: {"mean": rand(v["mean"], -1, 1), "var": rand(v["var"], 0.2, 3.0)}
           for k, v in variables["batch_stats"].items()}
  variables = {"params": params, "batch_stats": stats}
  folded_model, folded = unet.fold_batch_norm(model, variables)
  assert not folded_model.batch_norm and "batch_stats" not in folded
  assert not any("_bn" in k for k in folded["params"])
  want = model.apply(variables, x, train=False)
  got = unet.apply_model(folded_model, folded, x, train=False)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
  assert unet.fold_batch_norm(folded_model, folded)[1] is folded  # nothing left to fold


@pytest.mark.parametrize("ndim,slices,groups", [(2, 1, 1), (2, 2, 1), (3, 1, 1), (3, 2, 1),
                                                (2, 1, 2), (3, 1, 2)])
def test_conv_equals_flax_conv_of_the_concatenation(ndim, slices, groups):
  skip, up = _x((2,) + (6,) * ndim + (4,), seed=1), _x((2,) + (6,) * ndim + (6,), seed=2)
  joint = jnp.concatenate([skip, up], axis=-1)
  flax_conv = nn.Conv(4, (3,) * ndim, padding="SAME", feature_group_count=groups,
                      kernel_init=nn.initializers.he_normal())
  ours = conv.Conv(4, (3,) * ndim, groups)
  parts = [skip, up] if groups == 1 else joint  # grouped convs take one input
  key = jax.random.key(3)
  want_vars = flax_conv.init(key, joint)
  # The same parameters, drawn the same: workdirs and seeds give what they gave before.
  jax.tree.map(np.testing.assert_array_equal, ours.init(key, parts), want_vars)
  want_vars = jax.tree.map(lambda a: a + 0.1, want_vars)  # a nonzero bias
  want = flax_conv.apply(want_vars, joint)
  got = conv.chunked_conv(lambda p: ours.apply(want_vars, p), parts, slices)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  half = conv.Conv(4, (3,) * ndim, groups, jnp.bfloat16).apply(want_vars, parts)
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(half, np.float32), np.asarray(want), rtol=0.05, atol=0.05)
