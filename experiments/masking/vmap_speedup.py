"""Speed-up of K models in one compiled program (n2v_jax.multi) over K sequential runs.

    python experiments/masking/vmap_speedup.py [--models 3] [--steps 200] [--vary_perc_pix]

Both sides train the masking study's base config (seeds 0..K-1) end to end in this one
process (with --vary_perc_pix, model i also masks mask.perc_pix = PERC_PIX[i % 3] percent of
its pixels: one masking copy per model inside the program), from data loading to summary.json (compilation, checkpoints and the final
denoising included); no persistent compilation cache. Prints wall times, the steady-state
training throughput (patches/s over all models, compilation excluded) and the ratios,
for both program modes: 'vmap' (models side by side) and 'map' (lax.map over models).
"""

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
import time


from n2v_jax.training import multi
from n2v_jax.training import trainer


PERC_PIX = (0.5, 2.0, 8.0)  # the masking study's percentages


def _study_config():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")
  spec = importlib.util.spec_from_file_location("masking_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config


def _throughput(workdir: str) -> float:
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return sum(r["patches_per_s"] for r in rows[1:]) / max(1, len(rows) - 1)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--models", type=int, default=3)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--vary_perc_pix", action="store_true")
  args = parser.parse_args()
  get_config = _study_config()
  configs = []
  for seed in range(args.models):
    c = get_config()
    c.seed, c.train.num_steps, c.train.checkpoint_every = seed, args.steps, args.steps
    if args.vary_perc_pix:
      c.mask.perc_pix = PERC_PIX[seed % len(PERC_PIX)]
    configs.append(c)
  root = tempfile.mkdtemp(prefix="vmap_speedup_")
  try:
    t0 = time.perf_counter()
    seq_dirs = [os.path.join(root, f"seq{i}") for i in range(len(configs))]
    for c, d in zip(configs, seq_dirs):
      trainer.train_and_evaluate(c, d)
    t_seq = time.perf_counter() - t0
    result = {"models": len(configs), "steps": args.steps, "sequential_wall_s": round(t_seq, 1),
              "perc_pix": [c.mask.perc_pix for c in configs]}
    seq_tp = len(configs) / sum(1.0 / _throughput(d) for d in seq_dirs)
    result["sequential_patches_per_s"] = round(seq_tp, 1)
    for mode in ("vmap", "map"):
      t0 = time.perf_counter()
      dirs = [os.path.join(root, f"{mode}{i}") for i in range(len(configs))]
      multi.train_many(configs, dirs, mode=mode)
      t = time.perf_counter() - t0
      tp = sum(_throughput(d) for d in dirs)  # all models advance together
      result.update({f"{mode}_wall_s": round(t, 1), f"{mode}_wall_speedup": round(t_seq / t, 2),
                     f"{mode}_patches_per_s": round(tp, 1),
                     f"{mode}_throughput_speedup": round(tp / seq_tp, 2)})
    print(json.dumps(result))
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
