"""OME-Zarr images and HCS plates, in and out, checked against the community's own library
(ome-zarr-py writes what n2v_jax reads and reads what n2v_jax writes)."""

import os

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

import jax

from n2v_jax.data import dataset as dataset_lib
from n2v_jax.data import sources
from n2v_jax.inference import jobs
from n2v_jax.inference import omezarr_jobs
from n2v_jax.inference import paths
from n2v_jax.inference import predictor
from n2v_jax.io import omezarr
from n2v_jax.nn import unet
from n2v_jax.training import steps
from n2v_jax.training import trainer
from n2v_jax.workdir import model_meta, saved_config
from n2v_jax.inference.options import PredictOptions
from tests.helpers import noisy_stack, tiny_config
from tests.omezarr_files import NAMES, write_ome, write_plate


def read_ome(path):
  """(metadata, level-0 array) of an image as ome-zarr-py reads it."""
  node = list(Reader(parse_url(str(path)))())[0]
  return node.metadata, np.asarray(node.data[0]), node


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tiny model trained straight from an OME-Zarr image, streamed chunk by chunk."""
  d = tmp_path_factory.mktemp("zarr_model")
  path = write_ome(d / "train.ome.zarr", noisy_stack(0, (3, 48, 48)), "CYX", (1, 16, 16))
  config = tiny_config(**{"data.path": path, "data.streaming": True, "train.num_steps": 2,
                          "train.checkpoint_every": 2, "model.depth": 2})
  trainer.train_and_evaluate(config, str(d / "w"))
  return str(d / "w")


def untrained_predictor(spatial_axes, channels, depth=2):
  """A Predictor with the initial weights: tiling exactness holds for any weights, and this
  costs no training compile."""
  config = tiny_config(**{"model.depth": depth})
  model = unet.make_model(config.model, channels)
  patch = (8,) * len(spatial_axes)
  state = steps.create_train_state(jax.random.key(1), model,
                                   steps.make_optimizer(config.opt), (1, *patch, channels))
  divisor = unet.divisor(depth)
  halo = -(-unet.receptive_field_radius(config.model) // divisor) * divisor
  meta = model_meta.ModelMeta(
      algorithm="n2v", model=saved_config.to_dict(config.model), opt={}, in_channels=channels,
      spatial_axes=spatial_axes, channel_names=None, mean=(1000.0,) * channels,
      std=(300.0,) * channels, normalization="meanstd", transform="none", patch_shape=patch,
      train_axes=spatial_axes + "C", augment=True, predict_blend=False)
  return predictor.Predictor(model, state.variables, meta, divisor, halo)


@pytest.fixture(scope="module")
def pred(workdir):
  return predictor.load_predictor(workdir)


def _reference(pred, data_TCYX, tta=False):
  """Whole-image prediction of each T of a TCYX array (the TIFF/array path), TCYX back."""
  out = [predictor.predict_image(pred, np.moveaxis(t, 0, -1).astype(np.float32),
                                 PredictOptions(tile=0, tta=tta))
         for t in data_TCYX]
  return np.stack([np.moveaxis(o, -1, 0) for o in out])


# ------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_reads_what_ome_zarr_writes(tmp_path, version):
  data = noisy_stack(1, (2, 3, 40, 36))
  path = write_ome(tmp_path / "img.ome.zarr", data, "TCYX", (1, 1, 16, 16), version)
  img = omezarr.open_image(path)
  assert img.axes == "TCYX" and img.version == version and img.channel_names == NAMES
  assert img.shape == data.shape and img.chunks == (1, 1, 16, 16)  # level 0, not level 1
  source = sources.open_paths(sources.FileStore(8), path, None)
  assert len(source) == 2 and source.spatial_axes == "YX" and source.channels == 3
  assert source.channel_names == NAMES
  np.testing.assert_array_equal(source.read(1, (5, 7), (16, 20)),
                                np.moveaxis(data[1, :, 5:21, 7:27], 0, -1))


def test_single_plane_z_is_2d_and_axes_are_checked(tmp_path):
  data = noisy_stack(2, (3, 1, 32, 32))
  path = write_ome(tmp_path / "czyx.ome.zarr", data, "CZYX", (1, 1, 16, 16))
  img = omezarr.open_image(path)
  assert img.axes == "CSYX"  # one z plane: a 2D image
  assert omezarr.open_image(path, "CZYX").axes == "CSYX"  # the metadata's own axes are fine
  with pytest.raises(ValueError, match="axes ZCYX given, but the OME-Zarr metadata says CZYX"):
    omezarr.open_image(path, "ZCYX")


def test_plain_zarr_array_needs_axes(tmp_path):
  data = noisy_stack(3, (2, 32, 40))
  arr = zarr.create_array(str(tmp_path / "plain.zarr"), shape=data.shape, chunks=(1, 16, 16),
                          dtype="float32")
  arr[:] = data
  with pytest.raises(ValueError, match="without OME-Zarr metadata has no axes"):
    sources.open_paths(sources.FileStore(8), str(tmp_path / "plain.zarr"), None)
  source = sources.open_paths(sources.FileStore(8), str(tmp_path / "plain.zarr"), "SYX")
  assert len(source) == 2 and source.channels == 1
  np.testing.assert_array_equal(source.sample(1)[..., 0], data[1])


@pytest.mark.filterwarnings("ignore::UserWarning")  # ome-zarr's own pydantic warning
def test_ngff_06_draft_axes_from_its_coordinate_system(tmp_path):
  from ome_zarr.classes.image import OMEZarrImage, OMEZarrMultiscale
  image = OMEZarrImage(data=noisy_stack(3, (3, 32, 32)), scale={"c": 1.0, "y": 0.5, "x": 0.5},
                       axes=["c", "y", "x"], name="draft")
  group = zarr.open_group(str(tmp_path / "v06.zarr"), mode="w")
  OMEZarrMultiscale(image=image, scale_factors=[2]).to_ome_zarr(group=group, overwrite=True)
  img = omezarr.open_image(str(tmp_path / "v06.zarr"))
  assert img.version == "0.6" and img.axes == "CYX" and img.shape == (3, 32, 32)


def test_a_patch_reads_only_the_chunks_it_touches(tmp_path, monkeypatch):
  path = write_ome(tmp_path / "big.ome.zarr", noisy_stack(4, (3, 96, 96)), "CYX", (1, 16, 16))
  source = sources.open_paths(sources.FileStore(8), path, None)
  keys = []
  original = zarr.storage.LocalStore.get

  async def counting_get(self, key, *args, **kwargs):
    keys.append(key)
    return await original(self, key, *args, **kwargs)

  monkeypatch.setattr(zarr.storage.LocalStore, "get", counting_get)
  source.read(0, (16, 32), (16, 16))  # one chunk per channel
  chunk_keys = [k for k in keys if "/c/" in k]
  assert len(chunk_keys) == 3, keys  # 3 of the 108 chunks of level 0
  keys.clear()
  source.read(0, (8, 8), (16, 16))  # 4 chunks per channel
  assert len([k for k in keys if "/c/" in k]) == 12


def test_plate_fields_are_training_samples(tmp_path):
  fields = {f"A/{c}/{f}": noisy_stack(10 * c + f, (3, 32, 32)) for c in (1, 2) for f in (0, 1)}
  path = write_plate(tmp_path / "plate.zarr", fields)
  source = sources.open_paths(sources.FileStore(8), path, None)
  assert len(source) == 4 and source.channels == 3
  assert [source.name(i)[len(path) + 1:] for i in range(4)] == list(fields)
  np.testing.assert_array_equal(source.sample(3), np.moveaxis(fields["A/2/1"], 0, -1))


def test_trains_from_ome_zarr_streamed_and_in_memory(workdir, tmp_path):
  meta = predictor.load_predictor(workdir).meta  # the module's model: streamed from the store
  assert list(meta.channel_names) == NAMES and meta.train_axes == "CYX"
  assert meta.in_channels == 3 and meta.spatial_axes == "YX"
  data = noisy_stack(5, (3, 48, 48))
  path = write_ome(tmp_path / "m.ome.zarr", data, "CYX", (1, 16, 16))
  config = tiny_config(**{"data.path": path, "data.val_fraction": 0.0})
  dataset = dataset_lib.load(config.data, 0, 2)  # in memory: the same pixels, normalized
  np.testing.assert_allclose(dataset.normalize.inverse(dataset.train_NSC[0]),
                             np.moveaxis(data, 0, -1), rtol=1e-5)


# ------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("version, tta", [("0.4", False), ("0.5", False), ("0.5", True)])
def test_ome_zarr_reads_what_n2v_writes_and_values_match(pred, tmp_path, version, tta):
  data = noisy_stack(6, (2, 3, 45, 50))
  src = write_ome(tmp_path / "in.ome.zarr", data, "TCYX", (1, 1, 13, 17), version)
  out = str(tmp_path / "out.ome.zarr")
  result = omezarr_jobs.denoise_image(pred, src, out, PredictOptions(tta=tta,
                                                                     block_voxels=3 * 26 * 34))
  header, done = omezarr.BlockLog(out).read()
  # level 0's 2 x 2 x 2 blocks, then level 1's
  assert result.status == "done" and header["blocks"] == len(done) == 8 + _blocks(header, 1)
  meta, denoised, _ = read_ome(out)
  in_meta, _, _ = read_ome(src)
  assert meta["axes"] == in_meta["axes"]
  assert meta["coordinateTransformations"] == in_meta["coordinateTransformations"]
  assert meta["channel_names"] == NAMES
  assert omezarr.open_image(out).chunks == (1, 1, 13, 17) and omezarr.open_image(out).version \
      == version
  np.testing.assert_allclose(denoised, _reference(pred, data, tta), rtol=1e-4,
                             atol=1e-3 * data.std())


def test_block_regions_match_whole_image_3d(tmp_path):
  p = untrained_predictor("ZYX", 1, depth=1)  # halo 10
  data = noisy_stack(8, (10, 20, 29))
  # 2 x 2 x 2 blocks of 5 x 10 x 15; regions: all of Z, Y/X cut with their halo (one region
  # shape, so one compile: 3D compiles are slow)
  src = write_ome(tmp_path / "in.ome.zarr", data, "ZYX", (5, 10, 15), names=None)
  omezarr_jobs.denoise_image(p, src, str(tmp_path / "out.ome.zarr"),
                             PredictOptions(block_voxels=5 * 10 * 15))
  header = omezarr.BlockLog(str(tmp_path / "out.ome.zarr")).read()[0]
  assert header["blocks"] == 8 + _blocks(header, 1)
  _, denoised, _ = read_ome(tmp_path / "out.ome.zarr")
  whole = predictor.predict_image(p, data[..., None], PredictOptions(tile=0))[..., 0]
  np.testing.assert_allclose(denoised, whole, rtol=1e-4, atol=1e-3 * data.std())


def test_plain_sharded_uint16_array_to_array_with_input_dtype(pred, tmp_path):
  data = noisy_stack(12, (3, 40, 48)).astype(np.uint16)
  src = zarr.create_array(str(tmp_path / "in.zarr"), shape=data.shape, dtype="uint16",
                          chunks=(1, 8, 8), shards=(1, 16, 16))
  src[:] = data
  out = str(tmp_path / "out.zarr")
  with pytest.raises(ValueError, match="no axes"):
    omezarr_jobs.denoise_image(pred, str(tmp_path / "in.zarr"), out)
  result = omezarr_jobs.denoise_image(pred, str(tmp_path / "in.zarr"), out,
                                      PredictOptions(axes="CYX", dtype="input",
                                                     block_voxels=3 * 16 * 32))
  header, _ = omezarr.BlockLog(out).read()
  assert result.status == "done" and header["block"] == [3, 32, 16]  # whole shards
  written = zarr.open_array(out, mode="r")
  assert written.dtype == np.uint16 and written.chunks == (1, 8, 8)
  assert written.shards == (1, 16, 16) and written.attrs["n2v"]["n2v_scale"] == 1.0
  expected = np.clip(np.rint(_reference(pred, data[None].astype(np.float32))[0]), 0, 65535)
  assert np.abs(written[:].astype(np.float64) - expected).max() <= 1  # float rounding only


def _blocks(header: dict, level: int) -> int:
  """The blocks of a pyramid level (k > 0) in an output's BlockLog header."""
  plan = header["levels"][level - 1]
  return int(np.prod([-(-n // b) for n, b in zip(plan["shape"], plan["block"])]))


class Killed(BaseException):
  """A process killed mid-block (not an error a job could catch)."""


_PREDICT_BLOCK = omezarr_jobs.predict_block


def _fail_after(monkeypatch, n):
  """predict_block counting its calls, raising Killed from call n + 1 on (n None: never)."""
  calls = []
  original = _PREDICT_BLOCK

  def predict_block(*args, **kwargs):
    if n is not None and len(calls) >= n:
      raise Killed()
    calls.append(args[2])
    return original(*args, **kwargs)

  monkeypatch.setattr(omezarr_jobs, "predict_block", predict_block)
  return calls


def test_interrupted_image_resumes_without_redoing_blocks(workdir, pred, tmp_path, monkeypatch):
  data = noisy_stack(9, (2, 3, 40, 40))
  src = write_ome(tmp_path / "in.ome.zarr", data, "TCYX", (1, 1, 16, 16))
  out = str(tmp_path / "out.ome.zarr")
  opts = PredictOptions(block_voxels=3 * 16 * 16)  # 2 x 3 x 3 = 18 blocks
  calls = _fail_after(monkeypatch, 5)
  with pytest.raises(Killed):
    omezarr_jobs.denoise_image(pred, src, out, opts)
  assert len(omezarr.BlockLog(out).read()[1]) == 5 and not omezarr_jobs.finished(out)
  calls = _fail_after(monkeypatch, None)
  omezarr_jobs.denoise_image(pred, src, out, opts)
  assert len(calls) == 18 - 5 and omezarr_jobs.finished(out)
  _, denoised, _ = read_ome(out)
  np.testing.assert_allclose(denoised, _reference(pred, data), rtol=1e-4, atol=1e-3 * data.std())
  # finished: the CLI path refuses it without --overwrite, redoes it with
  with pytest.raises(FileExistsError, match="pass --overwrite"):
    paths.predict_path(workdir, src, out)


def test_signal_stops_after_the_current_block(pred, tmp_path, monkeypatch):
  data = noisy_stack(10, (1, 3, 32, 32))
  src = write_ome(tmp_path / "in.ome.zarr", data, "TCYX", (1, 1, 16, 16))
  out = str(tmp_path / "out.ome.zarr")

  class After2:
    signum = None

  preemption = After2()
  original = omezarr.BlockLog.add

  def add(self, index):
    original(self, index)
    if len(self.read()[1]) == 2:
      preemption.signum = 15  # SIGTERM arrives while block 2 is written

  monkeypatch.setattr(omezarr.BlockLog, "add", add)
  with pytest.raises(jobs.Stopped, match="stopped after 2 of 5 block"):  # 4 + level 1's
    omezarr_jobs.denoise_image(pred, src, out, PredictOptions(block_voxels=3 * 16 * 16),
                               preemption=preemption)
  monkeypatch.setattr(omezarr.BlockLog, "add", original)
  assert len(omezarr.BlockLog(out).read()[1]) == 2
  assert omezarr_jobs.denoise_image(pred, src, out,
                                    PredictOptions(block_voxels=3 * 16 * 16)).status == "done"
  assert omezarr_jobs.finished(out)


def test_predict_path_overwrite_and_refusals(workdir, tmp_path):
  data = noisy_stack(11, (3, 32, 32))
  src = write_ome(tmp_path / "in.ome.zarr", data, "CYX", (1, 16, 16))
  out = str(tmp_path / "out.ome.zarr")
  assert paths.predict_path(workdir, src, out).outputs == [out]
  with pytest.raises(FileExistsError, match="finished.*pass --overwrite"):
    paths.predict_path(workdir, src, out)
  before = os.stat(os.path.join(out, omezarr.PROGRESS_FILE)).st_mtime_ns
  paths.predict_path(workdir, src, out, PredictOptions(overwrite=True))
  assert os.stat(os.path.join(out, omezarr.PROGRESS_FILE)).st_mtime_ns != before
  other = tmp_path / "not_zarr"
  other.mkdir()
  (other / "keep.txt").write_text("x")
  with pytest.raises(FileExistsError, match="not an unfinished n2v_jax output"):
    paths.predict_path(workdir, src, str(other))
  with pytest.raises(ValueError, match="not a zarr store; refusing"):
    paths.predict_path(workdir, src, str(other), PredictOptions(overwrite=True))
  assert (other / "keep.txt").exists()
  with pytest.raises(ValueError, match="written as OME-Zarr"):
    paths.predict_path(workdir, src, str(tmp_path / "x.tif"))
  two = write_ome(tmp_path / "two.ome.zarr", noisy_stack(1, (2, 32, 32)), "CYX", (1, 16, 16),
                  names=None)
  with pytest.raises(ValueError, match="2 channel\\(s\\), but the model was trained on 3"):
    paths.predict_path(workdir, two, str(tmp_path / "two_out.zarr"))
  assert not os.path.exists(tmp_path / "two_out.zarr")  # nothing written for a bad input


# ------------------------------------------------------------------------------ plates


def _plate_fields():
  # wells B/1 and B/2: one per shard of 2 (a well's fields hash to the same shard of 2)
  return {f"B/{c}/{f}": noisy_stack(20 + 10 * c + f, (3, 40, 40)) for c in (1, 2) for f in (0, 1)}


def test_plate_sharded_interrupted_and_resumed(pred, tmp_path, monkeypatch):
  fields = _plate_fields()
  src = write_plate(tmp_path / "plate.ome.zarr", fields)
  out = str(tmp_path / "n2v.ome.zarr")
  opts = PredictOptions(progress=False, block_voxels=3 * 16 * 16)  # 9 blocks per field
  shards = {name: jobs.shard_of(name.replace("/", "_"), 2) for name in fields}
  assert set(shards.values()) == {0, 1}  # both shards have fields

  calls = _fail_after(monkeypatch, 12)  # shard 0 killed in its second field
  with pytest.raises(Killed):
    omezarr_jobs.denoise_plate(pred, src, out, opts.replace(shard="0/2"))
  calls = _fail_after(monkeypatch, None)
  s1 = omezarr_jobs.denoise_plate(pred, src, out, opts.replace(shard="1/2"))
  assert {r.name for r in s1.of("done")} == {n for n, s in shards.items() if s == 1}
  first = [n for n in fields if shards[n] == 0]
  finished_before = {n: omezarr_jobs.finished(os.path.join(out, n)) for n in first}
  mtimes = {n: os.stat(os.path.join(out, n, omezarr.PROGRESS_FILE)).st_mtime_ns
            for n, done in finished_before.items() if done}
  calls.clear()
  s0 = omezarr_jobs.denoise_plate(pred, src, out, opts.replace(shard="0/2"))
  n0 = sum(shards[n] == 0 for n in fields)
  assert len(calls) == 9 * n0 - 12  # only the blocks the killed run had not written
  assert len(s0.of("done")) + len(s0.of("skipped")) == n0 and not s0.failed
  assert all(os.stat(os.path.join(out, n, omezarr.PROGRESS_FILE)).st_mtime_ns == t
             for n, t in mtimes.items())  # finished fields untouched
  calls.clear()
  again = [omezarr_jobs.denoise_plate(pred, src, out, opts.replace(shard=f"{i}/2"))
           for i in (0, 1)]
  assert not calls and sum(len(s.of("skipped")) for s in again) == 4

  node = list(Reader(parse_url(out))())[0]  # ome-zarr reads the plate
  assert node.metadata["metadata"]["plate"]["wells"] == [
      {"path": "B/1", "rowIndex": 0, "columnIndex": 0},
      {"path": "B/2", "rowIndex": 0, "columnIndex": 1}]
  assert omezarr.plate_fields(out) == list(fields)
  for name, data in fields.items():
    meta, denoised, _ = read_ome(os.path.join(out, name))
    assert meta["channel_names"] == NAMES
    assert meta["coordinateTransformations"][0][0]["scale"] == [1.0, 0.5, 0.5]
    np.testing.assert_allclose(denoised, _reference(pred, data[None])[0], rtol=1e-4,
                               atol=1e-3 * data.std())


def test_plate_failing_field_reported_others_done_and_signal(pred, tmp_path):
  fields = _plate_fields()
  fields["B/2/1"] = noisy_stack(1, (2, 40, 40))  # 2 channels: the model has 3
  src = write_plate(tmp_path / "plate.zarr", fields, version="0.4")
  out = str(tmp_path / "out.zarr")
  summary = omezarr_jobs.denoise_plate(pred, src, out, PredictOptions(progress=False))
  assert {r.name for r in summary.of("done")} == set(fields) - {"B/2/1"}
  [bad] = summary.failed
  assert bad.name == "B/2/1" and "2 channel(s), but the model was trained on 3" in bad.reason
  assert os.path.exists(summary.report_path) and summary.report_path.startswith(out)
  assert not os.path.exists(os.path.join(out, "B/2/1"))
  assert omezarr.open_image(os.path.join(out, "B/1/0")).version == "0.4"

  class Stopped:
    signum = 15  # SIGTERM before the first job: nothing runs, the summary says so

  s = omezarr_jobs.denoise_plate(pred, src, str(tmp_path / "out2.zarr"),
                                 PredictOptions(progress=False), preemption=Stopped())
  assert s.stopped_by == 15 and not s.results


def _pyramid(path):
  """[(level array, its coordinateTransformations)] as ome-zarr-py reads the image."""
  node = list(Reader(parse_url(str(path)))())[0]
  return [(np.asarray(level), t) for level, t in
          zip(node.data, node.metadata["coordinateTransformations"])]


def _mean_down(a, f):
  """Block mean over f x f in the last two axes (sizes divisible by f)."""
  *lead, y, x = a.shape
  return a.reshape(*lead, y // f, f, x // f, f).mean(axis=(-3, -1))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_output_keeps_the_inputs_pyramid_and_a_killed_run_resumes(pred, tmp_path, monkeypatch,
                                                                   version):
  data = noisy_stack(12, (3, 64, 64))
  src = write_ome(tmp_path / "in.ome.zarr", data, "CYX", (1, 16, 16), version=version,
                  scale_factors=(2, 4))
  out = str(tmp_path / "out.ome.zarr")
  opts = PredictOptions(block_voxels=3 * 16 * 16)
  original, calls = omezarr.downsample, []

  def killed_after_one(*args):  # a kill while the pyramid is being written
    if calls:
      raise Killed()
    calls.append(1)
    return original(*args)
  monkeypatch.setattr(omezarr, "downsample", killed_after_one)
  with pytest.raises(Killed):
    omezarr_jobs.denoise_image(pred, src, out, opts)
  header, done = omezarr.BlockLog(out).read()
  assert len(done) == 16 + 1 and not omezarr_jobs.finished(out)  # level 0, one of level 1
  monkeypatch.setattr(omezarr, "downsample", original)
  level0_calls = _fail_after(monkeypatch, None)
  assert omezarr_jobs.denoise_image(pred, src, out, opts).status == "done"
  assert level0_calls == []  # level 0 was finished: not predicted again

  expected, got = _pyramid(src), _pyramid(out)
  assert len(got) == len(expected) == 3
  assert [a.shape for a, _ in got] == [a.shape for a, _ in expected] == [
      (3, 64, 64), (3, 32, 32), (3, 16, 16)]
  assert [t for _, t in got] == [t for _, t in expected]  # scales and translations
  denoised = got[0][0]
  np.testing.assert_allclose(denoised, _reference(pred, data[None])[0], rtol=1e-4,
                             atol=1e-3 * data.std())
  for k, (level, _) in enumerate(got[1:], start=1):
    np.testing.assert_allclose(level, _mean_down(denoised, 2 ** k), rtol=1e-5,
                               atol=1e-5 * np.ptp(denoised))
  ms = omezarr.open_image(out).multiscale
  assert ms["type"] == "mean" and ms["metadata"]["method"] == "n2v_jax.io.omezarr.downsample"


def test_downsample_mean_and_nearest():
  a = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)
  mean = omezarr.downsample(a, [2, 2], "mean")
  assert mean.shape == (3, 3) and mean[0, 0] == a[:2, :2].mean()
  assert mean[2, 1] == a[4, 2:4].mean()  # the last row's window is cut by the region's end
  np.testing.assert_array_equal(omezarr.downsample(a, [2, 3], "nearest"), a[::2, ::3])
  assert omezarr.level_factors([(3, 64, 65), (3, 32, 33), (3, 16, 16)]) == [[1, 2, 2],
                                                                          [1, 2, 2]]
  with pytest.raises(ValueError, match="not level 0"):
    omezarr.level_factors([(64, 64), (25, 32)])
