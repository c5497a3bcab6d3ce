"""Where the training step's time goes: a jax.profiler trace of the jitted step, per HLO op.

    .venv/bin/python experiments/benchmark/profile_step.py                      # equal config, batch 16
    .venv/bin/python experiments/benchmark/profile_step.py --batch 128 --steps 3
    .venv/bin/python experiments/benchmark/profile_step.py --n2v2 --no-batch-norm --upsampling nearest

It builds the step exactly as `benchmark.py` (and so `training.trainer`) does, runs `--steps` steps
under `jax.profiler.trace` (perfetto JSON), and adds up the duration of every XLA:CPU thunk
by the HLO instruction it runs. Each instruction is put in one category from its opcode and
the JAX source op names in its metadata (for a fusion: those of the ops fused into it):

  conv fwd / conv input grad / conv weight grad (a backward conv whose output is the kernel
  shape), batch norm, up-sampling, concatenation, pooling, masking and patch sampling,
  loss, Adam update, transposes and copies, other.

Thunks of one step can run side by side on the 2 cores, so the categories add up to more
than the step's wall time; the table gives both (ms per patch). Prints a Markdown table and
one JSON line.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CATEGORIES = ["conv fwd", "conv input grad", "conv weight grad", "batch norm", "up-sampling",
              "concatenation", "pooling", "masking and sampling", "loss", "Adam update",
              "transposes and copies", "other"]

_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([\w\-]+)\((.*)$")


def parse_hlo(text: str) -> dict:
  """{instruction name: (opcode, result type, [op_name, ...] incl. fused ops)}."""
  comps, cur = {}, None
  for line in text.splitlines():
    if line.startswith("%") or line.startswith("ENTRY"):
      cur = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
      comps[cur] = []
      continue
    m = _INSTR.match(line)
    if m and cur is not None:
      comps[cur].append((m.group(1), m.group(3), m.group(2), m.group(4)))
  info = {}
  for comp, instrs in comps.items():
    for name, opcode, rtype, rest in instrs:
      ops = re.findall(r'op_name="([^"]*)"', rest)
      called = re.findall(r"calls=%([\w.\-]+)", rest)
      fused_opcodes = []
      for c in called:
        for _, op2, _, rest2 in comps.get(c, []):
          ops += re.findall(r'op_name="([^"]*)"', rest2)
          fused_opcodes.append(op2)
      info[name] = (opcode, rtype, ops, fused_opcodes)
  return info


def categorize(opcode: str, rtype: str, ops: list, fused: list, kernel_shapes: set) -> str:
  text = " ".join(ops)
  all_ops = {opcode, *fused}
  if "convolution" in all_ops or "conv_general_dilated" in text and opcode == "custom-call":
    dims = re.findall(r"\[([\d,]*)\]", rtype)
    # XLA writes the weight gradient in a permuted kernel layout, e.g. (Cin, 3, 3, Cout);
    # judged by that shape first, since some of its fusions carry no op_name metadata
    # (until 2026-12-07 those were counted as forward convolutions)
    if dims and tuple(sorted(int(d) for d in dims[0].split(",") if d)) in kernel_shapes:
      return "conv weight grad"
    if "transpose(" not in text:
      return "conv fwd"
    return "conv input grad"
  if "transpose" in all_ops:  # layout changes (activations to channel-major for the
    return "transposes and copies"  # weight gradient), often with elementwise work fused in
  if "_bn" in text or "batch_norm" in text.lower():
    return "batch norm"
  for key, cat in (("_upsample", "up-sampling"), ("upsample", "up-sampling"),
                   ("max_blur_pool", "pooling"), ("_max_pool", "pooling"),
                   ("_blur2", "pooling"), ("mask", "masking and sampling"),
                   ("sample_batch", "masking and sampling"), ("random", "masking and sampling"),
                   ("threefry", "masking and sampling"), ("loss", "loss"),
                   ("adam", "Adam update"), ("clip_by_global_norm", "Adam update"),
                   ("_concat", "concatenation")):
    if key in text:
      return cat
  if all_ops <= {"concatenate", "parameter", "bitcast", "copy"} and "concatenate" in all_ops:
    return "concatenation"
  if all_ops <= {"transpose", "copy", "bitcast", "parameter", "reverse"}:
    return "transposes and copies"
  return "other"


def trace_events(logdir: str) -> list:
  files = sorted(glob.glob(os.path.join(logdir, "**", "perfetto_trace.json.gz"), recursive=True))
  with gzip.open(files[-1]) as f:
    d = json.load(f)
  return d["traceEvents"] if isinstance(d, dict) else d


def main() -> None:
  import benchmark
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--steps", type=int, default=5, help="profiled steps (after --warmup)")
  p.add_argument("--warmup", type=int, default=2)
  benchmark.add_network_args(p)
  p.add_argument("--top", type=int, default=0, help="also print the N slowest instructions")
  args = p.parse_args()
  benchmark.ablate(args.ablate)
  import jax
  import numpy as np
  step, state, images, sizes, key, compile_s, _ = benchmark.build_train(args)
  info = parse_hlo(step.as_text())
  kernel_shapes = {tuple(sorted(leaf.shape)) for leaf in jax.tree.leaves(state.variables["params"])
                   if leaf.ndim >= 4}
  for _ in range(args.warmup):
    state, metrics = step(state, images, sizes, key)
  jax.block_until_ready(metrics)
  walls = []
  logdir = tempfile.mkdtemp(prefix="n2v_profile_")
  with jax.profiler.trace(logdir, create_perfetto_trace=True):
    for _ in range(args.steps):
      t0 = time.perf_counter()
      state, metrics = step(state, images, sizes, key)
      jax.block_until_ready(metrics)
      walls.append(time.perf_counter() - t0)
  per_instr = collections.Counter()
  for e in trace_events(logdir):
    if e.get("ph") == "X" and e.get("name") in info:
      per_instr[e["name"]] += float(e.get("dur", 0.0))  # microseconds
  norm = 1e3 * args.steps * args.batch  # us -> ms per patch
  per_cat = collections.Counter()
  for name, us in per_instr.items():
    per_cat[categorize(*info[name], kernel_shapes)] += us / norm
  wall = float(np.median(walls)) * 1e3 / args.batch
  total = sum(per_cat.values())
  print(f"\nbatch {args.batch}, {args.patch}x{args.patch}, depth {args.depth}, "
        f"{args.features} features, BN={not args.no_batch_norm}, n2v2={args.n2v2}, "
        f"{args.upsampling}; jax {jax.__version__}; step wall {wall:.2f} ms/patch "
        f"({1e3 / wall:.1f} patches/s under the profiler); thunk time {total:.2f} ms/patch\n")
  print("| part | ms per patch | share of thunk time |\n|---|---|---|")
  for cat in CATEGORIES:
    if per_cat[cat]:
      print(f"| {cat} | {per_cat[cat]:.2f} | {100 * per_cat[cat] / total:.0f} % |")
  if args.top:
    print()
    for name, us in per_instr.most_common(args.top):
      opcode, rtype, ops, _ = info[name]
      print(f"{us / norm:7.3f} ms  {categorize(*info[name], kernel_shapes):22s} {name} "
            f"{opcode} {rtype[:40]} {(ops[:1] or [''])[0][-70:]}")
  print(json.dumps({"batch": args.batch, "wall_ms_per_patch": round(wall, 3),
                    "thunk_ms_per_patch": round(total, 3),
                    "parts": {k: round(v, 3) for k, v in per_cat.items()},
                    "jax": jax.__version__, "compile_s": round(compile_s, 1)}))


if __name__ == "__main__":
  main()
