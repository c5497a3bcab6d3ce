"""The bad-input corpus (tests/bad_inputs.py) against every entry point: training, prediction
of a file, a folder, an OME-Zarr image and a plate, evaluation, and export's test input.
Each case: exit status 1 (a folder or plate: 2, its other files done), exactly one line on
stderr, `error: ...` naming the file, no traceback; no output and no temporary file left;
inputs unchanged. The README's troubleshooting table lists every message the corpus meets.
"""

import dataclasses
import hashlib
import os
import re

import numpy as np
import pytest
import tifffile

from tests import bad_inputs
from tests.cli_runner import CliRunner
from tests.helpers import REPO, noisy_stack, tiny_config, write_tiff

# kind -> (axes to give, if any); kinds come from bad_inputs.MAKERS, plus these made here:
# a CYX file read with the wrong axes, a 2D file with an unknown axes letter.
AXES = {"axes_mismatch": "SZYX", "unknown_axes": "YXW", "bool_npy": "YX", "string_npy": "YX",
        "object_npy": "YX", "complex_zarr": "YX"}
NO_SUCH_FOLDER = "no such folder"

# (entry point, kind, the words its error line holds). The error line also names the file
# (for an output in a missing folder: that folder).
CASES = [
    *[("train", kind, words) for kind, words in [
        ("missing", "no such file"),
        ("nan", "NaN/inf pixel(s)"), ("inf", "NaN/inf pixel(s)"),
        ("truncated", "not a readable TIFF file"), ("png_named_tif", "not a readable TIFF file"),
        ("empty", "not a readable TIFF file"), ("bad_header", "not a readable TIFF file"),
        ("folder_as_file", "no .tif/.tiff files"),
        ("complex", "complex pixels"),
        ("huge", "too large for memory"),
        ("bool_npy", "boolean pixels"), ("string_npy", "data is not an image"),
        ("object_npy", "not a plain NumPy array file"),
        ("axes_mismatch", "given, but the file has"), ("unknown_axes", "unknown axis letter"),
        ("random_zarr", "not a readable zarr store"),
        ("complex_zarr", "complex pixels"),
        ("ome_unknown_axis", "has no n2v_jax equivalent"),
        ("plate_missing_well", "is listed in the plate's metadata but is not there"),
    ]],
    *[("predict", kind, words) for kind, words in [
        ("missing", "no such file"),
        ("nan", "NaN/inf pixel(s)"), ("inf", "NaN/inf pixel(s)"),
        ("truncated", "not a readable TIFF file"), ("png_named_tif", "not a readable TIFF file"),
        ("empty", "not a readable TIFF file"), ("folder_as_file", "no .tif/.tiff files"),
        ("rgb", "channel(s), but the model was trained on"),
        ("complex", "complex pixels"),
        ("huge", "too large for memory"),
        ("axes_mismatch", "given, but the file has"), ("unknown_axes", "unknown axis letter"),
        ("output_in_missing_folder", NO_SUCH_FOLDER),
    ]],
    *[("predict_folder", kind, words) for kind, words in [
        ("nan", "NaN/inf pixel(s)"), ("truncated", "not a readable TIFF file"),
        ("png_named_tif", "not a readable TIFF file"), ("empty", "not a readable TIFF file"),
        ("rgb", "channel(s), but the model was trained on"),
        ("complex", "complex pixels"),
        ("huge", "too large for memory"),
    ]],
    *[("predict_zarr", kind, words) for kind, words in [
        ("random_zarr", "not a readable zarr store"),
        ("complex_zarr", "complex pixels"),
        ("ome_unknown_axis", "has no n2v_jax equivalent"),
        ("ome_nan", "NaN/inf pixel(s)"),
        ("ome_other_channels", "channels named"),
        ("output_in_missing_folder", NO_SUCH_FOLDER),
    ]],
    ("predict_plate", "plate_missing_well", "is listed in the plate's metadata but is not there"),
    ("predict_plate", "plate_nan_field", "NaN/inf pixel(s)"),
    *[("evaluate", kind, words) for kind, words in [
        ("nan", "NaN/inf pixel(s)"), ("truncated", "not a readable TIFF file"),
        ("png_named_tif", "not a readable TIFF file"), ("empty", "not a readable TIFF file"),
        ("folder_as_file", "is a folder, not a TIFF file"),
        ("rgb", "differs from its clean image"),
        ("complex", "complex pixels"),
        ("huge", "too large for memory"),
    ]],
    *[("export", kind, words) for kind, words in [
        ("missing", "no such file"),
        ("nan", "NaN/inf pixel(s)"), ("truncated", "not a readable TIFF file"),
        ("png_named_tif", "not a readable TIFF file"), ("empty", "not a readable TIFF file"),
        ("folder_as_file", "is a folder, not a TIFF file"),
        ("rgb", "channel(s), but the model was trained on"),
        ("complex", "complex pixels"),
        ("huge", "too large for memory"),
        ("bool_npy", "boolean pixels"), ("string_npy", "data is not an image"),
        ("axes_mismatch", "given, but the file has"), ("unknown_axes", "unknown axis letter"),
        ("output_in_missing_folder", NO_SUCH_FOLDER),
    ]],
]
IDS = [f"{entry}-{kind}" for entry, kind, _ in CASES]


def _make(kind: str, folder: str) -> str:
  if kind == "axes_mismatch":
    os.makedirs(folder, exist_ok=True)
    return write_tiff(os.path.join(folder, "cyx.tif"), noisy_stack(0, (3, 48, 48)), "CYX")
  if kind in ("unknown_axes", "output_in_missing_folder"):
    os.makedirs(folder, exist_ok=True)
    return write_tiff(os.path.join(folder, "good.tif"), noisy_stack(0, (48, 48)), "YX")
  return bad_inputs.make(kind, folder)


def _snapshot(folder: str) -> dict[str, str]:
  """Every file and folder under `folder` (hidden ones too): size, time, content's hash."""
  out = {}
  for root, dirs, names in os.walk(folder):
    for d in dirs:
      out[os.path.relpath(os.path.join(root, d), folder) + "/"] = "folder"
    for n in names:
      path = os.path.join(root, n)
      st = os.stat(path)
      with open(path, "rb") as f:  # the sparse 149 GiB file: its size, time, first MiB
        content = hashlib.sha256(f.read(1 << 20)).hexdigest()
      out[os.path.relpath(path, folder)] = f"{st.st_size} {st.st_mtime_ns} {content}"
  return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """A 1-channel model (2 training steps) and a 3-channel one trained on channels named
  DNA, RNA, AGP."""
  from n2v_jax.training import trainer
  d = tmp_path_factory.mktemp("models")
  trainer.train_and_evaluate(tiny_config(**{"train.num_steps": 2}), str(d / "one"))
  three = np.stack([noisy_stack(i, (48, 48)) for i in range(3)])
  path = str(d / "three.tif")
  tifffile.imwrite(path, three, imagej=True, photometric="minisblack",
                   metadata={"axes": "CYX", "Labels": bad_inputs.NAMES})
  trainer.train_and_evaluate(tiny_config(**{"train.num_steps": 2, "data.path": path}),
                             str(d / "three"))
  return {1: str(d / "one"), 3: str(d / "three")}


@dataclasses.dataclass
class Case:
  command: list[str]
  named: str  # the path its error line names
  job: str = ""  # a folder's or plate's failing job, which also gets a `failed:` line
  outputs: tuple[str, ...] = ()  # what a folder or plate writes for its good jobs
  bad_output: str = ""  # where the failing job's output would be: nothing may be there


def _command(entry: str, kind: str, case_dir: str, models: dict) -> Case:
  inputs = os.path.join(case_dir, "in")
  axes = AXES.get(kind)
  model = models[3 if kind == "ome_other_channels" else 1]
  missing_folder = kind == "output_in_missing_folder"
  out_dir = os.path.join(case_dir, "missing") if missing_folder else case_dir
  if entry == "train":
    path = _make(kind, inputs)
    return Case(["n2v_jax.train", "--config", "configs/test_tiny.py", "--workdir",
                 os.path.join(case_dir, "workdir"), f"--config.data.path={path}"]
                + ([f"--config.data.axes={axes}"] if axes else []), path)
  if entry in ("predict", "predict_zarr"):
    path = _make("ome_good" if entry == "predict_zarr" and missing_folder else kind, inputs)
    out = os.path.join(out_dir, "out" + (".tif" if entry == "predict" else ".ome.zarr"))
    return Case(["n2v_jax.predict", "--workdir", model, "--input", path, "--output", out,
                 "--noprogress"] + (["--axes", axes] if axes else []),
                out_dir if missing_folder else path)
  if entry == "predict_plate":
    path = _make(kind, inputs)
    command = ["n2v_jax.predict", "--workdir", model, "--input", path, "--output",
               os.path.join(case_dir, "out.ome.zarr"), "--noprogress"]
    if kind == "plate_missing_well":  # the plate itself is incomplete: refused as a whole
      return Case(command, os.path.join(path, "A", "2"))
    return Case(command, os.path.join(path, "A", "2", "0"), "A/2/0",  # A/1/0 is denoised
                ("out.ome.zarr/A/1/0/zarr.json", "out.ome.zarr/n2v_batch_report.json"),
                "out.ome.zarr/A/2/0/")
  if entry == "predict_folder":  # the bad file beside a good one, which is denoised
    path = _make(kind, inputs)
    write_tiff(os.path.join(inputs, "a_good.tif"), noisy_stack(1, (48, 48)), "YX")
    name = os.path.basename(path)
    return Case(["n2v_jax.predict", "--workdir", model, "--input", inputs, "--output",
                 os.path.join(case_dir, "out"), "--noprogress"], path, name,
                ("out/a_good.tif", "out/n2v_batch_report.json"), f"out/{name}")
  if entry == "evaluate":  # the bad file as a noisy image, with its clean partner
    noisy, clean = os.path.join(inputs, "noisy"), os.path.join(inputs, "clean")
    path = _make(kind, noisy)
    stem = os.path.splitext(os.path.basename(path))[0]
    write_tiff(_mkdir(clean, stem + ".tif"), noisy_stack(2, (48, 48)), "YX")
    return Case(["n2v_jax.evaluate", "--workdir", model, "--noisy", noisy, "--clean", clean,
                 "--output", os.path.join(case_dir, "results")], path)
  assert entry == "export"
  path = _make(kind, inputs)
  test_input = [] if missing_folder else ["--test_input", path]
  return Case(["n2v_jax.export", "--workdir", model, "--output",
               os.path.join(out_dir, "m.zip"), *test_input]
              + (["--test_axes", axes] if axes else []), out_dir if missing_folder else path)


def _mkdir(folder: str, name: str) -> str:
  os.makedirs(folder, exist_ok=True)
  return os.path.join(folder, name)


@pytest.fixture(scope="module")
def outcomes(models, tmp_path_factory):
  """Every case run once: {id: (case, result, snapshot before, snapshot after)}."""
  root = tmp_path_factory.mktemp("corpus")
  model_files = {n: _snapshot(m) for n, m in models.items()}
  runner = CliRunner()
  done = {}
  try:
    for (entry, kind, _), case_id in zip(CASES, IDS):
      case_dir = str(root / case_id)
      os.makedirs(case_dir)
      case = _command(entry, kind, case_dir, models)
      before = _snapshot(case_dir)
      done[case_id] = (case, runner.run(*case.command), before, _snapshot(case_dir))
  finally:
    runner.close()
  assert {n: _snapshot(m) for n, m in models.items()} == model_files  # models untouched
  return done


@pytest.mark.parametrize("entry, kind, words", CASES, ids=IDS)
def test_refused_with_one_line_and_nothing_written(outcomes, entry, kind, words):
  case, result, before, after = outcomes[f"{entry}-{kind}"]
  assert result.returncode == (2 if case.job else 1), result.stderr  # 2: others are done
  assert "Traceback" not in result.stderr + result.stdout
  lines = result.stderr.splitlines()
  if case.job:  # a folder or plate: the failure as it happened, then the one error line
    assert len(lines) == 2 and lines[0].startswith(f"failed: {case.job}: "), lines
    assert words in lines[0]
    lines = lines[1:]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert words in lines[0] and case.named in lines[0], lines[0]
  # every input as it was; nothing new but a folder's or plate's outputs of its good jobs
  assert {k: v for k, v in after.items() if k in before} == before
  new = set(after) - set(before)
  assert set(case.outputs) <= new
  first = {p.split("/")[0] + "/" for p in case.outputs}
  assert all(any(p.startswith(f) for f in first) or p in first for p in new), new
  assert not [p for p in new if case.bad_output and p.startswith(case.bad_output)], new
  assert not [p for p in new if os.path.basename(p.rstrip("/")).startswith(".")
              and not p.endswith("/.n2v_blocks")], new  # no temporary file


def test_readme_troubleshooting_lists_every_message(outcomes):
  """Each kind of message the corpus meets is a row of the README's table, and each row is
  a message the corpus meets: the table cannot drift from what users see."""
  readme = open(os.path.join(REPO, "README.md")).read()
  section = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
  rows = re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)
  met = {words for _, _, words in CASES}
  assert set(rows) == met, (sorted(met - set(rows)), sorted(set(rows) - met))


def test_what_the_too_large_message_offers_works(tmp_path):
  """The 149 GiB file that every whole read refuses trains streamed (memory-mapped)."""
  from n2v_jax.training import trainer
  path = bad_inputs.make("huge", str(tmp_path))
  summary = trainer.train_and_evaluate(
      tiny_config(**{"data.path": path, "data.streaming": True, "train.num_steps": 2}),
      str(tmp_path / "w"))
  assert summary["steps"] == 2
