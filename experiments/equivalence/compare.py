"""Old code against new code, bit for bit, through the command lines only.

    .venv/bin/python experiments/equivalence/compare.py --old e7aedce [--cases default,jump]

Checks out `--old` (a git revision of this repository) in a temporary worktree and runs the
same commands there and in this checkout (`python -m n2v_jax.train`, `python -m
n2v_jax.predict`), each tree with its own working directory and module path, so the two
codes share nothing but the interpreter and the data. Then it compares:

- training (a few steps of each case): every parameter and optimizer value of the last
  checkpoint (bit-equal), the losses of metrics.jsonl, model.json, config.json (less
  `runtime`) and summary.json (less timings and paths);
- prediction with the old tree's models: the outputs for a TIFF, a folder, a grouped field
  folder, an OME-Zarr image and an OME-Zarr plate, array for array (bit-equal), with their
  metadata.

It prints one line per comparison and exits 1 if anything differs. Only the command lines
are used, because they are what both versions share. The BSD68 and JUMP cases read
../shared/data (or $N2V_DATA) and are skipped when it is absent.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATA = os.environ.get("N2V_DATA", os.path.join(REPO, "..", "shared", "data"))
BSD68 = os.path.join(DATA, "bsd68", "train_noisy_sigma25.tif")
JUMP = os.path.join(DATA, "microscopy", "jump_cpg0000_BR00117006_A01_s1")

# A few steps of every case: enough for the optimizer, the schedule, batch norm, the
# validation loss and a resume point (checkpoint_every) to matter.
FEW = ["--config.train.num_steps=4", "--config.train.log_every=2",
       "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
       "--config.train.progress=False", "--config.train.tensorboard=False"]


def training_cases(inputs: dict) -> dict:
  """name -> (config file, overrides)."""
  tif = [f"--config.data.path={inputs['tif']}", "--config.data.axes=YX"]
  cases = {
      "default": ("configs/default.py", []),
      "default_tiff": ("configs/default.py", tif),
      "default_streamed": ("configs/default.py", tif + ["--config.data.streaming=True"]),
      "n2v2": ("configs/n2v2.py", []),
      "structn2v": ("configs/structn2v.py", []),
      "n2n": ("configs/default.py", ["--config.algorithm=n2n"]),
      "care": ("configs/default.py", ["--config.algorithm=care"]),
      "multichannel_3d": ("configs/default.py", [
          f"--config.data.path={inputs['zcyx']}", "--config.data.axes=ZCYX",
          "--config.data.patch_shape=(8, 32, 32)", "--config.train.batch_size=4"]),
  }
  if os.path.exists(JUMP):
    cases["jump"] = ("configs/jump.py", ["--config.train.batch_size=8"])
    cases["jump_orig_streamed"] = ("configs/jump.py:orig", [
        "--config.train.batch_size=8", "--config.data.streaming=True"])
  if os.path.exists(BSD68):
    cases["bsd68_cpu"] = ("configs/bsd68_cpu.py", [])
    cases["bsd68_cpu_streamed"] = ("configs/bsd68_cpu.py", ["--config.data.streaming=True"])
  return cases


def make_inputs(folder: str) -> dict:
  """The files both trees read (written once, with tifffile/zarr only)."""
  import tifffile
  import zarr
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  base = np.linspace(0, 1, 128 * 128).reshape(128, 128)
  noisy = lambda: (base * 1000 + rng.normal(0, 60, base.shape) + 300)
  paths = {"tif": os.path.join(folder, "train_yx.tif")}
  tifffile.imwrite(paths["tif"], noisy().astype(np.float32), imagej=True,
                   metadata={"axes": "YX"}, photometric="minisblack")
  paths["folder"] = os.path.join(folder, "folder")
  os.makedirs(paths["folder"], exist_ok=True)
  for i, dtype in enumerate((np.uint16, np.float32)):
    tifffile.imwrite(os.path.join(paths["folder"], f"im{i}.tif"),
                     noisy()[: 96 + 16 * i].astype(dtype), imagej=True,
                     metadata={"axes": "YX"}, photometric="minisblack")
  paths["zcyx"] = os.path.join(folder, "zcyx.tif")
  zcyx = rng.normal(500, 50, (16, 2, 64, 64)) + np.linspace(0, 300, 64)
  tifffile.imwrite(paths["zcyx"], zcyx.astype(np.float32), imagej=True,
                   metadata={"axes": "ZCYX"}, photometric="minisblack")
  # OME-Zarr: one image (NGFF 0.5, zarr v3) and a plate of two fields (NGFF 0.4, zarr v2)
  from ome_zarr.format import FormatV04
  from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata
  paths["ome"] = os.path.join(folder, "image.ome.zarr")
  group = zarr.open_group(paths["ome"], mode="w", zarr_format=3)
  write_image(noisy()[None].astype(np.uint16), group, axes=["c", "y", "x"], scale_factors=(),
              storage_options={"chunks": (1, 64, 64)})
  paths["plate"] = os.path.join(folder, "plate.ome.zarr")
  root = zarr.open_group(paths["plate"], mode="w", zarr_format=2)
  write_plate_metadata(root, ["A"], ["1", "2"], ["A/1", "A/2"], fmt=FormatV04(), field_count=1)
  for col in ("1", "2"):
    well = root.require_group("A").require_group(col)
    write_well_metadata(well, ["0"], fmt=FormatV04())
    write_image(noisy()[None].astype(np.float32), well.require_group("0"), axes=["c", "y", "x"],
                fmt=FormatV04(), scale_factors=(), storage_options={"chunks": (1, 48, 48)})
  return paths


def prediction_cases(inputs: dict) -> list:
  """(name, workdir case, input, extra flags, output name)."""
  cases = [
      ("tiff", "default_tiff", inputs["tif"], [], "out.tif"),
      ("tiff_tta_tiles", "default_tiff", inputs["tif"], ["--tta", "--tile=64"], "out.tif"),
      ("folder_dtype_input", "default_tiff", inputs["folder"], ["--dtype=input"], "out"),
      ("tiff_3d", "multichannel_3d", inputs["zcyx"], ["--tile=32"], "out.tif"),
      ("ome_zarr", "default_tiff", inputs["ome"], [], "out.ome.zarr"),
      ("ome_zarr_tta", "default_tiff", inputs["ome"], ["--tta"], "out.ome.zarr"),
      ("plate", "default_tiff", inputs["plate"], [], "out.ome.zarr"),
  ]
  if os.path.exists(JUMP):
    cases.append(("grouped_fields", "jump_orig_streamed", os.path.join(JUMP, "orig"), [], "out"))
  return cases


def run(tree: str, args: list, log: str) -> None:
  # both trees read the same data (their configs would look beside their own checkout)
  env = dict(os.environ, PYTHONPATH=tree, JAX_PLATFORMS="cpu", N2V_DATA=os.path.abspath(DATA))
  with open(log, "a") as f:
    f.write("$ " + " ".join(args) + "\n")
    f.flush()
    rc = subprocess.call([sys.executable, *args], cwd=tree, env=env, stdout=f, stderr=f)
  if rc:
    raise SystemExit(f"{' '.join(args)} failed in {tree} (exit {rc}); see {log}")


def _checkpoint(workdir: str) -> dict:
  import orbax.checkpoint as ocp
  folder = os.path.join(workdir, "checkpoints")
  step = max(int(s) for s in os.listdir(folder) if s.isdigit())
  return ocp.StandardCheckpointer().restore(os.path.join(folder, str(step), "default"))


def _flat(tree, prefix=""):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}{k}/"))
    return out
  if isinstance(tree, (list, tuple)):
    out = {}
    for i, v in enumerate(tree):
      out.update(_flat(v, f"{prefix}{i}/"))
    return out
  return {prefix.rstrip("/"): np.asarray(tree)}


def _json(path: str, drop: tuple = ()) -> object:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    if path.endswith(".jsonl"):
      rows = [json.loads(l) for l in f if l.strip()]
      return [{k: v for k, v in r.items() if k not in drop} for r in rows]
    d = json.load(f)
  return {k: v for k, v in d.items() if k not in drop}


def compare_training(a: str, b: str) -> list[str]:
  """What differs between two workdirs of the same case ([] if nothing)."""
  diffs = []
  pa, pb = _flat(_checkpoint(a)), _flat(_checkpoint(b))
  if sorted(pa) != sorted(pb):
    diffs.append(f"checkpoint trees differ: {sorted(set(pa) ^ set(pb))[:4]}")
  for k in sorted(set(pa) & set(pb)):
    nan = pa[k].dtype.kind in "fc"  # NaN equals NaN for float values only
    if pa[k].shape != pb[k].shape or not np.array_equal(pa[k], pb[k], equal_nan=nan):
      diffs.append(f"checkpoint value {k} differs")
  for name, drop in (("metrics.jsonl", ("time", "patches_per_s")), ("model.json", ()),
                     ("config.json", ("runtime",)),
                     ("summary.json", ("predict_seconds", "workdir"))):
    if _json(os.path.join(a, name), drop) != _json(os.path.join(b, name), drop):
      diffs.append(f"{name} differs")
  return diffs


def _arrays(path: str) -> dict:
  """Every image under path (a TIFF, a folder of TIFFs or a zarr store): name -> (array,
  metadata)."""
  import tifffile
  import zarr
  if os.path.isfile(path):
    with tifffile.TiffFile(path) as tif:
      meta = {"imagej": tif.imagej_metadata, "shaped": tif.shaped_metadata,
              "resolution": tif.pages[0].resolution}
      return {os.path.basename(path): (tif.asarray(), meta)}
  if any(os.path.exists(os.path.join(path, m)) for m in ("zarr.json", ".zgroup", ".zarray")):
    out = {}
    root = zarr.open(path, mode="r")

    def visit(node, name):
      attrs = {k: v for k, v in dict(node.attrs).items()}
      if isinstance(node, zarr.Array):
        out[name] = (np.asarray(node[...]), attrs)
      else:
        out[name + "/.attrs"] = (np.zeros(0), attrs)
        for key, child in sorted(node.members()):
          visit(child, f"{name}/{key}")
    visit(root, "")
    return out
  out = {}
  for n in sorted(os.listdir(path)):
    if n.lower().endswith((".tif", ".tiff")) and not n.startswith("."):
      out.update(_arrays(os.path.join(path, n)))
  return out


def _scrub(meta, trees: tuple[str, ...]):
  """Metadata with the two trees' folder names made equal (outputs record their input)."""
  text = json.dumps(meta, sort_keys=True, default=str)
  for t in trees:
    text = text.replace(t, "TREE")
  return text


def compare_outputs(a: str, b: str, trees: tuple[str, ...]) -> list[str]:
  xa, xb = _arrays(a), _arrays(b)
  if sorted(xa) != sorted(xb):
    return [f"outputs differ: {sorted(xa)} vs {sorted(xb)}"]
  diffs = []
  for k in sorted(xa):
    (da, ma), (db, mb) = xa[k], xb[k]
    nan = da.dtype.kind in "fc"
    if da.dtype != db.dtype or da.shape != db.shape or not np.array_equal(da, db, equal_nan=nan):
      diffs.append(f"{k}: pixels differ")
    if _scrub(ma, trees) != _scrub(mb, trees):
      diffs.append(f"{k}: metadata differs")
  return diffs


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--old", required=True, help="git revision of the old code")
  parser.add_argument("--new", default=REPO, help="checkout of the new code (default: this one)")
  parser.add_argument("--cases", default="", help="comma-separated training cases (default all)")
  parser.add_argument("--keep", default="", help="folder to keep the runs in (default: a temp one)")
  parser.add_argument("--reuse", action="store_true",
                      help="with --keep: compare the runs a previous call left there again")
  args = parser.parse_args()
  work = args.keep or tempfile.mkdtemp(prefix="n2v_equivalence_")
  os.makedirs(work, exist_ok=True)
  old_tree = os.path.join(work, "old_tree")
  if not os.path.isdir(old_tree):
    subprocess.check_call(["git", "-C", REPO, "worktree", "add", "--detach", old_tree, args.old],
                          stdout=subprocess.DEVNULL)
  trees = {"old": old_tree, "new": os.path.abspath(args.new)}
  log = os.path.join(work, "log.txt")
  inputs = make_inputs(os.path.join(work, "inputs"))
  cases = training_cases(inputs)
  wanted = [c for c in args.cases.split(",") if c] or list(cases)
  failures = 0
  for case in wanted:
    config, overrides = cases[case]
    for side, tree in trees.items():
      workdir = os.path.join(work, side, case)
      if args.reuse and os.path.exists(os.path.join(workdir, "summary.json")):
        continue
      shutil.rmtree(workdir, ignore_errors=True)
      run(tree, ["-m", "n2v_jax.train", f"--config={config}", f"--workdir={workdir}", *FEW,
                 *overrides], log)
    diffs = compare_training(os.path.join(work, "old", case), os.path.join(work, "new", case))
    failures += bool(diffs)
    print(f"train {case:22s} " + ("bit-equal" if not diffs else "DIFFERS: " + "; ".join(diffs)),
          flush=True)
  for name, model_case, source, flags, out_name in prediction_cases(inputs):
    if model_case not in wanted:
      continue
    workdir = os.path.join(work, "old", model_case)  # one model, predicted by both codes
    outs = {}
    for side, tree in trees.items():
      out = os.path.join(work, "predict_" + side, name, out_name)
      shutil.rmtree(os.path.dirname(out), ignore_errors=True)
      os.makedirs(os.path.dirname(out))
      run(tree, ["-m", "n2v_jax.predict", f"--workdir={workdir}", f"--input={source}",
                 f"--output={out}", "--progress=False", *flags], log)
      outs[side] = out
    diffs = compare_outputs(outs["old"], outs["new"], tuple(trees.values()))
    failures += bool(diffs)
    print(f"predict {name:20s} " + ("bit-equal" if not diffs else "DIFFERS: " + "; ".join(diffs)),
          flush=True)
  print(f"{failures} difference(s); runs in {work}")
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  main()
