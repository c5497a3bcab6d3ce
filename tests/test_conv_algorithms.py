"""Every convolution algorithm (n2v_jax.nn.conv_algorithms) against XLA's direct one:
forward, input gradient and weight gradient, at the U-Net's shapes and at sizes that are not
multiples of a Winograd tile, in float32 and with bfloat16 products; the U-Net with 'auto'
against 'direct'."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n2v_jax.errors import N2VError
from n2v_jax.nn import conv, conv_algorithms, unet
from tests.helpers import tiny_config

# Of the largest |value| of the reference, measured up to 1.9e-6 (float32) and 5.7e-3
# (bfloat16 operands: 8 significant bits) on these shapes.
BOUND = {"float32": 1e-5, "bf16_products": 2e-2}
ALGORITHMS = ["im2col", "winograd", "winograd2"]
SHAPES = [(2, 16, 16, 8, 4),  # whole tiles
          (1, 13, 11, 3, 5),  # odd sizes: tiles cut at both far edges
          (2, 8, 8, 16, 32),  # a deep level: 8 x 8
          (1, 5, 7, 1, 4)]    # smaller than one F(4, 3) tile, one input channel


def _relative(a, b):
  return float(jnp.abs(a - b).max() / jnp.abs(b).max())


# every algorithm and precision on whole tiles and on cut tiles; the other shapes in float32
CASES = [(shape, a, p) for shape in SHAPES[:2] for a in ALGORITHMS
         for p in ("float32", "bf16_products")] + [
             (shape, a, "float32") for shape in SHAPES[2:] for a in ALGORITHMS]


@pytest.mark.parametrize("shape, algorithm, precision", CASES, ids=str)
def test_forward_and_both_gradients_match_direct(shape, algorithm, precision):
  b, h, w, c, f = shape
  rng = np.random.default_rng(sum(shape))
  x = jnp.asarray(rng.normal(size=(b, h, w, c)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, c, f)), jnp.float32)
  target = jnp.asarray(rng.normal(size=(b, h, w, f)), jnp.float32)
  loss = lambda fn: lambda x, k: jnp.sum(fn(x, k) * target)
  mine = lambda x, k: conv_algorithms.conv2d(x, k, algorithm, precision)
  # F(4, 3) keeps float32 products (module doc): its bound is float32's
  bound = BOUND["float32" if algorithm == "winograd" else precision]
  assert _relative(mine(x, kernel), conv_algorithms.direct(x, kernel)) < bound
  got = jax.grad(loss(mine), argnums=(0, 1))(x, kernel)
  want = jax.grad(loss(conv_algorithms.direct), argnums=(0, 1))(x, kernel)
  assert _relative(got[0], want[0]) < bound  # input gradient
  assert _relative(got[1], want[1]) < bound  # weight gradient
  if precision == "float32":  # and the bound is not loose: bf16 products do exceed it
    assert bound < 1e-4


def test_bf16_products_are_bfloat16_operands():
  """The bound above would also hold if bf16_products did nothing: it must change results."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(1, 8, 8, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 16, 8)), jnp.float32)
  ref = conv_algorithms.direct(x, k)
  for algorithm in ("im2col", "winograd2"):
    assert _relative(conv_algorithms.conv2d(x, k, algorithm, "bf16_products"), ref) > 1e-4
  assert _relative(conv_algorithms.conv2d(x, k, "winograd", "bf16_products"), ref) < 1e-5


def test_other_kernel_sizes_and_bad_choices():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(1, 9, 9, 2)), jnp.float32)
  k5 = jnp.asarray(rng.normal(size=(5, 5, 2, 3)), jnp.float32)
  for algorithm in ALGORITHMS:  # Winograd is for 3x3: other kernels go by im2col
    assert _relative(conv_algorithms.conv2d(x, k5, algorithm), conv_algorithms.direct(x, k5)) < 1e-5
  with pytest.raises(N2VError, match="model.conv_algorithm='fft'"):
    conv_algorithms.check("fft", "float32")
  with pytest.raises(N2VError, match="model.conv_precision='int8'"):
    unet.make_model(tiny_config(**{"model.conv_precision": "int8"}).model, 1)


def test_unet_same_parameters_and_outputs_as_direct(monkeypatch):
  """Same parameter names, shapes and initial values (workdirs and exports unchanged); the
  same outputs and gradients up to float rounding. 'auto' as on an Intel CPU: Winograd at
  the levels of edge <= 16 with >= 64 channels."""
  algorithm, nd = "auto", 2
  monkeypatch.setattr(conv, "cpu_vendor", lambda: "GenuineIntel")
  used = []
  original = conv_algorithms.winograd
  monkeypatch.setattr(conv_algorithms, "winograd",
                      lambda *a: used.append(a[0].shape) or original(*a))
  # the benchmark network's widths (its deepest level, 64 -> 128 -> 64, meets the rule)
  config = tiny_config(**{"model.depth": 2, "model.batch_chunks": 1, "model.features": 32})
  shape = (2, 32, 32, 1)
  x = jnp.asarray(np.random.default_rng(2).normal(size=shape), jnp.float32)
  config.model.conv_algorithm = "direct"
  direct = unet.make_model(config.model, 1, nd)
  config.model.conv_algorithm = algorithm
  other = unet.make_model(config.model, 1, nd)
  v_direct = direct.init(jax.random.key(0), x, train=False)
  v_other = other.init(jax.random.key(0), x, train=False)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), v_direct, v_other))
  assert (algorithm == "auto") == bool(used) and all(s[1] <= 16 for s in used)

  def loss(model):
    return lambda v: jnp.sum(model.apply(v, x, train=True, mutable=["batch_stats"])[0] ** 2)
  out_d, out_o = direct.apply(v_direct, x, train=False), other.apply(v_direct, x, train=False)
  assert _relative(out_o, out_d) < 1e-5
  flat = lambda tree: jnp.concatenate([a.ravel() for a in jax.tree.leaves(tree)])
  g_d, g_o = jax.grad(loss(direct))(v_direct), jax.grad(loss(other))(v_direct)
  assert _relative(flat(g_o), flat(g_d)) < 1e-4  # (a bias before batch norm: gradient 0)


@pytest.mark.parametrize("algorithm", ["im2col", "winograd"])
def test_3d_is_one_2d_convolution_per_depth_tap_by_any_algorithm(algorithm):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(1, 5, 9, 7, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 3, 3, 4)), jnp.float32)
  want = jax.lax.conv_general_dilated(x, k, (1, 1, 1), "SAME",
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  assert _relative(conv.conv_same(x, k, 1, algorithm), want) < 1e-5


def test_auto_picks_from_the_table(monkeypatch):
  monkeypatch.setattr(conv, "cpu_vendor", lambda: "GenuineIntel")
  assert conv.auto_algorithm((16, 16, 16, 64), 128, (3, 3)) == "winograd"
  assert conv.auto_algorithm((16, 32, 32, 64), 64, (3, 3)) == "direct"  # too wide
  assert conv.auto_algorithm((16, 16, 16, 32), 64, (3, 3)) == "direct"  # too few channels
  assert conv.auto_algorithm((16, 16, 16, 64), 128, (1, 1)) == "direct"  # not 3x3
  monkeypatch.setattr(conv, "cpu_vendor", lambda: "SomeVendor")
  assert conv.auto_algorithm((16, 16, 16, 64), 128, (3, 3)) == "direct"  # not measured
