"""A run's `config.json`: written once when the run starts, read back by resumes, predict
and export with the fields added since it was written filled in (no JAX here).

`ADDED_FIELDS` holds, for every config field added after workdirs were first written, the
value that reproduces what those older runs did, so an old workdir resumes and predicts
under the current code. (The defaults of new runs are `n2v_jax/configs/default.py`.)
"""

import json
import os
from typing import Any

import ml_collections

from n2v_jax.errors import NotFoundError
from n2v_jax.io import files

CONFIG_JSON = "config.json"

ADDED_FIELDS = {"algorithm": "n2v", "data.target_path": "", "data.streaming": False,
                "data.stream_cache_files": 8, "data.transform": "none",
                "data.stream_patches_per_image": 1, "data.channel_pattern": "",
                "data.channels": [], "data.channel_names": [],
                "data.synthetic.correlation": 0.0,
                "model.upsampling": "nearest", "model.batch_chunks": 0, "train.cpu_devices": 1,
                "train.tensorboard": False, "predict.blend": False,
                "model.conv_algorithm": "direct", "model.conv_precision": "float32"}


def complete(config: ml_collections.ConfigDict) -> None:
  """Adds, in place, the ADDED_FIELDS a config written before them lacks: the one place
  where their defaults for old configs are applied."""
  for dotted, value in ADDED_FIELDS.items():
    *groups, name = dotted.split(".")
    group = config
    for g in groups:
      group = group.get(g) if group is not None else None
    if group is not None and name not in group:
      with group.unlocked():
        group[name] = value


def to_dict(config: ml_collections.ConfigDict) -> dict:
  """JSON-safe plain dict (tuples become lists)."""
  return json.loads(config.to_json())


def with_added_fields(config_dict: dict) -> dict:
  """A saved config dict with the ADDED_FIELDS it lacks filled in (a copy)."""
  config = ml_collections.ConfigDict(json.loads(json.dumps(config_dict)))
  complete(config)
  return to_dict(config)


def flat(d: dict, prefix: str = "") -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flat(v, key + "."))
    else:
      out[key] = v
  return out


def path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_JSON)


def exists(workdir: str) -> bool:
  return os.path.exists(path(workdir))


def read_raw(workdir: str) -> dict:
  """config.json as written (no fields added)."""
  if not exists(workdir):
    raise NotFoundError(f"{workdir}: no {CONFIG_JSON} (not a training workdir)")
  return files.read_json(path(workdir))


def read(workdir: str) -> dict:
  """config.json with the fields added since it was written filled in."""
  return with_added_fields(read_raw(workdir))


def write(workdir: str, config: ml_collections.ConfigDict, runtime: dict) -> None:
  """config.json: the run's config and where it ran (`runtime`)."""
  config_dict = to_dict(config)
  config_dict["runtime"] = runtime
  files.write_json_atomic(path(workdir), config_dict)


def data_config(workdir: str) -> Any:
  """The data part of a workdir's config.json, as a ConfigDict."""
  return ml_collections.ConfigDict(read(workdir)["data"])
