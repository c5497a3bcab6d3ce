"""A run's checkpoints (orbax): the only module that imports orbax.

Reading a workdir never unpickles or runs code: values are restored by orbax into an
abstract target built from the JSON metadata (model.json). Training restores its whole
train state (`restore`); prediction restores the network's variables alone
(`restore_variables`), so it needs no optimizer.

Damaged checkpoints (truncated or missing files: a full disk, a crash on a file system
that does not rename atomically) are skipped with one line on stderr; a failed write is
one `WriteError` naming the step's folder. orbax reports such a failure many
times over (a traceback per array, from its threads and from coroutines garbage-collected
later); those copies are dropped, the error itself reaches the caller once.
"""

import logging
import os
import re
import sys
import warnings
import weakref
import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from n2v_jax import reporter
from n2v_jax.errors import N2VError, WriteError
from n2v_jax.io import files

CHECKPOINT_DIR = "checkpoints"


_WRITERS = weakref.WeakSet()  # managers of a training run: they remove damaged steps


def manager(workdir: str, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  _drop_orbax_duplicates()
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)  # orbax needs absolute
  # read_only=True makes orbax warn on every load; create=False is enough for readers.
  # cleanup: a run killed mid-save leaves a '*.orbax-checkpoint-tmp' folder; the writer removes it.
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         cleanup_tmp_directories=not read_only)
  try:
    mngr = _Manager(directory, options=options)
  except OSError as e:
    raise files.write_error(directory, e) from None
  if not read_only:
    _WRITERS.add(mngr)
  return mngr


class _Manager(ocp.CheckpointManager):
  """orbax's manager; a failed write (raised by orbax at the next save or wait, as a
  tensorstore ValueError or an OSError) becomes one WriteError naming the step."""

  def save(self, *args, **kwargs):
    try:
      return super().save(*args, **kwargs)
    except Exception as e:
      raise _as_write_error(self, e) from None

  def wait_until_finished(self):
    try:
      return super().wait_until_finished()
    except Exception as e:
      raise _as_write_error(self, e) from None


_OS_ERROR = re.compile(r"os_error_code='?(\d+)")
_STATUS_ERRNO = {"RESOURCE_EXHAUSTED": 28, "PERMISSION_DENIED": 13}  # tensorstore's codes


def _as_write_error(mngr: ocp.CheckpointManager, e: Exception) -> Exception:
  if isinstance(e, WriteError):
    return e
  text = f"{e} {getattr(e, 'filename', '')}"
  err = getattr(e, "errno", None) if isinstance(e, OSError) else None
  found = _OS_ERROR.search(text)
  err = err or (int(found.group(1)) if found else _STATUS_ERRNO.get(text.split(":")[0]))
  if not err:
    return e
  directory = str(mngr.directory)  # name the step's folder, not orbax's temp files in it
  step = re.search(re.escape(directory) + r"/(\d+)", text)
  return WriteError(os.path.join(directory, step.group(1)) if step else directory,
                            err=err)


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Saves a train state; its custom metadata carries checksums of all its values and of
  the network's variables alone (what prediction restores)."""
  crcs = {CRC_KEY: _crc32(state), CRC_VARIABLES_KEY: _crc32(state.variables)}
  mngr.save(step, args=ocp.args.StandardSave(state), force=True,
            custom_metadata={k: v for k, v in crcs.items() if v is not None})


# orbax checks its indexes, not the array data: a flipped bit there restores silently.
CRC_KEY = "n2v_crc32"  # in the step's custom metadata: a checksum of every value saved
CRC_VARIABLES_KEY = "n2v_crc32_variables"  # of state.variables (checkpoints since 0.2)


def _crc32(tree: Any) -> int | None:
  """CRC-32 of the tree's values in tree order (None: some value is split over hosts)."""
  crc = 0
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      if not (leaf.is_fully_addressable or leaf.is_fully_replicated):
        return None
      leaf = leaf.addressable_shards[0].data  # replicated: any copy is the whole value
    crc = zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).data, crc)
  return crc


def _saved_crc32(mngr: ocp.CheckpointManager, step: int, key: str) -> int | None:
  """A checksum saved with a step (None: older checkpoints, unreadable step metadata)."""
  try:
    meta = files.read_json(os.path.join(str(mngr.directory), str(step), "_CHECKPOINT_METADATA"))
    return int(meta["custom_metadata"][key])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None) -> Any:
  """Restores a whole train state into the given abstract target (shapes, dtypes,
  shardings); None if there is no checkpoint.

  Without `step`: the newest checkpoint that reads back whole. Newer damaged ones are
  named in one warning; a training run's manager also deletes them, so that it can save
  those steps again and orbax's max_to_keep counts only good checkpoints. N2VError when
  checkpoints exist but none can be read (or `step` cannot)."""
  def read(s: int) -> Any:
    state = mngr.restore(s, args=ocp.args.StandardRestore(abstract_state))
    found = getattr(state, "step", s)  # a folder holding another step is damaged too
    if int(found) != s:
      raise ValueError(f"it holds step {int(found)}")
    return state
  return _newest_readable(mngr, read, CRC_KEY, step)


def restore_variables(mngr: ocp.CheckpointManager, abstract_variables: Any) -> Any:
  """The network's variables ({'params', 'batch_stats'}) of the newest checkpoint that
  reads back whole, restored alone into `abstract_variables` (no optimizer state, no train
  state); None if there is no checkpoint. Damaged checkpoints as in `restore`."""
  target = {"variables": abstract_variables}
  restore_args = jax.tree.map(
      lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype),
      target)

  def read(s: int) -> Any:
    return mngr.restore(s, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True))["variables"]
  return _newest_readable(mngr, read, CRC_VARIABLES_KEY, None)


def _newest_readable(mngr: ocp.CheckpointManager, read: Any, crc_key: str,
                     step: int | None) -> Any:
  """read(step) of the newest step that reads whole and matches its checksum `crc_key`."""
  steps = [step] if step is not None else sorted(mngr.all_steps(), reverse=True)
  damaged = []
  for s in steps:
    try:
      if not os.path.isdir(os.path.join(str(mngr.directory), str(s), "default")):
        raise ValueError("incomplete folder (no 'default' item)")  # orbax: a cryptic error
      value = read(s)
      saved = _saved_crc32(mngr, s, crc_key)
      if saved is not None and _crc32(value) not in (None, saved):
        raise ValueError("its values do not match their checksum (changed on disk)")
    except Exception as e:  # orbax and tensorstore raise many types for broken files
      if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
        raise  # not the files' fault: a damaged step would be deleted
      damaged.append((s, _damage(e)))
      continue
    if damaged:
      _drop_damaged(mngr, damaged, s)
    return value
  if not damaged:
    return None
  (s, why), more = damaged[0], len(damaged) - 1
  raise N2VError(f"{mngr.directory}: no checkpoint can be read (step {s}: {why}"
                 + (f"; {more} older one(s) damaged too" if more else "")
                 + "); delete that folder to train from the start, or use a new --workdir")


def _damage(e: Exception) -> str:
  """What is wrong with a step, in one short line (tensorstore's messages run for pages)."""
  while "Encountered error while reading" in str(e) and (e.__cause__ or e.__context__):
    e = e.__cause__ or e.__context__  # the array read failed: its cause says why
  text = str(e).split("[tensorstore_spec")[0].split("See full TensorStore")[0]
  text = text.splitlines()[0] if text.strip() else type(e).__name__
  text = text.rsplit('": ', 1)[-1].strip(" .;")  # after the last quoted file name
  return text if len(text) <= 160 else text[:157] + "..."


def _drop_damaged(mngr: ocp.CheckpointManager, damaged: list, good: int) -> None:
  removed = mngr in _WRITERS
  if removed:
    for s, _ in damaged:
      try:
        mngr.delete(s)
      except Exception:  # leave it: a later save of that step then fails with a clear line
        removed = False
  one = len(damaged) == 1
  names = ("step " if one else "steps ") + ", ".join(str(s) for s, _ in damaged)
  removal = ("; removed it" if one else "; removed them") if removed else ""
  reporter.warning(f"checkpoint {names} in {mngr.directory} cannot be read "
                   f"({damaged[0][1]}){removal}; using step {good}")


def _drop_orbax_duplicates() -> None:
  """Drop orbax's extra reports of a failure we raise or report ourselves (idempotent)."""
  if getattr(sys.unraisablehook, "_n2v", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if ("Event loop is closed" in str(unraisable.exc_value)
        or (code is not None and _ORBAX in code.co_filename)):
      return  # a coroutine of a failed read or write, collected after its error was raised
    previous(unraisable)
  hook._n2v = True
  sys.unraisablehook = hook
  for name in ("absl", "asyncio"):
    logging.getLogger(name).addFilter(_not_orbax_error)
  # the reads a failed restore abandoned (orbax's coroutines; this project runs no asyncio)
  warnings.filterwarnings("ignore", r"coroutine '.*' was never awaited", RuntimeWarning,
                          r"asyncio\.")


_ORBAX = os.sep + "orbax" + os.sep


def _not_orbax_error(record: logging.LogRecord) -> bool:
  if record.levelno < logging.ERROR:
    return True
  if _ORBAX in record.pathname:
    return False  # orbax logs a failure it also raises (or, for step metadata, tolerates)
  exc = record.exc_info[1] if record.exc_info else None
  if exc is not None and any(k in str(exc) for k in _TENSORSTORE):
    return False  # asyncio: 'Future exception was never retrieved', from tensorstore
  tb = record.exc_info[2] if record.exc_info else None
  while tb is not None:  # the same from orbax's own coroutines
    if _ORBAX in tb.tb_frame.f_code.co_filename:
      return False
    tb = tb.tb_next
  return True


_TENSORSTORE = ("OCDBT", "tensorstore", "TensorStore", '"zarr" driver')


def latest_step(workdir: str) -> int | None:
  if not os.path.isdir(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)):
    return None
  return manager(workdir, read_only=True).latest_step()
