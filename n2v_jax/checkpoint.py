"""Checkpoints (orbax) and JSON metadata. The only module that imports orbax.

Reading a workdir never unpickles or runs code: parameters are restored by orbax
into an abstract target built from the JSON metadata, and metadata is plain JSON.
"""

import json
import os
import tempfile
from typing import Any

import orbax.checkpoint as ocp

from n2v_jax import config_lib

CHECKPOINT_DIR = "checkpoints"
MODEL_JSON = "model.json"
# n2v_jax/2: the U-Net's second conv per block halves the features (CSBDeep widths); models
# written as n2v_jax/1 have other parameter shapes and cannot be restored.
MODEL_FORMAT = "n2v_jax/2"


def check_model_format(workdir: str, meta: dict) -> None:
  found = meta.get("format")
  if found != MODEL_FORMAT:
    raise ValueError(f"{workdir}: model format {found!r}, this n2v_jax reads {MODEL_FORMAT!r} "
                     "(older versions used other U-Net widths); retrain in a new workdir")


# model.json keys added after models were first written, with the value that reproduces
# what those older models did.
MODEL_ADDED_FIELDS = {"transform": "none", "channel_names": None, "algorithm": "n2v"}


def read_model_json(workdir: str) -> dict:
  """A workdir's model.json, format checked, keys added since it was written filled in."""
  path = os.path.join(workdir, MODEL_JSON)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir}: not a trained workdir (no {MODEL_JSON})")
  meta = read_json(path)
  check_model_format(workdir, meta)
  model = config_lib.with_added_fields({"model": meta["model"]})["model"]
  return {**MODEL_ADDED_FIELDS, **meta, "model": model}


def write_json_atomic(path: str, obj: Any) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def manager(workdir: str, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)  # orbax needs absolute
  # read_only=True makes orbax warn on every load; create=False is enough for readers.
  # cleanup: a run killed mid-save leaves a '*.orbax-checkpoint-tmp' folder; the writer removes it.
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(directory, options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
  mngr.save(step, args=ocp.args.StandardSave(state), force=True)


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None) -> Any:
  """Restores into the given abstract target (shapes, dtypes, shardings); None if empty."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))


def latest_step(workdir: str) -> int | None:
  if not os.path.isdir(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)):
    return None
  return manager(workdir, read_only=True).latest_step()
