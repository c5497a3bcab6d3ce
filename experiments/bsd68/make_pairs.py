"""A second noisy realisation of Train400 (sigma 25, another seed), for Noise2Noise.

    .venv/bin/python experiments/bsd68/make_pairs.py --out runs/bsd68_pairs [--seed 2]

Uses the data set's own recipe (`../shared/data/bsd68/make_noisy.py`: clean PNGs + one
default_rng(seed) in sorted file order, no clipping or rounding) with a seed other than
the 0 of `train_noisy_sigma25.tif`, and writes `<out>/train_noisy_sigma25_seed<seed>.tif`
(400, 180, 180) float32, axes QYX, slice i pairing with slice i of the original. The data
set's licence forbids copies in the repository: --out must lie outside it (runs/ is
ignored). Then, for the supervised ceilings beside N2V:

    .venv/bin/python experiments/bsd68/run.py --config configs/bsd68_cpu.py \
        --workdir runs/bsd68_n2n --config.algorithm=n2n \
        --config.data.target_path=runs/bsd68_pairs/train_noisy_sigma25_seed2.tif
    .venv/bin/python experiments/bsd68/run.py --config configs/bsd68_cpu.py \
        --workdir runs/bsd68_care --config.algorithm=care \
        --config.data.target_path=../shared/data/bsd68/train_clean.tif
"""

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import tifffile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--seed", type=int, default=2, help="not 0 (the original) nor 1 (the test set)")
  args = p.parse_args()
  if args.seed in (0, 1):
    sys.exit("error: --seed 0 and 1 are the data set's own train and test noise")
  out = os.path.abspath(args.out)
  if os.path.commonpath([out, REPO]) == REPO and not out.startswith(os.path.join(REPO, "runs")):
    sys.exit(f"error: --out {args.out} is inside the repository; the BSD68 licence forbids "
             "copies there (use runs/ or a folder outside)")
  data = Path(os.environ.get("N2V_DATA", os.path.join(REPO, "..", "shared", "data"))) / "bsd68"
  spec = importlib.util.spec_from_file_location("make_noisy", data / "make_noisy.py")
  make_noisy = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(make_noisy)
  files = sorted((data / "train").glob("*.png"))
  stack = np.stack(make_noisy.make_split(files, args.seed))
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, f"train_noisy_sigma25_seed{args.seed}.tif")
  tifffile.imwrite(path + ".tmp", stack, metadata={"axes": "QYX"})
  os.replace(path + ".tmp", path)
  print(f"wrote {path} {stack.shape} {stack.dtype}")


if __name__ == "__main__":
  main()
