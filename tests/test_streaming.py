"""Streaming training data (data.streaming=True): lazy files, host sampling, exact resume."""

import json
import os
import threading
import tracemalloc

import jax
import numpy as np
import pytest
import tifffile

from n2v_jax.data import dataset as dataset_lib
from n2v_jax.data import prefetch
from n2v_jax.data import sources
from n2v_jax.data import symmetry
from n2v_jax.inference import predictor
from n2v_jax.io import tiff
from n2v_jax.training import trainer
from tests.helpers import noisy_stack, tiny_config, write_tiff


def _stack(tmp_path, shape=(5, 40, 48), name="s.tif", seed=0):
  data = noisy_stack(seed, shape, np.uint16)
  return write_tiff(tmp_path / name, data, "SYX", imagej=False), data


def _dataset(path, patch=(16, 16), seed=0, **overrides):
  config = tiny_config(**{"data.path": str(path), "data.streaming": True, **overrides})
  raw = sources.open_source(config.data, seed)
  return dataset_lib.build_dataset(config.data, raw, patch, seed), config


def _crop(sample_YXC, origin, patch):
  return sample_YXC[tuple(slice(int(o), int(o) + p) for o, p in zip(origin, patch))]


def _expected(ds, sampler, step, full_SYXC):
  """The batch for `step` cut from the whole array by hand."""
  v, corners, sym = sampler.draw(step)
  views = ds.train
  out = []
  for b in range(len(v)):
    sample = full_SYXC[views.sample[v[b]]].astype(np.float32)
    crop = _crop(sample, views.origin[v[b]] + corners[b], sampler.patch)
    x = ((crop - ds.mean) / ds.std).astype(np.float32)
    out.append(symmetry.apply(x, int(sym[b])) if sampler.augment else x)
  return np.stack(out)


def test_sampler_is_deterministic_per_seed_and_step(tmp_path):
  path, _ = _stack(tmp_path)
  ds, _ = _dataset(path)
  a, b = ds.sampler(8, True, seed=0), _dataset(path)[0].sampler(8, True, seed=0)
  np.testing.assert_array_equal(a.batch(3), b.batch(3))  # fresh objects, same batch
  np.testing.assert_array_equal(a.batch(3), a.batch(3))
  assert not np.array_equal(a.batch(3), a.batch(4))
  assert not np.array_equal(a.batch(3), ds.sampler(8, True, seed=1).batch(3))


def test_patches_are_crops_of_the_file(tmp_path):
  path, data = _stack(tmp_path)
  ds, _ = _dataset(path)
  full = data[..., None]
  for augment in (False, True):
    sampler = ds.sampler(16, augment, seed=0)
    for step in (0, 7):
      np.testing.assert_array_equal(sampler.batch(step), _expected(ds, sampler, step, full))
  assert len({int(s) for step in range(5) for s in ds.sampler(16, True, 0).draw(step)[2]}) > 4
  x = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
  assert len({symmetry.apply(x, k).tobytes() for k in range(8)}) == 8


def test_images_chosen_in_proportion_to_patch_positions(tmp_path):
  folder = tmp_path / "f"
  folder.mkdir()
  write_tiff(folder / "a.tif", noisy_stack(0, (24, 24)), "YX")  # 9*9 = 81 positions
  write_tiff(folder / "b.tif", noisy_stack(1, (40, 40)), "YX")  # 25*25 = 625
  ds, _ = _dataset(folder, **{"data.val_fraction": 0.0})
  sampler = ds.sampler(64, False, seed=0)
  files = np.concatenate([ds.train.files(sampler.draw(s)[0]) for s in range(100)])
  assert np.mean(files == 0) == pytest.approx(81 / 706, abs=0.02)
  corners = np.concatenate([sampler.draw(s)[1][sampler.draw(s)[0] == 1] for s in range(20)])
  assert corners.min() == 0 and corners.max() == 40 - 16  # every position reachable


def test_uncompressed_files_are_memory_mapped_not_loaded(tmp_path, monkeypatch):
  path = write_tiff(tmp_path / "big.tif", noisy_stack(0, (200, 64, 64)), "TYX")  # 3.3 MB
  monkeypatch.setattr(dataset_lib, "STATS_PIXELS", 4096)
  tracemalloc.start()
  try:
    ds, _ = _dataset(path)
    sampler = ds.sampler(8, True, seed=0)
    for step in range(10):
      sampler.batch(step)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert isinstance(ds.source.store.files[0].data, np.memmap)
  assert peak < os.path.getsize(path) / 8, peak
  npy = tmp_path / "s.npy"
  np.save(npy, noisy_stack(1, (3, 32, 32)))
  ds, _ = _dataset(npy, **{"data.axes": "SYX"})
  assert isinstance(ds.source.store.files[0].data, np.memmap) and len(ds.source) == 3
  img = tiff.read_image(path, lazy=True)
  assert isinstance(img.data, np.memmap) and img.axes == "TYX"


def test_compressed_files_read_on_demand_with_lru_cache(tmp_path):
  folder = tmp_path / "lzw"
  folder.mkdir()
  stacks = [noisy_stack(i, (2, 32, 40), np.uint16) for i in range(4)]
  for i, s in enumerate(stacks):
    tifffile.imwrite(folder / f"{i}.tif", s, imagej=True, metadata={"axes": "TYX"},
                     compression="lzw", photometric="minisblack")
  ds, _ = _dataset(folder, **{"data.stream_cache_files": 2})
  store = ds.source.store
  assert all(f.data is None for f in store.files)
  assert isinstance(tiff.read_image(folder / "0.tif", lazy=True).data, tiff.Unread)
  full = np.concatenate(stacks)[..., None]  # samples in file order, as raw indexes them
  sampler = ds.sampler(8, True, seed=0)
  for step in range(6):
    np.testing.assert_array_equal(sampler.batch(step), _expected(ds, sampler, step, full))
  assert len(store._cache) <= 2 and store.decoded > 4  # evicted and decoded again


def test_small_data_gives_the_in_memory_statistics_and_validation(tmp_path):
  path, _ = _stack(tmp_path, shape=(6, 40, 48))
  ds, config = _dataset(path)
  raw = sources.open_source(config.data, 0)
  ref = dataset_lib.build_dataset(config.data, raw, (16, 16), 0)
  np.testing.assert_array_equal(ds.mean, ref.mean)
  np.testing.assert_array_equal(ds.std, ref.std)
  np.testing.assert_array_equal(ds.val_inputs, ref.val_inputs)
  # one image: its last rows are held out, read alone, and never trained on
  one = write_tiff(tmp_path / "one.tif", noisy_stack(3, (80, 48)), "YX")
  ds, config = _dataset(one, **{"data.val_fraction": 0.25})
  ref = dataset_lib.build_dataset(config.data, sources.open_source(config.data, 0), (16, 16), 0)
  np.testing.assert_array_equal(ds.val_inputs, ref.val_inputs)
  assert ds.train.size.tolist() == [[60, 48]] and ds.val_inputs.shape[0] == 3
  corners = np.concatenate([ds.sampler(16, False, 0).draw(s)[1] for s in range(50)])
  assert corners[:, 0].max() == 60 - 16


def test_subsampled_statistics_close_to_full_data(tmp_path):
  rng = np.random.default_rng(0)
  data = (rng.gamma(2.0, 300.0, (8, 96, 96)) + 100).astype(np.float32)
  path = write_tiff(tmp_path / "g.tif", data, "TYX")
  ds, _ = _dataset(path, **{"data.val_fraction": 0.0})
  assert ds.train.size.prod(1).sum() > 16384  # really subsampled below
  norm = dataset_lib.fit_normalizer(ds.train, (16, 16), "meanstd", (1.0, 99.0), 0,
                                    max_pixels=16384)
  mean, std = norm.mean, norm.std
  assert mean[0] == pytest.approx(data.mean(), rel=0.03)
  assert std[0] == pytest.approx(data.std(), rel=0.05)
  norm = dataset_lib.fit_normalizer(ds.train, (16, 16), "percentile", (1.0, 99.0), 0,
                                    max_pixels=16384)
  lo, width = norm.mean, norm.std
  p1, p99 = np.percentile(data, [1.0, 99.0])
  assert lo[0] == pytest.approx(p1, rel=0.1) and lo[0] + width[0] == pytest.approx(p99, rel=0.05)
  again = dataset_lib.fit_normalizer(ds.train, (16, 16), "meanstd", (1.0, 99.0), 0,
                                     max_pixels=16384)
  assert again.mean[0] == mean[0]  # seeded


def test_streaming_training_resumes_exactly(tmp_path):
  path, _ = _stack(tmp_path, shape=(4, 40, 40))
  config = tiny_config(**{"data.path": path, "data.streaming": True,
                          "train.data_parallel": False})  # one device: fast to compile
  full, split = tmp_path / "full", tmp_path / "split"
  summary = trainer.train_and_evaluate(config, str(full))
  assert summary["steps"] == 6 and "psnr_noisy" not in summary  # no ground truth
  assert trainer.train_and_evaluate(config, str(split), stop_after=3) == {"stopped_at": 3}
  trainer.train_and_evaluate(config, str(split))
  a = predictor.load_predictor(str(full)).variables
  b = predictor.load_predictor(str(split)).variables
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  rows = [[json.loads(l) for l in open(w / "metrics.jsonl")] for w in (full, split)]
  assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]] == [2, 4, 6]
  assert rows[0][-1]["train_loss"] == rows[1][-1]["train_loss"]  # same patches, same masks
  assert json.load(open(full / "config.json"))["data"]["streaming"] is True


def test_end_of_run_evaluation_reads_only_the_first_sample(tmp_path):
  config = tiny_config(**{"data.streaming": True})  # synthetic: clean ground truth known
  ds = dataset_lib.build_dataset(config.data, sources.open_source(config.data, 0), (16, 16), 0)
  ref = sources.open_source(config.data, 0)
  noisy, clean = ds.evaluation_samples()
  np.testing.assert_array_equal(noisy[0], ref.sample(0))
  np.testing.assert_array_equal(clean[0], ref.clean.sample(0))
  path, _ = _stack(tmp_path, shape=(3, 32, 32))
  ds, _ = _dataset(path, **{"data.clean_path": path})
  noisy, clean = ds.evaluation_samples()
  assert len(noisy) == len(clean) == 1 and noisy[0].shape == (32, 32, 1)
  assert _dataset(path)[0].evaluation_samples() is None  # no ground truth: no PSNR


def test_prefetcher_order_errors_and_close():
  seen = []
  pf = prefetch.Prefetcher(lambda i: seen.append(i) or i * 10, 3, 8, depth=2)
  assert [pf.get() for _ in range(5)] == [30, 40, 50, 60, 70]
  pf.close()

  def boom(i):
    if i == 2:
      raise ValueError("x.tif: bad")
    return i
  pf = prefetch.Prefetcher(boom, 0, 10)
  assert [pf.get(), pf.get()] == [0, 1]
  with pytest.raises(ValueError, match="x.tif: bad"):
    pf.get()
  pf = prefetch.Prefetcher(lambda i: i, 0, 10**6, depth=1)
  pf.close()  # a producer blocked on a full queue still ends
  assert not any(t.name == "n2v-prefetch" for t in threading.enumerate())


def test_file_that_disappears_or_changes(tmp_path):
  lzw = tmp_path / "lzw"
  lzw.mkdir()
  for i in range(3):
    tifffile.imwrite(lzw / f"{i}.tif", noisy_stack(i, (32, 32), np.uint16), compression="lzw")
  ds, _ = _dataset(lzw, **{"data.stream_cache_files": 1, "data.val_fraction": 0.0})
  os.remove(lzw / "1.tif")
  with pytest.raises(ValueError, match=r"1.tif: file disappeared during training; expected "
                                       r"shape \(32, 32\)"):
    for step in range(20):
      ds.sampler(4, False, 0).batch(step)
  path, _ = _stack(tmp_path, shape=(3, 32, 32))
  ds, _ = _dataset(path)
  new = write_tiff(tmp_path / "new.tif", noisy_stack(0, (4, 32, 32), np.uint16), "SYX",
                   imagej=False)
  os.replace(new, path)  # as a sync tool would: the old pixels stay mapped, unseen
  with pytest.raises(ValueError, match=r"s.tif: file changed during training.*\(3, 32, 32\)"):
    ds.sampler(4, False, 0).batch(0)


@pytest.mark.parametrize("make, overrides, message", [
    (lambda d: (write_tiff(d / "a.tif", noisy_stack(0, (2, 32, 32)), "CYX"),
                write_tiff(d / "b.tif", noisy_stack(1, (3, 32, 32)), "CYX")) and d,
     {}, r"b.tif: 3 channels, but .*a.tif has 2"),
    (lambda d: (write_tiff(d / "a.tif", noisy_stack(0, (32, 32)), "YX"),
                write_tiff(d / "b.tif", noisy_stack(1, (4, 32, 32)), "ZYX")) and d,
     {}, r"b.tif: spatial axes ZYX differ from YX"),
    (lambda d: write_tiff(d / "t.tif", noisy_stack(0, (3, 12, 40)), "TYX"), {},
     r"t.tif\[0\]: image \(12, 40\) \(YX\) is smaller than data.patch_shape \(16, 16\)"),
    (lambda d: write_tiff(d / "t.tif", noisy_stack(0, (32, 32)), "YX"),
     {"data.channel_pattern": "phenix"}, "no file name matches the channel pattern"),
    (lambda d: write_tiff(d / "t.tif", noisy_stack(0, (32, 32)), "YX"),
     {"data.stream_cache_files": 0}, "stream_cache_files=0"),
])
def test_clear_errors(tmp_path, make, overrides, message):
  path = make(tmp_path)
  with pytest.raises(ValueError, match=message):
    _dataset(path, **overrides)


def test_nan_in_a_patch_names_the_file(tmp_path):
  data = noisy_stack(0, (32, 32))
  data[:, :] = np.nan
  path = write_tiff(tmp_path / "nan.tif", data, "YX")
  with pytest.raises(ValueError, match="nan.tif: .*NaN"):
    _dataset(path)


def test_numpy_array_streams_like_a_file(tmp_path):
  stack = noisy_stack(2, (3, 40, 40))
  config = tiny_config(**{"data.streaming": True, "data.axes": "SYX"})
  ds = dataset_lib.build_dataset(config.data, sources.open_source(config.data, 0, array=stack),
                                 (16, 16), 0)
  ref = dataset_lib.build_dataset(config.data, sources.open_source(config.data, 0, array=stack),
                                  (16, 16), 0)
  np.testing.assert_array_equal(ds.val_inputs, ref.val_inputs)
  assert ds.source.name(1) == "the NumPy array[1]"
  with pytest.raises(ValueError, match="set data.axes"):
    sources.open_source(tiny_config(**{"data.streaming": True}).data, 0, array=stack)


def _phenix_plate(folder, fields=2, channels=(2, 5), shape=(40, 48)):
  """Single-channel Phenix-named files; channel 2 LZW-compressed, channel 5 plain."""
  folder.mkdir()
  written = {}
  for f in range(1, fields + 1):
    for ch in channels:
      name = f"r01c01f{f:02d}p01-ch{ch}sk1fk1fl1.tiff"
      data = noisy_stack(10 * f + ch, shape, np.uint16)
      tifffile.imwrite(folder / name, data, compression="lzw" if ch == 2 else None)
      written[(f, ch)] = data
  return written


def test_grouped_channel_files_stream_like_in_memory(tmp_path):
  written = _phenix_plate(tmp_path / "plate", fields=3)
  group = {"data.channel_pattern": "phenix", "data.channels": (5, 2),
           "data.channel_names": ("DNA", "AGP"), "data.stream_cache_files": 1}
  ds, config = _dataset(tmp_path / "plate", **group)
  ref_config = tiny_config(**{"data.path": str(tmp_path / "plate"), **group})
  ref = dataset_lib.build_dataset(ref_config.data, sources.open_source(ref_config.data, 0),
                                  (16, 16), 0)
  assert ds.channel_names == ["DNA", "AGP"] and ds.in_channels == 2 and len(ds.source) == 3
  assert ds.source.name(0).endswith("r01c01f01p01-ch*sk1fk1fl1.tiff")
  assert all(f.data is None for f in ds.source.store.files)  # decoded on demand, per field
  np.testing.assert_allclose(ds.mean, ref.mean, rtol=1e-12)  # few pixels: all of them
  np.testing.assert_allclose(ds.std, ref.std, rtol=1e-12)
  np.testing.assert_array_equal(ds.val_inputs, ref.val_inputs)
  full = np.stack([np.stack([written[(f, 5)], written[(f, 2)]], -1) for f in (1, 2, 3)])
  sampler = ds.sampler(8, True, seed=0)
  for step in range(4):
    np.testing.assert_array_equal(sampler.batch(step), _expected(ds, sampler, step, full))
  assert len(ds.source.store._cache) == 1  # the LRU holds one field (both its files)

  os.remove(tmp_path / "plate" / "r01c01f02p01-ch2sk1fk1fl1.tiff")
  with pytest.raises(ValueError, match=r"ch2sk1fk1fl1.tiff: file disappeared during training"):
    for step in range(4, 40):
      sampler.batch(step)
  with pytest.raises(ValueError, match=r"field r01c01f02p01-ch\*sk1fk1fl1.tiff: channel\(s\) 2 "
                     "missing"):
    _dataset(tmp_path / "plate", **group)


def test_train_streams_grouped_fields(tmp_path):
  _phenix_plate(tmp_path / "plate")
  config = tiny_config(**{"data.path": str(tmp_path / "plate"), "data.streaming": True,
                          "data.channel_pattern": "phenix", "data.patch_shape": (16, 16),
                          "data.val_fraction": 0.0, "train.num_steps": 2})
  trainer.train_and_evaluate(config, str(tmp_path / "w"))
  meta = predictor.load_predictor(str(tmp_path / "w")).meta
  assert meta.channel_names == ("ch2", "ch5") and meta.in_channels == 2


def test_several_patches_per_image_decode_fewer_files(tmp_path):
  folder = tmp_path / "lzw"
  folder.mkdir()
  stacks = [noisy_stack(i, (32, 40), np.uint16)[None] for i in range(6)]
  for i, s in enumerate(stacks):
    tifffile.imwrite(folder / f"{i}.tif", s[0], compression="lzw")
  ds, _ = _dataset(folder, **{"data.val_fraction": 0.0})
  full = np.concatenate(stacks)[..., None]
  one, four = ds.sampler(8, True, 0), ds.sampler(8, True, 0, per_image=4)
  np.testing.assert_array_equal(one.draw(3)[0], ds.sampler(8, True, 0, per_image=1).draw(3)[0])
  for step in range(5):
    v = four.draw(step)[0]
    assert (v[:4] == v[0]).all() and (v[4:] == v[4]).all()  # 2 images, 4 patches each
    np.testing.assert_array_equal(four.batch(step), _expected(ds, four, step, full))
  assert len({int(x) for s in range(20) for x in four.draw(s)[0]}) == 6  # all images used
  with pytest.raises(ValueError, match="stream_patches_per_image=9: expected an integer from 1 "
                     r"to train.batch_size \(8\)"):
    ds.sampler(8, True, 0, per_image=9)
