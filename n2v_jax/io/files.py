"""Every output file is written here: atomically (`atomic_output`: TIFFs, JSON, CSV,
figures, packages), never over an existing file without `overwrite`, and a failed write
(full disk, no permission) is one `WriteError` naming the path. Also the small JSON and
line-log readers and writers of a workdir. No JAX here.
"""

import contextlib
import csv
import errno
import io
import json
import os
import stat
import tempfile
from typing import Any

from n2v_jax.errors import ExistsError, N2VError, NotFoundError, WriteError

# Write errors every later write meets too: a plate stops at the first one.
FOLDER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def write_error(path: str, exc: BaseException) -> BaseException:
  """exc naming `path` when it is a bare OSError (a full disk reports no file name).
  Call it before removing the partial file: a short write without errno (tifffile's
  'N requested and M written') is a full disk when the folder has no space left."""
  if isinstance(exc, (N2VError, FileExistsError, IsADirectoryError)) or not isinstance(
      exc, OSError):
    return exc
  if exc.errno is None:
    try:
      st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
      return exc
    if st.f_bavail * st.f_frsize >= 1 << 20:
      return exc
    return WriteError(path, err=errno.ENOSPC)
  return WriteError(path, exc)


def write_json_atomic(path: str, obj: Any) -> None:
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: str, text: str) -> None:
  with atomic_output(path) as tmp, open(tmp, "w") as f:
    f.write(text)


def write_csv_atomic(path: str, columns: list[str], rows: list[dict]) -> None:
  text = io.StringIO()
  writer = csv.DictWriter(text, columns)
  writer.writeheader()
  writer.writerows(rows)
  write_text_atomic(path, text.getvalue())


def check_output_folder(path: str) -> None:
  """An output file goes into a folder that exists: a mistyped folder is not created."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise NotFoundError(f"{folder}: no such folder (for output {path})")


def refuse_existing(path: str, overwrite: bool) -> None:
  """ExistsError unless `path` is new or `overwrite` says to replace it."""
  if os.path.lexists(path) and not overwrite:
    raise ExistsError(f"{path} exists; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_output(path: str, overwrite: bool = True):
  """Yields a temporary path beside `path` to write; afterwards it is synced and renamed
  into place, so `path` is complete or untouched, never partial. overwrite=False: never
  replaces a file that appeared meanwhile. The result has the permissions open() gives (or
  those of the file it replaces); if anything fails the temporary file is removed and a
  write error names `path`."""
  folder = os.path.dirname(os.path.abspath(path))
  tmp = None
  try:
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)  # reopened by name: some writers want a path or a named file
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path)
             else 0o666 & ~umask)  # mkstemp made it 0600
    if overwrite:
      os.replace(tmp, path)
    else:
      try:  # link fails if `path` appeared meanwhile: never clobber without overwrite
        os.link(tmp, path)
      except FileExistsError:
        raise ExistsError(f"{path} exists; pass --overwrite to replace it") from None
      except OSError:  # a file system without hard links
        refuse_existing(path, overwrite)
        os.replace(tmp, path)
      else:
        os.unlink(tmp)
    tmp = None
  except BaseException as e:
    error = write_error(path, e)  # before removing tmp: it tells a full disk
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)
    if error is not e:
      raise error from None
    raise
  with contextlib.suppress(OSError):  # make the rename itself durable; not possible everywhere
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
      os.fsync(dir_fd)
    finally:
      os.close(dir_fd)



def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def append_line(path: str, line: str) -> None:
  """One line appended to a log (metrics.jsonl); a failed write names the file."""
  try:
    with open(path, "a") as f:
      f.write(line + "\n")
  except OSError as e:
    raise write_error(path, e) from None


def stops_plate(exc: BaseException) -> bool:
  """Whether a failed job's error stops the plate: a write error about the output folder
  (full disk or quota, read-only, no permission), which every following job would meet."""
  if isinstance(exc, WriteError):
    return exc.errno in FOLDER_ERRNOS
  return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)

