"""A run's `model.json`: everything prediction and export need to know about the trained
model, as one frozen record (`ModelMeta`) read and written only here.

It is plain JSON: loading a workdir never unpickles or runs code. Every model.json written
since format n2v_jax/2 still loads: keys added later get the value that reproduces what the
older models did (`MODEL_ADDED_FIELDS`, and `saved_config.ADDED_FIELDS` for the model part).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections
import numpy as np

from n2v_jax.data import symmetry
from n2v_jax.data.normalizer import Normalizer
from n2v_jax.errors import N2VError, NotFoundError
from n2v_jax.io import files
from n2v_jax.workdir import saved_config

MODEL_JSON = "model.json"
# n2v_jax/2: the U-Net's second conv per block halves the features (CSBDeep widths); models
# written as n2v_jax/1 have other parameter shapes and cannot be restored.
MODEL_FORMAT = "n2v_jax/2"
# model.json keys added after models were first written, with the value that reproduces
# what those older models did.
MODEL_ADDED_FIELDS = {"transform": "none", "channel_names": None, "algorithm": "n2v",
                      "predict_blend": False}


@dataclasses.dataclass(frozen=True)
class ModelMeta:
  """What a trained model is: its network, its data layout and its intensity mapping."""
  algorithm: str  # choices.ALGORITHMS
  model: dict  # config.model (every field; those added since filled in)
  opt: dict  # config.opt (kept for the record; prediction needs no optimizer)
  in_channels: int
  spatial_axes: str  # 'YX' or 'ZYX'
  channel_names: tuple[str, ...] | None
  mean: tuple[float, ...]  # per channel, after `transform` (the Normalizer's)
  std: tuple[float, ...]
  normalization: str  # choices.NORMALIZATIONS
  transform: str  # choices.TRANSFORMS
  patch_shape: tuple[int, ...]
  train_axes: str  # axes of the training files
  augment: bool  # trained with the 8 symmetries (so TTA is meaningful)
  predict_blend: bool  # prediction's default for the SURE blend (config.predict.blend)
  format: str = MODEL_FORMAT

  @property
  def model_config(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(self.model)

  @property
  def normalizer(self) -> Normalizer:
    return Normalizer(np.asarray(self.mean), np.asarray(self.std), self.transform)

  @property
  def n2v2(self) -> bool:
    return bool(self.model["n2v2"])

  def channel_labels(self) -> list[str]:
    """The channel names, or channel0, channel1, ... when training had none."""
    return list(self.channel_names or [f"channel{i}" for i in range(self.in_channels)])

  def to_json(self) -> dict:
    return {
        "format": self.format, "algorithm": self.algorithm, "model": dict(self.model),
        "opt": dict(self.opt), "in_channels": self.in_channels,
        "spatial_axes": self.spatial_axes,
        "channel_names": None if self.channel_names is None else list(self.channel_names),
        "mean": list(self.mean), "std": list(self.std), "normalization": self.normalization,
        "transform": self.transform, "patch_shape": list(self.patch_shape),
        "train_axes": self.train_axes, "augment": self.augment,
        "predict_blend": self.predict_blend,
    }

  @classmethod
  def from_json(cls, d: dict, where: str = "model.json") -> ModelMeta:
    """From a model.json dict of any version since MODEL_FORMAT (keys added since filled in)."""
    found = d.get("format")
    if found != MODEL_FORMAT:
      raise N2VError(f"{where}: model format {found!r}, this n2v_jax reads {MODEL_FORMAT!r} "
                     "(older versions used other U-Net widths); retrain in a new workdir")
    d = {**MODEL_ADDED_FIELDS, **d}
    try:
      return cls._parse(d, found)
    except (KeyError, TypeError, ValueError) as e:
      raise N2VError(f"{where}: {MODEL_JSON} is damaged ({type(e).__name__}: {e})") from None

  @classmethod
  def _parse(cls, d: dict, found: str) -> ModelMeta:
    names = d["channel_names"]
    return cls(
        algorithm=str(d["algorithm"]),
        model=saved_config.with_added_fields({"model": d["model"]})["model"],
        opt=dict(d.get("opt") or {}), in_channels=int(d["in_channels"]),
        spatial_axes=str(d["spatial_axes"]),
        channel_names=None if names is None else tuple(str(n) for n in names),
        mean=tuple(float(m) for m in d["mean"]), std=tuple(float(s) for s in d["std"]),
        normalization=str(d["normalization"]), transform=str(d["transform"]),
        patch_shape=tuple(int(p) for p in d["patch_shape"]), train_axes=str(d["train_axes"]),
        augment=bool(d["augment"]), predict_blend=bool(d["predict_blend"]), format=found)

  @classmethod
  def from_run(cls, config: Any, dataset: Any) -> ModelMeta:
    """The model a training run (config, data.dataset.Dataset) makes."""
    patch = tuple(dataset.patch)
    names = dataset.channel_names
    return cls(
        algorithm=config.algorithm, model=saved_config.to_dict(config.model),
        opt=saved_config.to_dict(config.opt), in_channels=int(dataset.in_channels),
        spatial_axes=dataset.spatial_axes,
        channel_names=None if names is None else tuple(names),
        mean=tuple(dataset.mean.tolist()), std=tuple(dataset.std.tolist()),
        normalization=config.data.normalization, transform=dataset.transform,
        patch_shape=patch, train_axes=dataset.source.source_axes,
        augment=bool(config.data.augment and symmetry.square_yx(patch)),
        predict_blend=bool(config.predict.blend))

  @classmethod
  def read(cls, workdir: str) -> ModelMeta:
    path = os.path.join(workdir, MODEL_JSON)
    if not os.path.exists(path):
      raise NotFoundError(f"{workdir}: not a trained workdir (no {MODEL_JSON})")
    return cls.from_json(files.read_json(path), workdir)

  def write(self, workdir: str) -> None:
    files.write_json_atomic(os.path.join(workdir, MODEL_JSON), self.to_json())


def check_format(workdir: str) -> None:
  """Refuses a workdir whose model.json is of another format (nothing when there is none)."""
  path = os.path.join(workdir, MODEL_JSON)
  if os.path.exists(path):
    ModelMeta.from_json(files.read_json(path), workdir)
