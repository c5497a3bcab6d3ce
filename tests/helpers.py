"""Shared test helpers: tiny configs and synthetic TIFFs."""

import os

import numpy as np
import tifffile

from n2v_jax.configs import data_root as _data_root, test_tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  config = test_tiny.get_config()
  for dotted, value in overrides.items():
    *groups, field = dotted.split(".")
    node = config
    for g in groups:
      node = node[g]
    node[field] = value
  return config


def write_tiff(path, data, axes, imagej=True):
  tifffile.imwrite(path, data, imagej=imagej, metadata={"axes": axes},
                   photometric="minisblack")
  return str(path)


def noisy_stack(seed, shape, dtype=np.float32):
  rng = np.random.default_rng(seed)
  base = np.linspace(0, 1, int(np.prod(shape))).reshape(shape)
  return (base * 1000 + rng.normal(0, 50, shape) + 200).astype(dtype)


def data_root():
  return _data_root()


def tensorboard_events(workdir):
  """({tag: [(step, value)]}, {tag: [(step, image)]}) of a workdir's TensorBoard events, read
  by TensorBoard's own EventAccumulator (which applies the purge of a restarted run)."""
  import io
  from PIL import Image
  from tensorboard.backend.event_processing import event_accumulator as ea
  acc = ea.EventAccumulator(os.path.join(str(workdir), "tensorboard"),
                            size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
  acc.Reload()
  scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
  images = {t: [(e.step, np.asarray(Image.open(io.BytesIO(e.encoded_image_string))))
                for e in acc.Images(t)] for t in acc.Tags()["images"]}
  return scalars, images
