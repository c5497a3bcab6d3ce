"""Forward + backward of one training-mode batch norm, three ways, at U-Net activation shapes.

    .venv/bin/python experiments/benchmark/batch_norm.py

Prints ms (and ms per patch) of: flax's nn.BatchNorm (what models.UNet uses), the same
statistics as dot products with a ones vector, and plain jnp means with the one-pass
variance. All three give the same values (checked). Run it idle. It answers whether batch
norm on its own is worth rewriting (experiments/benchmark/README.md, 2026-12-03: no).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ceiling import median_seconds


def bn_flax(x, s, b):
  bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  v = {"params": {"scale": s, "bias": b},
       "batch_stats": {"mean": jnp.zeros_like(s), "var": jnp.ones_like(s)}}
  return bn.apply(v, x, mutable=["batch_stats"])[0]


def bn_dot(x, s, b):
  c = x.shape[-1]
  x2 = x.reshape(-1, c)
  ones = jnp.ones((x2.shape[0],), x.dtype)
  mean = ones @ x2 / x2.shape[0]
  var = jnp.maximum(ones @ (x2 * x2) / x2.shape[0] - mean * mean, 0)
  return ((x2 - mean) * (s * jax.lax.rsqrt(var + 1e-5)) + b).reshape(x.shape)


def bn_mean(x, s, b):
  mean = x.mean((0, 1, 2))
  var = jnp.maximum((x * x).mean((0, 1, 2)) - mean * mean, 0)
  return (x - mean) * (s * jax.lax.rsqrt(var + 1e-5)) + b


for shape in [(16, 64, 64, 32), (16, 32, 32, 64), (128, 64, 64, 32)]:
  x = jax.random.normal(jax.random.key(0), shape)
  s, b = jnp.full(shape[-1], 1.3), jnp.full(shape[-1], 0.1)
  g = jax.random.normal(jax.random.key(1), shape)
  ref = None
  for name, f in [("flax", bn_flax), ("dot", bn_dot), ("mean", bn_mean)]:
    fwd_bwd = jax.jit(lambda x, s, b, g, f=f: jax.vjp(f, x, s, b)[1](g))
    out = fwd_bwd(x, s, b, g)
    if ref is None:
      ref = out
    for o, r in zip(out, ref):
      np.testing.assert_allclose(o, r, rtol=2e-3, atol=2e-3)
    t = median_seconds(fwd_bwd, x, s, b, g, repeats=15)
    print(shape, name, f"{t * 1e3:.2f} ms fwd+bwd, {t / shape[0] * 1e3:.3f} ms/patch")
