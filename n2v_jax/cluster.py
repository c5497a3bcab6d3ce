"""What runs on shared machines need: one writer per workdir, per-job claims on the
outputs of a plate, every output written atomically (`atomic_output`: TIFFs, JSON, CSV,
figures, packages), and write errors (full disk, no permission) as one line naming the path.

Locks are `fcntl.flock` locks: the kernel drops them when their process ends, however it
ends (kill -9 included), so a killed run never blocks the next one. The lock file holds the
holder's pid, host and start time (JSON) only for the message a refused run prints.
No JAX here.
"""

import contextlib
import contextvars
import csv
import errno
import functools
import io
import json
import os
import socket
import stat
import sys
import tempfile
import time
from typing import Any

try:
  import fcntl
except ImportError:  # not on Windows: runs are then not guarded
  fcntl = None

LOCK_FILE = ".n2v_lock"  # in a workdir; hidden, never read by anything but this module
CLAIM_SUFFIX = ".lock"  # '.<job name>.lock' in a plate's output folder, while a job runs
# Write errors every later write meets too: a plate stops at the first one.
FOLDER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# flock on file systems without it (Lustre without -o flock, some FUSE mounts)
_UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


class WriteError(OSError):
  """An output or checkpoint that could not be written; str() is the one-line message."""

  def __init__(self, path: str, cause: OSError | None = None, err: int | None = None,
               hint: str = ""):
    err = err if err is not None else getattr(cause, "errno", None) or errno.EIO
    super().__init__(err, os.strerror(err), path)
    self.hint = hint

  def __str__(self) -> str:
    return f"could not write {self.filename}: {self.strerror}" + (
        f"; {self.hint}" if self.hint else "")


def write_error(path: str, exc: BaseException) -> BaseException:
  """exc naming `path` when it is a bare OSError (a full disk reports no file name).
  Call it before removing the partial file: a short write without errno (tifffile's
  'N requested and M written') is a full disk when the folder has no space left."""
  if isinstance(exc, (WriteError, FileExistsError, IsADirectoryError)) or not isinstance(
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


def refuse_existing(path: str, overwrite: bool) -> None:
  """FileExistsError unless `path` is new or `overwrite` says to replace it."""
  if os.path.lexists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; pass --overwrite to replace it")


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
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it") from None
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


def error_message(exc: BaseException) -> str:
  """The text after 'error: ' for what the CLIs catch: one line, a path where known."""
  if isinstance(exc, OSError) and not isinstance(exc, WriteError) and exc.strerror and \
      len(exc.args) >= 2:  # raised by the OS ('[Errno 28] ...'), not with our own message
    return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
  return "; ".join(l.strip() for l in str(exc).splitlines() if l.strip())


def stops_plate(exc: BaseException) -> bool:
  """Whether a failed job's error stops the plate: a write error about the output folder
  (full disk or quota, read-only, no permission), which every following job would meet."""
  if isinstance(exc, WriteError):
    return exc.errno in FOLDER_ERRNOS
  return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


# ------------------------------------------------------------------------------- locks


class WorkdirInUseError(FileExistsError):
  """Another live process writes this workdir (a FileExistsError: CLIs print one line)."""


def _record() -> dict:
  return {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _read_record(fd: int) -> dict:
  for _ in range(10):  # the holder writes it right after locking: wait a moment for it
    try:
      text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
      if text.strip():
        return json.loads(text)
    except (OSError, ValueError):
      pass
    time.sleep(0.05)
  return {}


def describe(holder: dict) -> str:
  return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
          f"started {holder.get('started', '?')}")


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
  if key not in _warned:
    _warned.add(key)
    print(f"warning: {message}", file=sys.stderr)


def _try_lock(path: str) -> tuple[int | None, dict | None]:
  """(fd holding an exclusive flock on path, None), or (None, the holder's record) when a
  live process holds it. (None, None): this file system has no locks."""
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
      if fcntl is None:
        raise OSError(errno.ENOSYS, "no fcntl")
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_record(fd)
      os.close(fd)
      return None, holder
    except OSError as e:
      os.close(fd)
      if e.errno in _UNSUPPORTED:
        _warn_once(os.path.dirname(path), f"no file locks in {os.path.dirname(path)} "
                   f"({e.strerror}); a second run there would not be refused")
        return None, None
      raise
    # A claim's holder removes its file when done: if ours is gone, lock the new one.
    try:
      same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
      same = False
    if same:
      try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_record()).encode(), 0)
      except OSError:  # a full disk: the lock holds, only the message loses its details
        pass
      return fd, None
    os.close(fd)


@contextlib.contextmanager
def _workdir_lock(workdir: str):
  path = os.path.join(workdir, LOCK_FILE)
  fd, holder = _try_lock(path)
  if holder is not None:
    raise WorkdirInUseError(f"{workdir} is in use by another run ({describe(holder)}); "
                            "wait for it to end or use another --workdir")
  try:
    yield
  finally:
    if fd is not None:
      with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # an empty lock file: nobody holds it
      os.close(fd)  # releases the lock; the file stays (removing it would race a newcomer)


_held: contextvars.ContextVar = contextvars.ContextVar("n2v_workdir_locks", default=None)


def holds_locks(fn):
  """Workdir locks taken by `lock_workdir` inside fn are released when fn returns or raises."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with contextlib.ExitStack() as stack:
      token = _held.set(stack)
      try:
        return fn(*args, **kwargs)
      finally:
        _held.reset(token)
  return wrapper


def lock_workdir(workdir: str) -> None:
  """One writer per workdir: WorkdirInUseError (naming pid, host and start time of the
  holder) when another live process holds it; held until the @holds_locks function ends."""
  stack = _held.get()
  if stack is None:
    raise RuntimeError("cluster.lock_workdir outside a @cluster.holds_locks function")
  stack.enter_context(_workdir_lock(os.path.abspath(workdir)))


@contextlib.contextmanager
def claim_job(folder: str, name: str, needed: bool = True):
  """Yields None while this process may write job `name`'s outputs into folder (it holds
  the hidden claim file '.<name>.lock' there, removed afterwards), or a description of the
  live process that is writing them. needed=False (nothing to write): no claim is taken."""
  if not needed:
    yield None
    return
  path = os.path.join(folder, f".{name}{CLAIM_SUFFIX}")
  fd, holder = _try_lock(path)
  if holder is not None:
    yield describe(holder)
    return
  try:
    yield None
  finally:
    if fd is not None:
      with contextlib.suppress(OSError):
        os.unlink(path)  # before the unlock: a newcomer then sees the file is gone
      os.close(fd)


def report_plate_stop(summary, exit_status: int) -> None:
  """The one line a plate run stopped by a signal (batch.Summary.stopped_by) prints, then
  its exit (status: loop.exit_status)."""
  import signal
  print(f"{signal.Signals(summary.stopped_by).name}: stopped after {len(summary.results)} "
        "job(s), every output written is complete; run the same command again to continue "
        f"(exit status {exit_status})", file=sys.stderr)
  sys.exit(exit_status)
