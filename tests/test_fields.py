"""Filename grouping of single-channel files into fields; training and batch on them."""

import os

import numpy as np
import pytest
import tifffile

from n2v_jax.data import sources
from n2v_jax.inference import folders
from n2v_jax.inference import paths
from n2v_jax.inference import predictor
from n2v_jax.io import fields
from n2v_jax.io import tiff
from n2v_jax.training import trainer
from n2v_jax.inference.options import PredictOptions
from tests.helpers import noisy_stack, tiny_config


def _phenix(row, col, fld, ch):
  return f"r{row:02d}c{col:02d}f{fld:02d}p01-ch{ch}sk1fk1fl1.tiff"


def _write_plate(folder, wells=((1, 1), (1, 2)), fields_per_well=2, channels=(2, 3, 5),
                 shape=(40, 40), compress=True):
  os.makedirs(folder, exist_ok=True)
  written = {}
  for w, (row, col) in enumerate(wells):
    for f in range(1, fields_per_well + 1):
      for ch in channels:
        data = noisy_stack(100 * w + 10 * f + ch, shape, np.float32).astype(np.uint16)
        name = _phenix(row, col, f, ch)
        # Phenix writes plain single-page LZW TIFFs without axes metadata
        tifffile.imwrite(os.path.join(folder, name), data,
                         compression="lzw" if compress else None)
        written[name] = data
  return written


def test_phenix_grouping_orders_channels(tmp_path):
  names = [_phenix(1, 1, 1, c) for c in (5, 2, 3)] + [_phenix(1, 2, 1, c) for c in (3, 2, 5)]
  paths = [str(tmp_path / n) for n in names] + [str(tmp_path / "notes.tif")]
  found, unmatched, incomplete = fields.group_fields(paths, "phenix")
  assert [f.key for f in found] == ["r01c01f01p01-ch*sk1fk1fl1.tiff",
                                    "r01c02f01p01-ch*sk1fk1fl1.tiff"]
  assert found[0].channels == ["2", "3", "5"]  # numeric order by default
  assert [os.path.basename(p) for p in found[1].paths] == [_phenix(1, 2, 1, c) for c in (2, 3, 5)]
  assert unmatched == [str(tmp_path / "notes.tif")] and incomplete == []
  chosen, _, _ = fields.group_fields(paths, "phenix", channels=(5, 3))  # a subset, in order
  assert chosen[0].channels == ["5", "3"] and len(chosen[0].paths) == 2
  assert fields.group_fields(paths, "phenix", channels="05,3")[0][0].channels == ["5", "3"]


def test_custom_pattern_and_errors(tmp_path):
  names = ["plate1_A01_s1_w1.tif", "plate1_A01_s1_w2.tif", "plate1_A01_s2_w1.tif"]
  found, _, incomplete = fields.group_fields(names, r"^.*_w(?P<channel>\d)\.tif$", strict=False)
  assert [f.key for f in found] == ["plate1_A01_s1_w*.tif"]
  assert "plate1_A01_s2_w*.tif" in incomplete[0][1] and "channel(s) 2 missing" in incomplete[0][1]
  with pytest.raises(ValueError, match=r"field plate1_A01_s2_w\*.tif: channel\(s\) 2 missing"):
    fields.group_fields(names, r"^.*_w(?P<channel>\d)\.tif$")
  with pytest.raises(ValueError, match="named group"):
    fields.group_fields(names, r"^.*_w\d\.tif$")
  with pytest.raises(ValueError, match="not a valid regular expression"):
    fields.group_fields(names, r"(?P<channel>")
  with pytest.raises(ValueError, match="no file name matches"):
    fields.group_fields(names, "phenix")
  with pytest.raises(ValueError, match="appears twice"):
    fields.group_fields(["a_w1.tif", "a_w01.tif"], r"^a_w(?P<channel>\d+)\.tif$")
  with pytest.raises(ValueError, match="listed twice"):
    fields.group_fields(names, r"^.*_w(?P<channel>\d)\.tif$", channels=(1, 1))


def test_read_field_rejects_mixed_shapes(tmp_path):
  tifffile.imwrite(tmp_path / _phenix(1, 1, 1, 1), np.zeros((32, 32), np.uint16))
  tifffile.imwrite(tmp_path / _phenix(1, 1, 1, 2), np.zeros((32, 40), np.uint16))
  (field,), _, _ = fields.group_fields(tiff.list_images(str(tmp_path)), "phenix")
  with pytest.raises(ValueError, match=r"shape \(32, 40\).*differs"):
    fields.read_field(field)


def test_load_grouped_folder_equals_stacked_channels(tmp_path):
  written = _write_plate(tmp_path / "plate", wells=((1, 1),), fields_per_well=2)
  cfg = tiny_config(**{"data.path": str(tmp_path / "plate"), "data.channel_pattern": "phenix",
                       "data.channels": (5, 2), "data.channel_names": ("DNA", "AGP")})
  raw = sources.open_source(cfg.data, 0)
  assert raw.channel_names == ["DNA", "AGP"] and raw.spatial_axes == "YX"
  images = [raw.sample(i) for i in range(len(raw))]
  assert len(images) == 2 and images[0].shape == (40, 40, 2)
  np.testing.assert_array_equal(images[1][..., 0], written[_phenix(1, 1, 2, 5)])
  np.testing.assert_array_equal(images[1][..., 1], written[_phenix(1, 1, 2, 2)])
  bad = tiny_config(**{"data.path": str(tmp_path / "plate"), "data.channel_pattern": "phenix",
                       "data.channel_names": ("DNA",)})
  with pytest.raises(ValueError, match="1 names for 3 channels"):
    sources.open_source(bad.data, 0)


def test_train_and_batch_denoise_a_phenix_plate(tmp_path):
  written = _write_plate(tmp_path / "plate")
  os.remove(tmp_path / "plate" / _phenix(1, 2, 2, 3))  # one incomplete field
  tifffile.imwrite(tmp_path / "plate" / "thumbnail.tif", np.zeros((8, 8), np.uint8))
  cfg = tiny_config(**{"data.path": str(tmp_path / "plate"), "data.channel_pattern": "phenix",
                       "data.channels": (5, 3, 2), "data.channel_names": ("DNA", "RNA", "AGP"),
                       "data.patch_shape": (16, 16), "train.num_steps": 2,
                       "data.val_fraction": 0.0})
  with pytest.raises(ValueError, match="channel\\(s\\) 3 missing"):  # training is strict
    trainer.train_and_evaluate(cfg, str(tmp_path / "w"))
  good_dir = tmp_path / "good"
  good_dir.mkdir()
  for name in written:
    if os.path.exists(tmp_path / "plate" / name) and not name.startswith("r01c02f02"):
      os.link(tmp_path / "plate" / name, good_dir / name)
  cfg.data.path = str(good_dir)
  trainer.train_and_evaluate(cfg, str(tmp_path / "w"))
  meta = predictor.load_predictor(str(tmp_path / "w")).meta
  assert meta.channel_names == ("DNA", "RNA", "AGP")

  # batch: the pattern and channel order come from the workdir's config
  out = tmp_path / "out"
  with pytest.raises(ValueError, match="2 of 5 job") as failure:
    paths.predict_path(str(tmp_path / "w"), str(tmp_path / "plate"), str(out))
  summary = failure.value.summary
  failed = {r.name: r.reason for r in summary.failed}
  assert "channel(s) 3 missing" in failed["r01c02f02p01-ch*sk1fk1fl1.tiff"]
  assert "does not match the channel pattern" in failed["thumbnail.tif"]
  done = sorted(os.path.basename(o) for r in summary.of("done") for o in r.outputs)
  expected = sorted(n for n in written if not n.startswith("r01c02f02"))
  assert done == expected == sorted(f for f in os.listdir(out) if f.endswith(".tiff"))
  for name in expected:  # each output is the single-channel file it came from
    img = tiff.read_image(str(out / name))
    assert img.data.shape == written[name].shape and img.data.dtype == np.float32
    assert not np.allclose(img.data, written[name])
  again = folders.denoise_folder(
      predictor.load_predictor(str(tmp_path / "w")), str(tmp_path / "plate"), str(out),
      PredictOptions(channel_pattern="phenix", channels=(5, 3, 2), progress=False,
                     dtype="input"))
  assert len(again.of("skipped")) == 3 and not again.of("done")
