"""One writer per workdir, and per-job claims on the outputs of a folder or plate that
several processes share (no JAX here).

Locks are `fcntl.flock` locks: the kernel drops them when their process ends, however it
ends (kill -9 included), so a killed run never blocks the next one. The lock file holds the
holder's pid, host and start time (JSON) only for the message a refused run prints.
"""

import contextlib
import contextvars
import errno
import functools
import json
import os
import socket
import time

try:
  import fcntl
except ImportError:  # not on Windows: runs are then not guarded
  fcntl = None

from n2v_jax import reporter
from n2v_jax.errors import InUseError

LOCK_FILE = ".n2v_lock"  # in a workdir; hidden, never read by anything but this module
CLAIM_SUFFIX = ".lock"  # '.<job name>.lock' in a plate's output folder, while a job runs
# flock on file systems without it (Lustre without -o flock, some FUSE mounts)
_UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


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
        reporter.warning(f"no file locks in {os.path.dirname(path)} ({e.strerror}); a "
                         "second run there would not be refused", once=os.path.dirname(path))
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
    raise InUseError(f"{workdir} is in use by another run ({describe(holder)}); "
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
  """One writer per workdir: InUseError (naming pid, host and start time of the
  holder) when another live process holds it; held until the @holds_locks function ends."""
  stack = _held.get()
  if stack is None:
    raise RuntimeError("locks.lock_workdir outside a @locks.holds_locks function")
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
