"""Prediction: tiling equals whole-image, TTA, file round trip, and bad inputs."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from n2v_jax.data import symmetry
from n2v_jax.inference import paths
from n2v_jax.inference import predictor
from n2v_jax.inference import tiling
from n2v_jax.io import tiff
from n2v_jax.training import trainer
from n2v_jax.inference.options import PredictOptions
from tests.helpers import REPO, noisy_stack, tiny_config, write_tiff


@pytest.fixture(scope="module")
def workdir_2d(tmp_path_factory):
  d = tmp_path_factory.mktemp("model2d")
  path = write_tiff(d / "train.tif", noisy_stack(0, (3, 48, 48)), "CYX")
  config = tiny_config(**{"data.path": path, "data.axes": "CYX", "train.num_steps": 4,
                          "model.depth": 2, "data.patch_shape": (16, 16)})
  trainer.train_and_evaluate(config, str(d / "w"))
  return str(d / "w")


@pytest.fixture(scope="module")
def workdir_3d(tmp_path_factory):
  d = tmp_path_factory.mktemp("model3d")
  path = write_tiff(d / "train.tif", noisy_stack(1, (12, 24, 24)), "ZYX")
  config = tiny_config(**{"data.path": path, "data.axes": "ZYX", "train.num_steps": 2,
                          "data.patch_shape": (8, 16, 16), "data.val_fraction": 0.0})
  trainer.train_and_evaluate(config, str(d / "w"))
  return str(d / "w")


def test_tiled_equals_whole_image_2d_odd_size(workdir_2d):
  pred = predictor.load_predictor(workdir_2d)
  image = noisy_stack(3, (97, 75, 3))  # odd, not a multiple of 2**depth
  tile = 2 * pred.halo + 3 * pred.divisor
  whole = predictor.predict_image(pred, image, PredictOptions(tile=0))
  tiled = predictor.predict_image(pred, image, PredictOptions(tile=tile))
  assert whole.shape == image.shape and whole.dtype == np.float32
  np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-3 * image.std())
  assert not np.allclose(whole, image)  # the model does something


def test_tiled_equals_whole_image_3d(workdir_3d):
  pred = predictor.load_predictor(workdir_3d)
  image = noisy_stack(4, (11, 37, 29, 1))
  tile = 2 * pred.halo + 2 * pred.divisor
  whole = predictor.predict_image(pred, image, PredictOptions(tile=0))
  tiled = predictor.predict_image(pred, image, PredictOptions(tile=tile))
  np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-3 * image.std())


@pytest.mark.parametrize("shape, tile, slices, batched", [
    ((40, 36, 3), 0, 1, False),  # not square: 8 passes over the transformed image
    ((48, 48, 3), 0, 1, False),  # tile=0: whole images, one call each
    ((48, 48, 3), 48, 1, True),  # 9 square tiles, the 8 symmetries of each in one call
    ((64, 64, 3), 32, 1, True),  # 16 square tiles, 8 symmetries each
    ((64, 64, 3), 32, 8, True),  # and spread over 8 batch slices
])
def test_tta_averages_eight_transforms(workdir_2d, shape, tile, slices, batched):
  import dataclasses
  pred = predictor.load_predictor(workdir_2d)
  pred = dataclasses.replace(pred, model=pred.model.clone(batch_chunks=slices))
  image = noisy_stack(5, shape)
  with_tta = predictor.predict_image(pred, image, PredictOptions(tile=tile, tta=True))
  one = PredictOptions(tile=tile)
  manual = np.mean([symmetry.invert(predictor.predict_image(
      pred, np.ascontiguousarray(symmetry.apply(image, k)), one), k) for k in range(8)],
      axis=0)
  np.testing.assert_allclose(with_tta, manual, rtol=1e-5, atol=1e-4)
  assert with_tta.shape == image.shape
  x = np.zeros(shape, np.float32)
  batched_tta = tiling.predict_normalized(pred, x, PredictOptions(tile=tile, tta=True))
  assert (batched_tta is not None) == batched


def test_tta_one_after_the_other_where_one_call_of_eight_computes_more(workdir_2d,
                                                                       monkeypatch):
  pred = predictor.load_predictor(workdir_2d)
  core = 8 * pred.divisor
  tile = core + 2 * pred.halo
  # room for one whole tile per call: the 8 symmetries of a call would need 4 smaller tiles
  monkeypatch.setattr(tiling, "MAX_VOXELS_PER_CALL", tile * tile)
  image = noisy_stack(7, (core, core, 3))
  assert tiling.predict_normalized(pred, np.zeros(image.shape, np.float32),
                                   PredictOptions(tile=tile, tta=True)) is None
  with_tta = predictor.predict_image(pred, image, PredictOptions(tile=tile, tta=True))
  one = PredictOptions(tile=tile)
  manual = np.mean([symmetry.invert(predictor.predict_image(
      pred, np.ascontiguousarray(symmetry.apply(image, k)), one), k) for k in range(8)],
      axis=0)
  np.testing.assert_allclose(with_tta, manual, rtol=1e-5, atol=1e-4)
  # the same image in calls of 8 symmetries, with the budget they would share
  monkeypatch.setattr(tiling, "MAX_VOXELS_PER_CALL", 8 * tile * tile)
  x = pred.normalize.image(image)
  batched = tiling.predict_normalized(pred, x, PredictOptions(tile=tile, tta=True))
  np.testing.assert_allclose(pred.normalize.inverse(batched), with_tta, rtol=1e-5, atol=1e-4)


def test_predict_file_keeps_shape_axes_metadata(workdir_2d, tmp_path):
  data = noisy_stack(6, (2, 3, 40, 50), np.uint16)
  src = tmp_path / "in.tif"
  tifffile.imwrite(src, data, imagej=True, photometric="minisblack",
                   metadata={"axes": "TCYX", "Labels": ["DNA", "RNA", "AGP"] * 2})
  before = src.read_bytes()
  out = tmp_path / "out.tif"
  paths.predict_path(workdir_2d, str(src), str(out))
  assert src.read_bytes() == before  # the input is never modified
  img = tiff.read_image(str(out))
  assert img.data.shape == data.shape and img.data.dtype == np.float32
  assert img.axes in ("TCYX", "SCYX") and img.channel_names == ["DNA", "RNA", "AGP"]


def test_existing_output_needs_overwrite(workdir_2d, tmp_path):
  src = write_tiff(tmp_path / "in.tif", noisy_stack(7, (3, 32, 32)), "CYX")
  out = tmp_path / "out.tif"
  out.write_bytes(b"precious")
  with pytest.raises(FileExistsError, match="--overwrite"):
    paths.predict_path(workdir_2d, src, str(out))
  assert out.read_bytes() == b"precious"
  paths.predict_path(workdir_2d, src, str(out), PredictOptions(overwrite=True))
  assert tiff.read_image(str(out)).data.shape == (3, 32, 32)


def test_wrong_channel_count(workdir_2d, tmp_path):
  src = write_tiff(tmp_path / "two.tif", noisy_stack(8, (2, 32, 32)), "CYX")
  with pytest.raises(ValueError, match="2 channel.*trained on 3"):
    paths.predict_path(workdir_2d, src, str(tmp_path / "o.tif"))
  assert not (tmp_path / "o.tif").exists()


def test_folder_to_folder(workdir_2d, tmp_path):
  (tmp_path / "in").mkdir()
  for i in range(2):
    write_tiff(tmp_path / "in" / f"f{i}.tif", noisy_stack(i, (3, 33, 31)), "CYX")
  outs = paths.predict_path(workdir_2d, str(tmp_path / "in"), str(tmp_path / "out")).outputs
  assert sorted(os.path.basename(o) for o in outs) == ["f0.tif", "f1.tif"]
  assert not [f for f in os.listdir(tmp_path / "out") if f.startswith(".")]


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "n2v_jax.predict", *args], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=300)


def test_cli_predict_and_errors(workdir_2d, tmp_path):
  src = write_tiff(tmp_path / "in.tif", noisy_stack(9, (3, 41, 45)), "CYX")
  ok = _cli("--workdir", workdir_2d, "--input", src, "--output", str(tmp_path / "o.tif"),
            "--tile", "32")
  assert ok.returncode == 0, ok.stderr
  assert tiff.read_image(str(tmp_path / "o.tif")).data.shape == (3, 41, 45)
  again = _cli("--workdir", workdir_2d, "--input", src, "--output", str(tmp_path / "o.tif"))
  nan = noisy_stack(1, (3, 32, 32))
  nan[0, 1, 1] = np.nan
  nan_src = write_tiff(tmp_path / "nan.tif", nan, "CYX")
  bad = _cli("--workdir", workdir_2d, "--input", nan_src, "--output", str(tmp_path / "n.tif"))
  missing = _cli("--workdir", workdir_2d, "--input", str(tmp_path / "nope.tif"), "--output",
                 str(tmp_path / "m.tif"))
  for r, message in ((again, "--overwrite"), (bad, "NaN"), (missing, "no such file")):
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], r.stderr
  assert not (tmp_path / "n.tif").exists() and not (tmp_path / "m.tif").exists()


@pytest.mark.parametrize("aligned,tile,n_parallel", [
    ([96, 72], 64, 1), ([96, 72], 64, 8), ([1024, 1024], 512, 8), ([8, 16, 16], 48, 4),
    ([40, 40], 0, 8), ([12, 400], 64, 3)])
def test_tile_plan_covers_the_image_with_aligned_bounded_tiles(aligned, tile, n_parallel):
  halo, divisor = 8, 4
  counts, cores = tiling.plan_tiles(aligned, tile, halo, divisor, n_parallel)
  for a, n, c in zip(aligned, counts, cores):
    assert c % divisor == 0 and n * c >= a and (n - 1) * c < a  # covers, no idle tile
    if tile:
      assert c + 2 * halo <= max(tile, 2 * halo + 4 * divisor)
  if tile:
    assert n_parallel * np.prod([c + 2 * halo for c in cores]) <= tiling.MAX_VOXELS_PER_CALL
  else:
    assert counts == [1] * len(aligned) and cores == aligned


def test_planned_cost_beats_the_naive_grid_with_parallel_slices():
  # 1024^2 in tiles of <= 512 on 8 parallel slices: the naive 3x3 grid of 464-cores would
  # fill 2 calls of 8 (16 tiles); the plan picks a count with less computed area.
  halo, divisor = 24, 4
  counts, cores = tiling.plan_tiles([1024, 1024], 512, halo, divisor, 8)
  cost = -(-np.prod(counts) // 8) * 8 * np.prod([c + 2 * halo for c in cores])
  assert cost < 16 * (464 + 2 * halo) ** 2


def test_large_tiles_run_on_one_slice_where_eight_slices_compute_more():
  # 1024^2, halo 28: 8 slices need 16 tiles of 312 (1.49x the image's pixels), one slice
  # 4 tiles of 568 (1.23x): more than SLICE_SPEEDUP apart, so one slice.
  n_par, counts, cores = tiling.plan_parallel_tiles([1024, 1024], 1024, 28, 4, 1, 8)
  assert (n_par, counts, cores) == (1, [2, 2], [512, 512])
  # Tiles of at most 512: 9 tiles of 400 (1.37x) against 1.49x, within SLICE_SPEEDUP.
  n_par, counts, cores = tiling.plan_parallel_tiles([1024, 1024], 512, 28, 4, 1, 8)
  assert (n_par, counts, cores) == (8, [4, 4], [256, 256])
  # Two devices: the 4 large tiles, one per device and call.
  plan = tiling.plan_parallel_tiles([1024, 1024], 1024, 28, 4, 2, 16)
  assert plan == (2, [2, 2], [512, 512])


def test_model_from_an_older_format_is_refused_clearly(workdir_2d, tmp_path):
  import json
  import shutil
  old = str(tmp_path / "old")
  shutil.copytree(workdir_2d, old)
  meta_path = os.path.join(old, "model.json")
  meta = json.load(open(meta_path))
  meta["format"] = "n2v_jax/1"
  json.dump(meta, open(meta_path, "w"))
  with pytest.raises(ValueError, match="model format 'n2v_jax/1'.*retrain"):
    predictor.load_predictor(old)
