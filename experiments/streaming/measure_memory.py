"""Peak memory of streaming training (data.streaming=True) against the data size.

    .venv/bin/python experiments/streaming/measure_memory.py --tmpdir /tmp/n2v_stream
    .venv/bin/python experiments/streaming/measure_memory.py --tmpdir D --sizes 0.25,1 --steps 20
    .venv/bin/python experiments/streaming/measure_memory.py --tmpdir D --plate --sizes 1,4

For each size it writes an uncompressed uint16 SYX TIFF stack of 512x512 frames into
--tmpdir (one file at a time; deleted before the next), trains a few dozen streaming steps
on it in a fresh subprocess and prints one JSON line: data size, peak resident memory
(ru_maxrss and VmHWM) and, at the end, anonymous vs file-backed resident memory. The
smallest size is also trained in memory (data.streaming=False) for comparison.

--plate: instead, a folder of Phenix-named single-channel LZW TIFFs (3 channels of
1080x1080 uint16 per field, as JUMP's raw files), trained with data.channel_pattern=phenix;
the size is the decoded (uncompressed) size.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRAME = 512  # frame edge (pixels): 0.5 MiB per uint16 frame
PLATE_FIELD = 1080  # --plate: JUMP field edge; 3 channels = 6.7 MiB decoded per field


def _status_mib() -> dict:
  """VmHWM (peak RSS), and the RSS split into anonymous and file-backed (mapped) pages."""
  out = {}
  with open("/proc/self/status") as f:
    for line in f:
      key, _, value = line.partition(":")
      if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
        out[key] = int(value.split()[0]) / 1024  # kB
  return {"vmhwm_mib": round(out["VmHWM"]), "rss_end_mib": round(out["VmRSS"]),
          "rss_anon_end_mib": round(out.get("RssAnon", -1)),
          "rss_file_end_mib": round(out.get("RssFile", -1))}


def train_once(path: str, steps: int, streaming: bool, workroot: str | None,
               **data: object) -> tuple[float, dict]:
  """One training run of the measured model on `path` in this process (data.* overrides):
  (seconds, its last metrics.jsonl line)."""
  from n2v_jax.configs import default
  from n2v_jax.training import trainer
  config = default.get_config()
  config.data.path = path
  config.data.streaming = streaming
  for key, value in data.items():
    config.data[key] = value
  config.data.patch_shape = (64, 64)
  config.train.num_steps = steps
  config.train.batch_size = 16
  config.train.log_every = 10
  config.train.eval_every = 10
  config.train.checkpoint_every = steps
  config.train.progress = False
  config.train.data_parallel = False  # one device for both modes: same model, same work
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory(dir=workroot) as workdir:
    trainer.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return time.perf_counter() - t0, [json.loads(l) for l in f][-1]


def child(args) -> None:
  """One training run in this process; prints its JSON line."""
  import resource
  seconds, last = train_once(args.path, args.steps, args.mode == "streaming", args.workroot,
                             stream_patches_per_image=args.patches_per_image,
                             **({"channel_pattern": "phenix"} if args.plate else {}))
  size = (args.frames * 3 * PLATE_FIELD**2 * 2 if args.plate else os.path.getsize(args.path))
  record = {"mode": args.mode, "data_gib": round(size / 2**30, 3),
            ("fields" if args.plate else "frames"): args.frames, "steps": args.steps,
            "seconds": round(seconds, 1),
            "patches_per_s": round(last["patches_per_s"], 1),
            "patches_per_image": args.patches_per_image,
            "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            **_status_mib()}
  print(json.dumps(record), flush=True)


def write_stack(path: str, frames: int, seed: int = 0) -> None:
  """Smooth structure plus noise, written frame by frame (never whole in memory)."""
  import numpy as np
  import tifffile
  yy, xx = np.mgrid[:FRAME, :FRAME] / FRAME
  base = (1000 + 800 * np.sin(9 * xx) * np.cos(7 * yy)).astype(np.float32)
  rng = np.random.default_rng(seed)

  def gen():
    for i in range(frames):
      noise = rng.integers(0, 400, (FRAME, FRAME), dtype=np.uint16)
      yield (np.roll(base, 13 * i, axis=1) + noise).astype(np.uint16)
  tifffile.imwrite(path, gen(), shape=(frames, FRAME, FRAME), dtype=np.uint16, bigtiff=True,
                   metadata={"axes": "SYX"}, photometric="minisblack")


def write_plate(folder: str, fields: int, seed: int = 0) -> None:
  """Phenix per-channel files (channels 2, 3, 5), LZW-compressed as the instrument writes."""
  import numpy as np
  import tifffile
  os.makedirs(folder)
  yy, xx = np.mgrid[:PLATE_FIELD, :PLATE_FIELD] / PLATE_FIELD
  base = (1000 + 800 * np.sin(9 * xx) * np.cos(7 * yy)).astype(np.float32)
  rng = np.random.default_rng(seed)
  for f in range(fields):
    for ch in (2, 3, 5):
      noise = rng.integers(0, 400, base.shape, dtype=np.uint16)
      name = f"r{f // 9 + 1:02d}c01f{f % 9 + 1:02d}p01-ch{ch}sk1fk1fl1.tiff"
      tifffile.imwrite(os.path.join(folder, name),
                       (np.roll(base, 13 * f + ch, axis=1) + noise).astype(np.uint16),
                       compression="lzw")


def add_child_args(parser: argparse.ArgumentParser) -> None:
  """The hidden flags a script passes to its own measuring subprocess (--child)."""
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--path", help=argparse.SUPPRESS)
  parser.add_argument("--frames", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--workroot", help=argparse.SUPPRESS)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tmpdir", required=False, help="folder for the generated stacks")
  parser.add_argument("--sizes", default="0.5,2,6", help="data sizes in GiB, comma-separated")
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--no-in-memory", action="store_true", help="skip the in-memory run")
  parser.add_argument("--patches-per-image", type=int, default=1,
                      help="data.stream_patches_per_image")
  parser.add_argument("--plate", action="store_true",
                      help="a folder of LZW per-channel Phenix files instead of one stack")
  parser.add_argument("--mode", default="streaming", help=argparse.SUPPRESS)
  add_child_args(parser)
  args = parser.parse_args()
  if args.child:
    return child(args)
  if not args.tmpdir:
    parser.error("--tmpdir is required (a folder with room for the largest size)")
  sizes = sorted(float(s) for s in args.sizes.split(","))
  os.makedirs(args.tmpdir, exist_ok=True)
  frame_bytes = 3 * PLATE_FIELD**2 * 2 if args.plate else FRAME * FRAME * 2
  need = max(sizes) * 2**30 + 2**30  # one stack at a time, plus room for the workdir
  free = shutil.disk_usage(args.tmpdir).free
  if free < need:
    sys.exit(f"error: {args.tmpdir} has {free / 2**30:.1f} GiB free; the largest size needs "
             f"{need / 2**30:.1f} GiB")
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  for size in sizes:
    frames = max(2, round(size * 2**30 / frame_bytes))
    t0 = time.perf_counter()
    if args.plate:
      path = os.path.join(args.tmpdir, f"plate_{frames}")
      write_plate(path, frames)
      stored = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
    else:
      path = os.path.join(args.tmpdir, f"stack_{frames}.tif")
      write_stack(path, frames)
      stored = os.path.getsize(path)
    print(f"# wrote {path} ({stored / 2**30:.2f} GiB on disk) in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    modes = ["streaming"] + ([] if args.no_in_memory or size != sizes[0] else ["in_memory"])
    try:
      for mode in modes:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--mode", mode,
                            "--path", path, "--frames", str(frames), "--steps", str(args.steps),
                            "--workroot", args.tmpdir,
                            "--patches-per-image", str(args.patches_per_image)]
                           + (["--plate"] if args.plate else []),
                           cwd=REPO, env=env, text=True,
                           capture_output=True)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        if r.returncode or not lines:
          print(f"# {mode} {size} GiB failed (exit {r.returncode}):\n{r.stderr[-3000:]}",
                file=sys.stderr)
          continue
        print(lines[-1], flush=True)
    finally:
      shutil.rmtree(path) if args.plate else os.remove(path)


if __name__ == "__main__":
  main()
