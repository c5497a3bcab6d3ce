"""Peak memory of training streamed from an OME-Zarr image larger than a memory budget.

    .venv/bin/python experiments/streaming/zarr_memory.py --tmpdir /tmp/n2v_zarr
    .venv/bin/python experiments/streaming/zarr_memory.py --tmpdir D --gib 4 --budget-mib 1024

Writes an OME-Zarr image (NGFF 0.5, zarr v3: metadata by ome-zarr-py, pixels chunk by chunk
with zarr, never whole in memory) of uint16 512x512 frames along t, chunks (1, 256, 256),
of --gib GiB uncompressed; trains --steps streaming steps of the default model on it
(`data.path=IMAGE.ome.zarr`, `data.streaming=True`) in a fresh subprocess and prints one
JSON line with the peak resident memory (ru_maxrss, VmHWM) against the budget. The image is
deleted afterwards.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FRAME = 512
CHUNK = (1, 256, 256)


def write_image(path: str, frames: int, seed: int = 0) -> None:
  """Smooth structure plus noise (as measure_memory.py's stacks), 64 frames at a time."""
  import numpy as np
  import zarr
  from ome_zarr.writer import write_multiscales_metadata
  group = zarr.open_group(path, mode="w-", zarr_format=3)
  write_multiscales_metadata(group, [{"path": "0", "coordinateTransformations": [
      {"type": "scale", "scale": [1.0, 0.5, 0.5]}]}], axes=["t", "y", "x"], name="noisy")
  array = group.create_array("0", shape=(frames, FRAME, FRAME), chunks=CHUNK, dtype="uint16",
                             dimension_names=["t", "y", "x"])
  yy, xx = np.mgrid[:FRAME, :FRAME] / FRAME
  base = (1000 + 800 * np.sin(9 * xx) * np.cos(7 * yy)).astype(np.float32)
  rng = np.random.default_rng(seed)
  for start in range(0, frames, 64):
    n = min(64, frames - start)
    noise = rng.integers(0, 400, (n, FRAME, FRAME), dtype=np.uint16)
    shifts = [np.roll(base, 13 * (start + i), axis=1) for i in range(n)]
    array[start:start + n] = (np.stack(shifts) + noise).astype(np.uint16)


def child(args) -> None:
  """One streaming training run in this process; prints its JSON line."""
  from measure_memory import _status_mib, train_once
  seconds, last = train_once(args.path, args.steps, True, args.workroot)
  peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
  print(json.dumps({"mode": "streaming", "source": "ome-zarr", "data_gib": args.gib,
                    "frames": args.frames, "chunks": list(CHUNK), "steps": args.steps,
                    "seconds": round(seconds, 1),
                    "patches_per_s": round(last["patches_per_s"], 1), "ru_maxrss_mib": peak,
                    **_status_mib(), "budget_mib": args.budget_mib,
                    "within_budget": peak <= args.budget_mib}), flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tmpdir", help="folder for the generated image")
  parser.add_argument("--gib", type=float, default=1.25, help="uncompressed image size")
  parser.add_argument("--budget-mib", type=int, default=1024, help="the memory budget")
  parser.add_argument("--steps", type=int, default=10)
  from measure_memory import add_child_args
  add_child_args(parser)
  args = parser.parse_args()
  if args.child:
    return child(args)
  if not args.tmpdir:
    parser.error("--tmpdir is required (a folder with room for the image)")
  os.makedirs(args.tmpdir, exist_ok=True)
  free = shutil.disk_usage(args.tmpdir).free
  if free < args.gib * 2**30 + 2**30:
    sys.exit(f"error: {args.tmpdir} has {free / 2**30:.1f} GiB free; need {args.gib + 1:.1f}")
  frames = max(2, round(args.gib * 2**30 / (FRAME * FRAME * 2)))
  path = os.path.join(args.tmpdir, f"noisy_{frames}.ome.zarr")
  t0 = time.perf_counter()
  write_image(path, frames)
  stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
  print(f"# wrote {path} ({stored / 2**30:.2f} GiB on disk, {args.gib} GiB uncompressed) in "
        f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
  try:
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--path", path,
                        "--frames", str(frames), "--steps", str(args.steps), "--gib",
                        str(args.gib), "--budget-mib", str(args.budget_mib), "--workroot",
                        args.tmpdir], cwd=REPO, env=env, text=True, capture_output=True)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
      sys.exit(f"# training failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    print(lines[-1], flush=True)
  finally:
    shutil.rmtree(path)


if __name__ == "__main__":
  main()
