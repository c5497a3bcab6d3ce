"""configs/jump.py and multi-channel Cell Painting inputs: stacks, folders, bad data."""

import json
import os

import numpy as np
import pytest
import tifffile

from n2v_jax.data import sources
from n2v_jax.inference import predictor
from n2v_jax.io import tiff
from n2v_jax.training import config as train_config
from n2v_jax.training import trainer
from n2v_jax.configs import jump
from n2v_jax.inference.options import PredictOptions
from tests.helpers import data_root, noisy_stack, tiny_config, write_tiff

JUMP_FIELD = os.path.join(data_root(), "microscopy", "jump_cpg0000_BR00117006_A01_s1")


def _shrink(config, **overrides):
  """jump.py's choices with the tiny model and run of the test config."""
  tiny = tiny_config()
  config.model, config.train, config.opt = tiny.model, tiny.train, tiny.opt
  config.data.patch_shape, config.data.max_val_patches = (16, 16), 4
  config.predict.tile = 32
  for dotted, value in overrides.items():
    group, field = dotted.split(".")
    config[group][field] = value
  return config


@pytest.mark.parametrize("source", jump.SOURCES)
def test_jump_config_is_valid(source):
  config = jump.get_config(source)
  train_config.validate(config)
  assert config.data.normalization == "percentile" and config.data.transform == "anscombe"
  assert config.model.n2v2 and config.mask.strategy == "median"
  assert config.mask.channel_mode == "independent" and not config.model.independent_channels
  if source == "orig":
    assert config.data.channel_pattern == "phenix" and list(config.data.channels) == [5, 3, 2]
  with pytest.raises(ValueError, match="expected one of"):
    jump.get_config("bogus")


def test_train_on_folder_of_hyperstacks_shared_masks_independent_channels(tmp_path):
  folder = tmp_path / "fields"
  folder.mkdir()
  for i, dtype in enumerate((np.uint16, np.uint16, np.uint8)):
    data = noisy_stack(i, (4, 40, 40 + 8 * i))  # mixed field sizes are fine
    data[3] = 150.0 if i else 150  # Mito channel empty in every field: constant
    data[0, :3, :3] = 65535 if dtype == np.uint16 else 255  # saturated pixels
    data = np.clip(data, 0, np.iinfo(dtype).max).astype(dtype)
    tifffile.imwrite(folder / f"f{i}.tif", data, imagej=True, photometric="minisblack",
                     metadata={"axes": "CYX", "Labels": ["DNA", "ER", "RNA", "Mito"]})
  config = _shrink(jump.get_config("folder"), **{
      "data.path": str(folder), "mask.channel_mode": "shared",
      "model.independent_channels": True, "data.percentiles": (1.0, 99.0)})
  summary = trainer.train_and_evaluate(config, str(tmp_path / "w"))
  assert summary["steps"] == config.train.num_steps
  meta = json.load(open(tmp_path / "w" / "model.json"))
  assert meta["normalization"] == "percentile" and meta["channel_names"] == ["DNA", "ER", "RNA", "Mito"]
  assert meta["model"]["independent_channels"] is True
  # percentile normalization of the Anscombe-transformed counts: mean = 1st percentile,
  # std = 99th - 1st (robust to the saturated corner); the constant channel gets std 1
  # instead of a division by zero
  assert meta["transform"] == "anscombe"
  assert meta["std"][3] == 1.0 and meta["mean"][3] == pytest.approx(2 * np.sqrt(150.375))
  assert meta["std"][0] < 2000 and all(np.isfinite(meta["mean"]))
  rows = [json.loads(l) for l in open(tmp_path / "w" / "metrics.jsonl")]
  assert all(np.isfinite(r["train_loss"]) for r in rows)
  out = predictor.predict_image(predictor.load_predictor(str(tmp_path / "w")),
                                noisy_stack(5, (40, 40, 4)), PredictOptions(tile=0))
  assert np.isfinite(out).all()


def test_train_on_one_scyx_stack(tmp_path):
  path = write_tiff(tmp_path / "stack.tif", noisy_stack(0, (3, 4, 32, 32)), "TCYX")
  config = _shrink(jump.get_config("stack"), **{"data.path": path, "data.axes": "SCYX"})
  raw = sources.open_source(config.data, 0)
  assert len(raw) == 3 and raw.sample(0).shape == (32, 32, 4)
  trainer.train_and_evaluate(config, str(tmp_path / "w"))
  assert predictor.load_predictor(str(tmp_path / "w")).in_channels == 4


def test_folder_with_mixed_channel_counts_is_a_clear_error(tmp_path):
  folder = tmp_path / "mixed"
  folder.mkdir()
  write_tiff(folder / "a.tif", noisy_stack(0, (3, 32, 32)), "CYX")
  write_tiff(folder / "b.tif", noisy_stack(1, (5, 32, 32)), "CYX")
  config = _shrink(jump.get_config("folder"), **{"data.path": str(folder)})
  with pytest.raises(ValueError, match="b.tif: 5 channels, but .*a.tif has 3"):
    trainer.train_and_evaluate(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


@pytest.mark.skipif(not os.path.isdir(JUMP_FIELD), reason=f"JUMP sample data not found at {JUMP_FIELD}")
def test_raw_phenix_lzw_files_group_into_the_hyperstack():
  orig = sources.open_source(jump.get_config("orig").data, 0)
  stack = tiff.read_image(jump.get_config().data.path)
  assert orig.channel_names == stack.channel_names == ["DNA", "RNA", "AGP"]
  np.testing.assert_array_equal(orig.sample(0), np.moveaxis(stack.data, 0, -1).astype(np.float32))
