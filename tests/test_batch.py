"""Batch denoising of a folder: skip-and-resume, sharding, failures, dtype scaling, CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from n2v_jax import cli
from n2v_jax.inference import dtypes
from n2v_jax.inference import folders
from n2v_jax.inference import jobs
from n2v_jax.inference import options
from n2v_jax.inference import predictor
from n2v_jax.io import tiff
from n2v_jax.training import trainer
from n2v_jax.inference.options import PredictOptions
from tests.helpers import REPO, noisy_stack, tiny_config, write_tiff

NAMES = ["DNA", "RNA", "AGP"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  d = tmp_path_factory.mktemp("model")
  path = write_tiff(d / "train.tif", noisy_stack(0, (3, 48, 48)), "CYX")
  config = tiny_config(**{"data.path": path, "train.num_steps": 4, "model.depth": 2})
  trainer.train_and_evaluate(config, str(d / "w"))
  return str(d / "w")


@pytest.fixture(scope="module")
def pred(workdir):
  return predictor.load_predictor(workdir)


def _plate(folder, n_good=6):
  """Good multi-channel fields (mixed shapes and dtypes) plus one file of each bad kind."""
  os.makedirs(folder, exist_ok=True)
  good = {}
  for i in range(n_good):
    shape = (3, 32 + 4 * (i % 2), 36)
    dtype = [np.uint16, np.float32, np.uint8][i % 3]
    data = noisy_stack(i, shape, np.float32)
    if dtype == np.uint8:
      data = np.clip(data / 8, 0, 255)
    data = data.astype(dtype)
    if i == 0:
      data[0, :2, :2] = np.iinfo(np.uint16).max  # saturated pixels
      data[2] = 7  # a constant (empty) channel
    name = f"field{i:02d}.tif"
    tifffile.imwrite(os.path.join(folder, name), data, imagej=True, photometric="minisblack",
                     metadata={"axes": "CYX", "Labels": NAMES, "unit": "um"},
                     resolution=(1 / 0.598, 1 / 0.598))
    good[name] = data
  bad = {
      "corrupt.tif": "not a readable TIFF",
      "two_channels.tif": "2 channel(s), but the model was trained on 3",
      "volume.tif": "spatial axes ZYX",
      "nan.tif": "NaN",
      "truncated.tif": "not a readable TIFF",
  }
  with open(os.path.join(folder, "corrupt.tif"), "wb") as f:
    f.write(b"II*\x00" + b"garbage" * 20)
  write_tiff(os.path.join(folder, "two_channels.tif"), noisy_stack(1, (2, 32, 32)), "CYX")
  write_tiff(os.path.join(folder, "volume.tif"), noisy_stack(1, (4, 3, 32, 32)), "ZCYX")
  nan = noisy_stack(1, (3, 32, 32))
  nan[1, 3, 3] = np.nan
  write_tiff(os.path.join(folder, "nan.tif"), nan, "CYX")
  full = os.path.join(folder, "field00.tif")
  with open(full, "rb") as f:
    blob = f.read()
  with open(os.path.join(folder, "truncated.tif"), "wb") as f:
    f.write(blob[: len(blob) // 3])
  return good, bad


def test_parse_shard():
  assert options.parse_shard("") == (0, 1) and options.parse_shard("2/5") == (2, 5)
  for bad in ("5/5", "-1/3", "1", "a/b", "0/0"):
    with pytest.raises(ValueError, match="--shard"):
      options.parse_shard(bad)


def test_shards_partition_any_listing():
  names = [f"r{r:02d}c{c:02d}f01p01-ch1sk1fk1fl1.tiff" for r in range(1, 17) for c in range(1, 25)]
  for n in (1, 2, 3, 7):
    shards = [{x for x in names if jobs.shard_of(x, n) == i} for i in range(n)]
    assert set().union(*shards) == set(names)  # no gap
    assert sum(len(s) for s in shards) == len(names)  # no overlap
    if n > 1:
      assert all(len(s) > len(names) / n / 2 for s in shards)  # roughly balanced
    # the shard depends on the name only, not on the folder or the order of the listing
    assert all(jobs.shard_of("/a/" + x, n) == jobs.shard_of(x, n) for x in names[:5])


def test_folder_failures_skip_and_resume(pred, tmp_path):
  good, bad = _plate(tmp_path / "in")
  out = str(tmp_path / "out")
  summary = folders.denoise_folder(pred, str(tmp_path / "in"), out, PredictOptions(progress=False))
  by_name = {r.name: r for r in summary.results}
  assert {r.name for r in summary.of("done")} == set(good)
  assert {r.name for r in summary.failed} == set(bad)
  for name, message in bad.items():
    assert message in by_name[name].reason, (name, by_name[name].reason)
  notes = " ".join(by_name["field00.tif"].notes)
  assert "saturated" in notes and "constant channel(s) [2]" in notes
  for name, data in good.items():  # shape, axes, channel names and metadata kept
    img = tiff.read_image(os.path.join(out, name))
    assert img.data.shape == data.shape and img.axes == "CYX" and img.channel_names == NAMES
    assert img.data.dtype == np.float32 and np.isfinite(img.data).all()
    assert img.imagej_metadata["unit"] == "um"
    assert np.allclose(img.resolution, (1 / 0.598, 1 / 0.598), rtol=1e-4)
  assert sorted(f for f in os.listdir(out) if f.endswith(".tif")) == sorted(good)
  assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temp files left
  report = json.load(open(summary.report_path))
  assert report["counts"] == {"done": len(good), "skipped": 0, "failed": len(bad)}

  # a crashed run: one output missing -> the rerun only redoes that one
  os.remove(os.path.join(out, "field03.tif"))
  mtimes = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in good if n != "field03.tif"}
  again = folders.denoise_folder(pred, str(tmp_path / "in"), out, PredictOptions(progress=False))
  assert [r.name for r in again.of("done")] == ["field03.tif"]
  assert len(again.of("skipped")) == len(good) - 1 and len(again.failed) == len(bad)
  assert all(os.stat(os.path.join(out, n)).st_mtime_ns == t for n, t in mtimes.items())
  redo = folders.denoise_folder(pred, str(tmp_path / "in"), out,
                                PredictOptions(progress=False, overwrite=True))
  assert len(redo.of("done")) == len(good)


def test_sharded_runs_cover_the_folder_once(pred, tmp_path):
  good, bad = _plate(tmp_path / "in")
  out = str(tmp_path / "out")
  summaries = [folders.denoise_folder(pred, str(tmp_path / "in"), out,
                                      PredictOptions(shard=f"{i}/3", progress=False))
               for i in range(3)]
  done = [r.name for s in summaries for r in s.of("done")]
  failed = [r.name for s in summaries for r in s.failed]
  assert sorted(done) == sorted(good) and sorted(failed) == sorted(bad)  # no gap, no overlap
  assert len({s.report_path for s in summaries}) == 3  # one report per shard
  assert all(s.total_jobs == len(good) + len(bad) for s in summaries)


def test_integer_output_scaling_is_reversible(pred, tmp_path):
  data = noisy_stack(3, (3, 32, 32), np.float32).astype(np.uint16)
  src = tmp_path / "in"
  src.mkdir()
  tifffile.imwrite(src / "a.tif", data, imagej=True, photometric="minisblack",
                   metadata={"axes": "CYX", "Labels": NAMES})
  ref = folders.denoise_folder(pred, str(src), str(tmp_path / "f"), PredictOptions(progress=False))
  assert not ref.failed
  as_float = tiff.read_image(str(tmp_path / "f" / "a.tif")).data
  for scale, offset in ((1.0, 0.0), (0.25, 100.0)):
    out = tmp_path / f"i{scale}"
    folders.denoise_folder(pred, str(src), str(out), PredictOptions(
        dtype="input", int_scale=scale, int_offset=offset, progress=False))
    img = tiff.read_image(str(out / "a.tif"))
    assert img.data.dtype == np.uint16 and img.channel_names == NAMES
    np.testing.assert_array_equal(img.data, np.clip(np.rint((as_float - offset) / scale), 0, 65535))
    back = dtypes.read_denoised(str(out / "a.tif"))
    assert np.abs(back - as_float).max() <= scale / 2 + 1e-3  # exact up to rounding
    assert img.imagej_metadata["n2v_scale"] == scale
    if scale != 1.0:  # ImageJ calibration: Fiji shows denoised units
      assert img.imagej_metadata["c1"] == scale and img.imagej_metadata["c0"] == offset
  # values outside the integer range are clipped, and said so
  as_input = PredictOptions(dtype="input")
  arr, meta, notes = dtypes.to_output_dtype(np.array([-3.0, 10.4, 300.0]), np.uint8, as_input)
  assert arr.tolist() == [0, 10, 255] and "2 pixel(s) clipped" in notes[0]
  # float inputs keep their float type
  arr, meta, _ = dtypes.to_output_dtype(np.array([1.5]), np.float64, as_input)
  assert arr.dtype == np.float64 and meta == {}


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "n2v_jax.predict", *args], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=300)


def test_cli_folder_exit_codes_and_summary(workdir, tmp_path):
  inp, out = tmp_path / "in", tmp_path / "out"
  inp.mkdir()
  write_tiff(inp / "ok.tif", noisy_stack(1, (3, 32, 32)), "CYX")
  (inp / "broken.tif").write_bytes(b"not a tiff" * 10)
  r = _cli("--workdir", workdir, "--input", str(inp), "--output", str(out), "--noprogress")
  assert r.returncode == cli.EXIT_SOME_FAILED and "Traceback" not in r.stderr
  assert "failed: broken.tif: not a readable TIFF" in r.stdout
  assert "denoised 1, skipped 0 (already done), failed 1" in r.stdout
  assert (out / "ok.tif").exists()
  (inp / "broken.tif").unlink()
  r = _cli("--workdir", workdir, "--input", str(inp), "--output", str(out), "--shard", "0/1",
           "--noprogress")
  assert r.returncode == 0 and "denoised 0, skipped 1" in r.stdout, r.stdout + r.stderr
  r = _cli("--workdir", workdir, "--input", str(inp), "--output", str(out), "--shard", "3/2")
  assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: --shard")
