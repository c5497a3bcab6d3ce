"""Each 3x3 convolution of the benchmark U-Net (depth 2, 32 features) by every algorithm and
precision of n2v_jax.nn.conv_algorithms: the forward pass alone and the forward pass with
both gradients, jitted, median of --repeats calls. One JSON line per (layer, algorithm,
precision) on stdout, then a table (ms; the fastest of a layer in bold).

    .venv/bin/python experiments/benchmark/conv_algorithms.py [--batch 16] [--patch 64]
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from n2v_jax.nn import conv_algorithms

ALGORITHMS = ("direct", "im2col", "winograd", "winograd2")
PRECISIONS = ("float32", "bf16_products")


def layers(features: int, depth: int, patch: int, in_channels: int = 1) -> list[tuple]:
  """(name, spatial edge, C in, F out) of the U-Net's 3x3 convs (a decoder's first conv is
  computed as one conv per part: skip and up-sampled)."""
  out, c = [], in_channels
  for level in range(depth + 1):
    f, edge = features * 2 ** level, patch // 2 ** level
    out += [(f"enc{level}a", edge, c, f), (f"enc{level}b", edge, f, f)]
    c = f
  for level in reversed(range(depth)):
    f, edge = features * 2 ** level, patch // 2 ** level
    out += [(f"dec{level}skip", edge, f, f), (f"dec{level}up", edge, 2 * f, f),
            (f"dec{level}b", edge, f, f)]
  return out


def _time(fn, args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)) * 1e3


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--patch", type=int, default=64)
  p.add_argument("--features", type=int, default=32)
  p.add_argument("--depth", type=int, default=2)
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--only", default="", help="comma-separated layer names")
  args = p.parse_args()
  rng = np.random.default_rng(0)
  rows = []
  for name, edge, c, f in layers(args.features, args.depth, args.patch):
    if args.only and name not in args.only.split(","):
      continue
    x = jnp.asarray(rng.normal(size=(args.batch, edge, edge, c)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, c, f)) / np.sqrt(9 * c), jnp.float32)
    for algorithm in ALGORITHMS:
      for precision in PRECISIONS if algorithm != "direct" else PRECISIONS[:1]:
        conv = lambda x, k: conv_algorithms.conv2d(x, k, algorithm, precision)
        fwd = jax.jit(conv)
        both = jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), argnums=(0, 1)))
        row = {"layer": name, "shape": [args.batch, edge, edge, c, f], "algorithm": algorithm,
               "precision": precision, "fwd_ms": round(_time(fwd, (x, k), args.repeats), 3),
               "fwd_bwd_ms": round(_time(both, (x, k), args.repeats), 3),
               "cpus": os.cpu_count(), "jax": jax.__version__}
        print(json.dumps(row), flush=True)
        rows.append(row)
  names = list(dict.fromkeys(r["layer"] for r in rows))
  variants = list(dict.fromkeys((r["algorithm"], r["precision"]) for r in rows))
  print("\n| layer (B, H, W, C, F) | " + " | ".join(
      f"{a}{' bf16' if pr != 'float32' else ''}" for a, pr in variants) + " |")
  print("|---" * (len(variants) + 1) + "|")
  for key in ("fwd_ms", "fwd_bwd_ms"):
    for n in names:
      mine = {(r["algorithm"], r["precision"]): r for r in rows if r["layer"] == n}
      best = min(r[key] for r in mine.values())
      cells = [(f"**{mine[v][key]:.2f}**" if mine[v][key] == best else f"{mine[v][key]:.2f}")
               for v in variants]
      shape = tuple(next(iter(mine.values()))["shape"])
      print(f"| {n} {shape} {'fwd' if key == 'fwd_ms' else 'fwd+grads'} | "
            + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
