"""How fast can this machine go? The compute ceiling behind the speed targets.

    .venv/bin/python experiments/benchmark/ceiling.py

Prints one JSON line per figure:
- `step_gflop`: floating-point work of one training step and of one forward pass of the
  benchmark's network (depth 2, 32 features, batch norm, bilinear; XLA's own cost
  analysis of the compiled programs), per patch / per pixel;
- `matmul`: float32 GFLOP/s of one large matrix product (2048 x 2048) in XLA: about the
  most this CPU computes;
- `conv`: XLA:CPU's 3x3 convolution GFLOP/s for the network's layer shapes: forward, input
  gradient and weight gradient (each the same number of FLOPs), and the forward as
  im2col + matmul for comparison.
A framework that trains at P patches/s sustains P * gflop_per_patch GFLOP/s: comparing
that with `matmul` shows how much room a target leaves (experiments/benchmark/README.md).
Run it on an otherwise idle machine.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def median_seconds(fn, *args, repeats: int = 7) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def step_gflop(batch: int = 16, patch: int = 64) -> dict:
  from n2v_jax.nn import unet
  model = unet.UNet(depth=2, features=32, batch_norm=True, upsampling="bilinear")
  x = jnp.zeros((batch, patch, patch, 1))
  variables = model.init(jax.random.key(0), x, train=False)

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x, train=True,
                         mutable=["batch_stats"])
    return jnp.mean(out ** 2)

  fwd = jax.jit(lambda v: model.apply(v, x, train=False)).lower(variables).compile()
  grad = jax.jit(jax.grad(loss)).lower(variables["params"]).compile()
  f, g = fwd.cost_analysis()["flops"], grad.cost_analysis()["flops"]
  return {"figure": "step_gflop", "batch": batch, "patch": patch,
          "train_gflop_per_patch": round(g / batch / 1e9, 3),
          "forward_kflop_per_pixel": round(f / (batch * patch * patch) / 1e3, 1)}


def matmul(n: int = 2048) -> dict:
  a = jax.random.normal(jax.random.key(0), (n, n))
  s = median_seconds(jax.jit(lambda a: a @ a), a)
  return {"figure": "matmul", "n": n, "gflop_per_s": round(2 * n**3 / s / 1e9, 1)}


def conv(shape: tuple[int, ...], c_out: int) -> dict:
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], c_out))
  flop = 2 * np.prod(shape[:-1]) * 9 * shape[-1] * c_out

  def xla(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def im2col(x, w):
    h, wd = shape[1:3]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + h, j:j + wd] for i in range(3) for j in range(3)], -1)
    return cols @ w.reshape(-1, c_out)

  def grads(x, w, dy, slices=1):  # (input gradient, weight gradient), batch in slices
    parts = [jax.vjp(xla, xs, w)[1](g) for xs, g in zip(jnp.split(x, slices),
                                                        jnp.split(dy, slices))]
    return jnp.concatenate([p[0] for p in parts]), sum(p[1] for p in parts)

  dy = jax.random.normal(jax.random.key(2), shape[:-1] + (c_out,))
  rate = lambda fn, *args: round(flop / median_seconds(jax.jit(fn), *args) / 1e9, 1)
  slices = min(8, shape[0])  # model.batch_chunks' CPU default
  return {"figure": "conv", "input": list(shape), "c_out": c_out,
          "xla_gflop_per_s": rate(xla, x, w),
          "xla_input_grad_gflop_per_s": rate(lambda x, w, dy: grads(x, w, dy)[0], x, w, dy),
          "xla_weight_grad_gflop_per_s": rate(lambda x, w, dy: grads(x, w, dy)[1], x, w, dy),
          f"xla_weight_grad_{slices}_slices_gflop_per_s": rate(
              lambda x, w, dy: grads(x, w, dy, slices)[1], x, w, dy),
          "im2col_gflop_per_s": rate(im2col, x, w)}


def main() -> None:
  print(json.dumps(step_gflop()), flush=True)
  print(json.dumps(matmul()), flush=True)
  # The network's 3x3 layers per level, for 4 prediction tiles of 512 x 512 and for a
  # training batch of 16 patches of 64 x 64 (level 0 holds ~45 % of the FLOPs, level 1
  # ~44 %, the bottom ~11 %).
  for shape, c_out in (((4, 512, 512, 32), 32), ((4, 512, 512, 64), 32),
                       ((4, 256, 256, 64), 64), ((4, 128, 128, 128), 64),
                       ((16, 64, 64, 32), 32), ((16, 64, 64, 64), 32),
                       ((16, 32, 32, 64), 64), ((16, 16, 16, 128), 64)):
    print(json.dumps(conv(shape, c_out)), flush=True)
  print(json.dumps({"figure": "versions", "jax": jax.__version__,
                    "device_kind": jax.devices()[0].device_kind, "cpus": os.cpu_count()}))


if __name__ == "__main__":
  main()
