"""CAREamics side of the speed comparison: one JSON line per configuration, like benchmark.py.

Runs in its own virtual environment (never a dependency of n2v_jax):

    python3 -m venv /tmp/care && /tmp/care/bin/pip install torch==2.13.0 && \
      /tmp/care/bin/pip install --no-deps careamics==0.3.5 && /tmp/care/bin/pip install \
      'bioimageio-core>=0.9,<=0.11' 'lightning>=2.2,<=2.6.6,!=2.6.2,!=2.6.3' 'microssim<=0.0.5' \
      'pydantic>=2.11,<=2.14.1' 'scikit-image<=0.26' 'torchmetrics<1.9' 'zarr>=3,<4' \
      matplotlib numpy pillow psutil pyyaml tifffile
    /tmp/care/bin/python experiments/benchmark/careamics_bench.py

CAREamics 0.3.5 asks for torchvision, which only its LVAE models use; PyPI's torchvision
does not load beside the CPU torch 2.13 wheel ("operator torchvision::nms does not exist"),
so this script stands in an empty module for it.

What it times is CAREamics' own N2V training step, as its Lightning module runs it
(`N2VModule.training_step`: N2VManipulate masking, its UNet, n2v_loss) followed by
backward and Adam, without Lightning's per-step logging and data loading: an upper bound
on CAREamics' training speed. Prediction: its UNet on the whole image in one eval-mode,
no-grad call (no tiling, no TTA), again an upper bound. Same model as benchmark.py:
depth 2, 32 first-level features, batch norm, 3x3, 0.198 % blind spots, 5x5 window
(roi_size 5), Adam 4e-4, 64x64 patches.
"""

import argparse
import importlib.abc
import importlib.machinery
import json
import resource
import sys
import time
import types


class _EmptyTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Any `torchvision[.x]` import gives an empty module whose attributes are all None."""

  def find_spec(self, name, path=None, target=None):
    if name == "torchvision" or name.startswith("torchvision."):
      return importlib.machinery.ModuleSpec(name, self, is_package=True)
    return None

  def create_module(self, spec):
    module = types.ModuleType(spec.name)
    module.__path__ = []
    module.__getattr__ = lambda attr: None
    return module

  def exec_module(self, module):
    pass


def _stub_torchvision() -> None:
  sys.meta_path.insert(0, _EmptyTorchvision())


def _module(features: int, depth: int):
  from careamics.config import N2VAlgorithm
  from careamics.lightning.modules.n2v_module import N2VModule
  config = N2VAlgorithm(
      model={"architecture": "UNet", "conv_dims": 2, "in_channels": 1, "num_classes": 1,
             "depth": depth, "num_channels_init": features, "use_batch_norm": True},
      n2v_config={"masked_pixel_percentage": 0.198, "roi_size": 5, "strategy": "uniform",
                  "seed": 1},
      optimizer={"name": "Adam", "parameters": {"lr": 4e-4}})
  return N2VModule(config)


def train(args, batch: int) -> dict:
  import numpy as np
  import torch
  module = _module(args.features, args.depth)
  module.train()
  optimizer = torch.optim.Adam(module.model.parameters(), lr=4e-4)
  rng = np.random.default_rng(0)
  data = torch.from_numpy(rng.normal(size=(batch, 1, args.patch, args.patch)).astype(np.float32))
  region = types.SimpleNamespace(data=data)  # training_step reads only the ImageRegionData's .data
  # Outside a Trainer, Lightning's logging has nothing to log to: skip it (it only costs time).
  module.log = lambda *a, **k: None
  module.optimizers = lambda: optimizer
  times = []
  for i in range(args.warmup + args.steps):
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = module.training_step((region,), i)
    loss.backward()
    optimizer.step()
    if i >= args.warmup:
      times.append(time.perf_counter() - t0)
  med = float(np.median(times))
  return {"bench": "careamics_train", "batch": batch, "patch": args.patch,
          "patches_per_s": round(batch / med, 2), "step_s_median": round(med, 4),
          "timed_steps": args.steps, "loss": float(loss)}


def predict(args) -> dict:
  import numpy as np
  import torch
  module = _module(args.features, args.depth)
  module.eval()
  x = torch.from_numpy(np.random.default_rng(0).normal(
      size=(1, 1, args.predict_size, args.predict_size)).astype(np.float32))
  times = []
  with torch.no_grad():
    module.model(x)
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      module.model(x).numpy()
      times.append(time.perf_counter() - t0)
  med = float(np.median(times))
  return {"bench": "careamics_predict", "shape": [args.predict_size] * 2,
          "mpix_per_s": round(args.predict_size ** 2 / med / 1e6, 3), "tta": False}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--only", choices=["train", "predict", "all"], default="all")
  p.add_argument("--batch-sizes", default="16,128")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--steps-large", type=int, default=5, help="timed steps at batch > 32")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--patch", type=int, default=64)
  p.add_argument("--depth", type=int, default=2)
  p.add_argument("--features", type=int, default=32)
  p.add_argument("--predict-size", type=int, default=1024)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  _stub_torchvision()
  import careamics
  import torch
  common = {"framework": "careamics", "careamics": careamics.__version__,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
  if args.only in ("train", "all"):
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
      steps = args.steps
      if batch > 32:
        args.steps = args.steps_large
      out = train(args, batch)
      args.steps = steps
      out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
      print(json.dumps({**out, **common}), flush=True)
  if args.only in ("predict", "all"):
    print(json.dumps({**predict(args), **common}), flush=True)


if __name__ == "__main__":
  main()
