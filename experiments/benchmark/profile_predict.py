"""Where the prediction network's time goes: a jax.profiler trace of one call on tiles.

    .venv/bin/python experiments/benchmark/profile_predict.py                 # one 568x568 tile
    .venv/bin/python experiments/benchmark/profile_predict.py --size 1088 --top 30
    .venv/bin/python experiments/benchmark/profile_predict.py --ablate skip_conv

The network is `benchmark.py`'s (same switches), batch norm folded as `inference.predictor.Predictor`
runs it; the tile of 568 is what the default plan uses for a 1024x1024 image. Prints the
call's wall time, GFLOP/s (XLA's cost analysis), MPix/s of the tile, thunk time per
`profile_step.py` category and the slowest HLO instructions with their JAX op names.
"""

import argparse
import collections
import os
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
  import benchmark
  import profile_step
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  benchmark.add_network_args(p)
  p.add_argument("--size", type=int, default=568, help="tile edge (2D, one channel)")
  p.add_argument("--tiles", type=int, default=1, help="tiles per call")
  p.add_argument("--calls", type=int, default=3, help="profiled calls")
  p.add_argument("--top", type=int, default=15)
  args = p.parse_args()
  benchmark.ablate(args.ablate)
  import jax
  import numpy as np
  from n2v_jax.nn import unet
  config = benchmark._config(args)
  model = unet.make_model(config.model, 1)
  variables = jax.jit(lambda k: model.init(k, jax.numpy.zeros((1, 16, 16, 1)), train=False))(
      jax.random.key(0))
  pred = benchmark._predictor(config, variables, 1, 2)
  folded = pred._inference[1]
  x = jax.numpy.asarray(np.random.default_rng(0).normal(
      size=(args.tiles, args.size, args.size, 1)).astype(np.float32))
  compiled = pred.apply.lower(folded, x).compile()
  cost = compiled.cost_analysis()
  flops = (cost if isinstance(cost, dict) else cost[0])["flops"]
  info = profile_step.parse_hlo(compiled.as_text())
  for _ in range(2):
    jax.block_until_ready(pred.apply(folded, x))
  walls = []
  for _ in range(5):
    t0 = time.perf_counter()
    jax.block_until_ready(pred.apply(folded, x))
    walls.append(time.perf_counter() - t0)
  wall = float(np.median(walls))
  print(f"{args.tiles} tile(s) of {args.size}x{args.size}: {wall * 1e3:.1f} ms, "
        f"{flops / wall / 1e9:.0f} GFLOP/s ({flops / 1e9:.2f} GFLOP), "
        f"{args.tiles * args.size**2 / wall / 1e6:.3f} MPix/s of tile")
  logdir = tempfile.mkdtemp(prefix="n2v_profile_")
  with jax.profiler.trace(logdir, create_perfetto_trace=True):
    for _ in range(args.calls):
      jax.block_until_ready(pred.apply(folded, x))
  per_instr = collections.Counter()
  for e in profile_step.trace_events(logdir):
    if e.get("ph") == "X" and e.get("name") in info:
      per_instr[e["name"]] += float(e.get("dur", 0.0)) / 1e3 / args.calls  # ms per call
  groups = collections.Counter()  # profile_step's categories (no gradients here)
  for name, ms in per_instr.items():
    groups[profile_step.categorize(*info[name], set())] += ms
  print(f"thunk time {sum(per_instr.values()):.1f} ms per call: " +
        ", ".join(f"{k} {v:.1f}" for k, v in groups.most_common()))
  for name, ms in per_instr.most_common(args.top):
    opcode, rtype, ops, _ = info[name]
    print(f"{ms:7.2f} ms  {name:28s} {opcode:12s} {rtype[:36]:36s} {(ops[:1] or [''])[0][-60:]}")


if __name__ == "__main__":
  main()
