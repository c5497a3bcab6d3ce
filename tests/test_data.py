"""Data pipeline: on-device patch sampling, validation split, normalization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n2v_jax.data import dataset as dataset_lib
from n2v_jax.data import normalizer
from n2v_jax.data import sampling
from n2v_jax.data import sources
from tests.helpers import tiny_config


def test_patches_come_from_inside_each_image():
  # Two images of different sizes padded into one array; padding is NaN so it would show.
  images = np.full((2, 20, 30, 1), np.nan, np.float32)
  images[0, :20, :30] = np.arange(600).reshape(20, 30, 1)
  images[1, :12, :16] = 1000 + np.arange(192).reshape(12, 16, 1)
  sizes = np.array([[20, 30], [12, 16]], np.int32)
  sample = jax.jit(lambda k: sampling.sample_batch(k, jnp.asarray(images), jnp.asarray(sizes),
                                                   (8, 8), 64, True))
  seen = set()
  for i in range(5):
    patches = np.asarray(sample(jax.random.key(i)))
    assert np.isfinite(patches).all()
    seen |= {int(p.min() >= 1000) for p in patches}
  assert seen == {0, 1}  # both images are used


def test_augmentation_gives_all_eight_symmetries():
  image = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  sizes = np.array([[4, 4]], np.int32)
  patches = np.asarray(sampling.sample_batch(jax.random.key(0), jnp.asarray(image),
                                             jnp.asarray(sizes), (4, 4), 200, True))
  variants = {p.tobytes() for p in patches}
  assert len(variants) == 8


def test_split_holds_out_images_or_rows():
  cfg = tiny_config(**{"data.axes": "SYX"}).data
  raw = sources.open_source(cfg, 0, array=np.zeros((10, 32, 32), np.float32))
  train, val = dataset_lib.split_validation(raw, 0.2, (16, 16), seed=0)
  assert len(train) == 8 and len(val) == 2
  single = sources.open_source(cfg, 0, array=np.zeros((1, 100, 32), np.float32))
  train, val = dataset_lib.split_validation(single, 0.2, (16, 16), seed=0)
  assert train.read_whole(0).shape == (80, 32, 1) and val.read_whole(0).shape == (20, 32, 1)


def test_normalization_per_channel_and_percentile():
  rng = np.random.default_rng(0)
  image = np.stack([rng.normal(10, 2, (50, 50)), rng.normal(1000, 50, (50, 50))], -1)
  mean, std = normalizer.statistics([image], "meanstd", (1, 99))
  np.testing.assert_allclose(mean, image.reshape(-1, 2).mean(0))
  lo, scale = normalizer.statistics([image], "percentile", (1, 99))
  np.testing.assert_allclose(lo, np.percentile(image.reshape(-1, 2), 1, axis=0))
  constant = np.full((10, 10, 1), 7.0)
  mean, std = normalizer.statistics([constant], "meanstd", (1, 99))
  assert std[0] == 1.0 and mean[0] == 7.0


def test_single_number_patch_shape_expands():
  assert dataset_lib.resolve_patch_shape((32,), 3, 4) == (32, 32, 32)
  with pytest.raises(ValueError, match="spatial axes"):
    dataset_lib.resolve_patch_shape((32, 32), 3, 4)
