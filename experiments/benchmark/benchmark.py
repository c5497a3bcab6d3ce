"""Throughput and memory benchmark: one JSON line per configuration on stdout.

    .venv/bin/python experiments/benchmark/benchmark.py                 # the issue's configs
    .venv/bin/python experiments/benchmark/benchmark.py --only train --batch-sizes 16 --steps 20

Every configuration runs in its own subprocess, so peak resident memory (ru_maxrss) is
that configuration's own; XLA_FLAGS from the environment apply to every child.
It times the library's real code: `steps.train_step` jitted with donation exactly as in
`training.trainer`, and `inference.predict_image` (tiled, blended, optionally TTA).
Throughput is measured here, never asserted in tests. The machine may be shared: alternate A/B runs
and compare medians.
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _peak_rss_gib() -> float:
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _versions() -> dict:
  import flax
  import jax
  import jaxlib
  d = jax.devices()[0]
  return {"device_kind": d.device_kind, "platform": d.platform, "devices": jax.device_count(),
          "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpus": os.cpu_count()}


def ablate(names: str) -> None:
  """Switch off one of the library's speed tricks (A/B only; same results up to rounding):
  slice_pool (max-pool / MaxBlurPool as slices -> flax's reduce_window and a depthwise
  convolution), slice_upsample (bilinear as shifted copies -> jax.image.resize),
  fold_bn (batch norm folded into the convolutions for prediction -> kept),
  skip_conv (the decoder's first conv on [skip, up-sampled] apart -> on their concatenation),
  conv3d (3D convolutions as one 2D convolution per depth tap -> XLA's 3D convolution)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from n2v_jax.inference import predictor
  from n2v_jax.nn import conv
  from n2v_jax.nn import unet
  for name in filter(None, names.split(",")):
    if name == "slice_pool":
      def max_pool(x):
        nd = x.ndim - 2
        return nn.max_pool(x, (2,) * nd, strides=(2,) * nd)
      def max_blur_pool(x):
        nd, c = x.ndim - 2, x.shape[-1]
        x = nn.max_pool(x, (2,) * nd, strides=(1,) * nd)
        k1 = jnp.array([1.0, 2.0, 1.0], x.dtype) / 4
        k = k1
        for _ in range(nd - 1):
          k = k[..., None] * k1
        kernel = jnp.tile(k[..., None, None], (1,) * nd + (1, c))
        dims = ("NHWC", "HWIO", "NHWC") if nd == 2 else ("NDHWC", "DHWIO", "NDHWC")
        return jax.lax.conv_general_dilated(x, kernel, (2,) * nd, [(1, 1)] * nd,
                                            dimension_numbers=dims, feature_group_count=c)
      unet._max_pool2, unet.max_blur_pool = max_pool, max_blur_pool
    elif name == "slice_upsample":
      unet._upsample_bilinear = lambda x: jax.image.resize(
          x, (x.shape[0], *(2 * s for s in x.shape[1:-1]), x.shape[-1]), "bilinear")
    elif name == "fold_bn":
      predictor.Predictor._inference = property(lambda self: (self.model, self.variables))
    elif name == "skip_conv":
      unet._decoder_input = unet._concat_groups
    elif name == "conv3d":
      conv_2d_per_tap = conv.conv_same
      def conv_same(x, kernel, groups=1):
        if x.ndim == 4:
          return conv_2d_per_tap(x, kernel, groups)
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1, 1), "SAME", feature_group_count=groups,
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
      conv.conv_same = conv_same
    else:
      raise SystemExit(f"--ablate: unknown trick {name!r}")


def _config(args, in_channels=1, ndim=2):
  from n2v_jax.configs import default
  config = default.get_config()
  config.model.depth = args.depth
  config.model.features = args.features
  config.model.kernel_size = 3
  config.model.batch_norm = not args.no_batch_norm
  config.model.n2v2 = args.n2v2
  config.model.dtype = args.dtype
  config.mask.perc_pix = 0.198  # as in the CAREamics comparison (notes/cpu-performance.md)
  config.mask.radius = 2
  config.mask.strategy = "median" if args.n2v2 else config.mask.strategy
  config.opt.learning_rate = 4e-4
  config.data.patch_shape = (args.patch,) * ndim
  config.data.synthetic.shape = (512,) * ndim
  if getattr(args, "patch_depth", 0) and ndim == 2:  # 3D training: Z x patch x patch
    config.data.patch_shape = (args.patch_depth, args.patch, args.patch)
    config.data.synthetic.shape = (2 * args.patch_depth, 2 * args.patch, 2 * args.patch)
  config.data.synthetic.channels = in_channels
  config.model.upsampling = args.upsampling
  config.model.batch_chunks = args.batch_chunks
  config.model.conv_algorithm = args.conv_algorithm
  config.model.conv_precision = args.conv_precision
  return config


def _predictor(config, variables, in_channels, ndim):
  """A Predictor of these variables (identity normalization), as load_predictor makes one."""
  from n2v_jax.inference import predictor
  from n2v_jax.nn import unet
  from n2v_jax.workdir import model_meta, saved_config
  model = unet.make_model(config.model, in_channels)
  div = unet.divisor(config.model.depth)
  halo = -(-unet.receptive_field_radius(config.model) // div) * div
  spatial = "ZYX"[-ndim:]
  meta = model_meta.ModelMeta(
      algorithm="n2v", model=saved_config.to_dict(config.model), opt={},
      in_channels=in_channels, spatial_axes=spatial, channel_names=None,
      mean=(0.0,) * in_channels, std=(1.0,) * in_channels, normalization="meanstd",
      transform="none", patch_shape=(64,) * ndim, train_axes=spatial + "C", augment=True,
      predict_blend=False)
  return predictor.Predictor(model, variables, meta, div, halo)


def build_train(args):
  """The jitted training step exactly as the trainer builds it, compiled, with its inputs:
  (compiled_step, state, images, sizes, key, compile_s, devices). Also used by profile_step.py."""
  import functools
  import jax
  from n2v_jax.data import dataset as dataset_lib
  from n2v_jax.nn import unet
  from n2v_jax.training import runtime
  from n2v_jax.training import steps
  config = _config(args)
  config.train.batch_size = args.batch
  config.train.cpu_devices = args.cpu_devices
  dataset = dataset_lib.load(config.data, config.seed, unet.divisor(config.model.depth))
  patch = dataset.patch
  # Exactly as the trainer: CPU devices chosen before JAX starts, batch sharded over them.
  runtime.setup_cpu_devices(config.train.cpu_devices, args.batch, dataset.train_NSC.nbytes)
  devices, batch_sharding, replicated = runtime.shardings(config.train)
  put = (lambda x: jax.device_put(x, replicated)) if replicated is not None else jax.numpy.asarray
  model = unet.make_model(config.model, dataset.in_channels)
  tx = steps.make_optimizer(config.opt)
  spec = steps.step_spec(config, patch)
  key = jax.random.key(0)
  state = jax.tree.map(put, jax.jit(functools.partial(
      steps.create_train_state, model=model, tx=tx,
      input_shape=(1, *patch, dataset.in_channels)))(key))
  images, sizes = put(dataset.train_NSC), put(dataset.train_sizes)
  p_step = jax.jit(functools.partial(  # exactly as the trainer
      steps.train_step, model=model, tx=tx, spec=spec, opt_cfg=config.opt,
      num_steps=args.warmup + args.steps, batch_sharding=batch_sharding), donate_argnums=(0,))
  t0 = time.perf_counter()
  step = p_step.lower(state, images, sizes, key).compile()  # the executable p_step would use
  compile_s = time.perf_counter() - t0
  return step, state, images, sizes, key, compile_s, devices


def run_train(args) -> dict:
  import jax
  import numpy as np
  step, state, images, sizes, key, compile_s, devices = build_train(args)
  for _ in range(args.warmup):
    state, metrics = step(state, images, sizes, key)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = step(state, images, sizes, key)
    jax.block_until_ready(metrics)  # a host sync per step: the step's full latency
    times.append(time.perf_counter() - t0)
  med = float(np.median(times))
  return {"bench": "train", "batch": args.batch, "patch": args.patch,
          "patches_per_s": round(args.batch / med, 2), "step_s_median": round(med, 4),
          "step_s_min": round(min(times), 4), "step_s_max": round(max(times), 4),
          "timed_steps": args.steps, "compile_s": round(compile_s, 2),
          "train_devices": len(devices), "loss": float(metrics["loss"]),
          "conv_algorithm": args.conv_algorithm, "conv_precision": args.conv_precision}


def run_predict(args) -> dict:
  import jax
  import numpy as np
  from n2v_jax.inference.options import PredictOptions
  from n2v_jax.inference import options
  from n2v_jax.inference import predictor
  from n2v_jax.nn import unet
  ndim = len(args.shape) - 1
  in_channels = args.shape[-1]
  config = _config(args, in_channels, ndim)
  model = unet.make_model(config.model, in_channels)
  variables = jax.jit(lambda k: model.init(
      k, jax.numpy.zeros((1,) + (16,) * ndim + (in_channels,)), train=False))(jax.random.key(0))
  pred = _predictor(config, variables, in_channels, ndim)
  rng = np.random.default_rng(0)
  image = rng.normal(size=args.shape).astype(np.float32)
  if args.tile < 0:  # the library's default, as predict.py uses it
    args.tile = options.DEFAULT_TILE
  rss_before = _peak_rss_gib()
  t0 = time.perf_counter()
  options = PredictOptions(tile=args.tile, tta=args.tta)
  out = predictor.predict_image(pred, image, options)  # compiles too
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    out = predictor.predict_image(pred, image, options)
    times.append(time.perf_counter() - t0)
  assert out.shape == image.shape and np.isfinite(out).all()
  med = float(np.median(times)) if times else first
  mpix = float(np.prod(args.shape[:-1])) / 1e6
  return {"bench": "predict", "shape": list(args.shape), "tile": args.tile, "tta": args.tta,
          "mpix_per_s": round(mpix / med, 3), "seconds_median": round(med, 3),
          "first_call_s": round(first, 2), "repeats": args.repeats,
          "peak_rss_before_gib": round(rss_before, 3)}


def child(args) -> None:
  ablate(args.ablate)
  result = run_train(args) if args.kind == "train" else run_predict(args)
  result.update(features=args.features, depth=args.depth, batch_norm=not args.no_batch_norm,
                n2v2=args.n2v2,
                dtype=args.dtype, upsampling=args.upsampling, batch_chunks=args.batch_chunks,
                ablate=args.ablate,
                peak_rss_gib=round(_peak_rss_gib(), 3), **_versions())
  print(json.dumps(result), flush=True)


def add_network_args(p: argparse.ArgumentParser) -> None:
  """The network and speed switches, shared with profile_step.py."""
  p.add_argument("--patch", type=int, default=64)
  p.add_argument("--depth", type=int, default=2)
  p.add_argument("--features", type=int, default=32)
  p.add_argument("--no-batch-norm", action="store_true")
  p.add_argument("--n2v2", action="store_true", help="N2V2 U-Net and median replacement")
  p.add_argument("--dtype", default="float32")
  p.add_argument("--upsampling", default="bilinear", choices=["bilinear", "nearest"],
                 help="bilinear as CAREamics (the equal configuration)")
  p.add_argument("--cpu-devices", type=int, default=1,
                 help="train.cpu_devices: 1 = off (the default), 0 = auto (n2v_jax/runtime.py)")
  p.add_argument("--batch-chunks", type=int, default=0,
                 help="model.batch_chunks: 0 = auto (up to 8 on AMD, 32 on other CPUs; the default), 1 = off")
  p.add_argument("--conv-algorithm", default="direct",
                 help="model.conv_algorithm: direct (the default), auto, im2col, winograd, winograd2")
  p.add_argument("--conv-precision", default="float32",
                 help="model.conv_precision: float32 or bf16_products")
  p.add_argument("--ablate", default="",
                 help="comma-separated tricks to switch off: slice_pool, slice_upsample, fold_bn, "
                 "skip_conv, conv3d")
  p.add_argument("--patch-depth", type=int, default=0,
                 help="training: 3D patches of this depth x patch x patch (0: 2D)")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--only", choices=["train", "predict", "memory", "all"], default="all")
  p.add_argument("--batch-sizes", default="16,128")
  p.add_argument("--steps", type=int, default=20, help="timed steps at batch <= 32")
  p.add_argument("--steps-large", type=int, default=5, help="timed steps at batch > 32")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  add_network_args(p)
  p.add_argument("--predict-size", type=int, default=1024, help="2D test image edge")
  p.add_argument("--tile", type=int, default=-1,
                 help="prediction tile limit; -1: inference.options.DEFAULT_TILE, 0: whole image")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--memory-tile", type=int, default=-1, help="as --tile, for --only memory")
  # child mode (one configuration)
  p.add_argument("--child", choices=["train", "predict"], default=None, help=argparse.SUPPRESS)
  p.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
  p.add_argument("--shape", default="", help=argparse.SUPPRESS)
  p.add_argument("--tta", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    args.kind = args.child
    args.shape = tuple(int(s) for s in args.shape.split(",")) if args.shape else ()
    child(args)
    return

  common = [f"--patch={args.patch}", f"--depth={args.depth}", f"--features={args.features}",
            f"--dtype={args.dtype}", f"--warmup={args.warmup}",
            f"--cpu-devices={args.cpu_devices}", f"--upsampling={args.upsampling}",
            f"--batch-chunks={args.batch_chunks}", f"--ablate={args.ablate}",
            f"--patch-depth={args.patch_depth}", f"--conv-algorithm={args.conv_algorithm}",
            f"--conv-precision={args.conv_precision}"]
  if args.no_batch_norm:
    common.append("--no-batch-norm")
  if args.n2v2:
    common.append("--n2v2")
  runs = []
  if args.only in ("train", "all"):
    for b in (int(s) for s in args.batch_sizes.split(",") if s):
      steps = args.steps if b <= 32 else args.steps_large
      runs.append(["--child=train", f"--batch={b}", f"--steps={steps}"])
  if args.only in ("predict", "all"):
    s = args.predict_size
    for tta in (False, True):
      runs.append(["--child=predict", f"--shape={s},{s},1", f"--tile={args.tile}",
                   f"--repeats={args.repeats if not tta else 1}"] + (["--tta"] if tta else []))
  if args.only in ("memory", "all"):
    for shape in ("4096,4096,3", "64,512,512,1"):
      runs.append(["--child=predict", f"--shape={shape}", f"--tile={args.memory_tile}",
                   "--repeats=0"])
  for r in runs:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *common, *r],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
      print(json.dumps({"error": proc.stderr.strip().splitlines()[-1:], "args": r}), flush=True)
      sys.stderr.write(proc.stderr[-3000:])
    else:
      sys.stdout.write(proc.stdout)
      sys.stdout.flush()


if __name__ == "__main__":
  main()
