"""The one error type of the library.

Everything n2v_jax raises for a problem a user can meet (a bad file, a bad config, a full
disk) is an `N2VError` whose message is one line naming the file, axis or field and what
was expected. The command lines (and the napari plugin) catch it and show that line; the
library itself never prints an error or exits. The subclasses also derive from the
built-in error a caller would test for (a missing file is a FileNotFoundError too).
"""

import errno
import os


class N2VError(ValueError):
  """A problem with the user's input, config, files or machine; str() is one line."""


class NotFoundError(FileNotFoundError, N2VError):
  """An input, folder, workdir or checkpoint that is not there."""


class ExistsError(FileExistsError, N2VError):
  """An output that exists (pass overwrite to replace it), or one another process writes."""


class InUseError(ExistsError):
  """Another live process writes this workdir."""


class NonFiniteLossError(N2VError):
  """Training met a NaN/inf loss; the last good checkpoint is kept."""


class WriteError(OSError, N2VError):
  """An output or checkpoint that could not be written (full disk, no permission)."""

  def __init__(self, path: str, cause: OSError | None = None, err: int | None = None,
               hint: str = ""):
    err = err if err is not None else getattr(cause, "errno", None) or errno.EIO
    super().__init__(err, os.strerror(err), path)
    self.hint = hint

  def __str__(self) -> str:
    return f"could not write {self.filename}: {self.strerror}" + (
        f"; {self.hint}" if self.hint else "")


def one_line(exc: BaseException) -> str:
  """The message of an error in one line, with the path where the OS named one."""
  if isinstance(exc, OSError) and not isinstance(exc, N2VError) and exc.strerror and \
      len(exc.args) >= 2:  # raised by the OS ('[Errno 28] ...'), not with our own message
    return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
  text = str(exc).replace("\\n", "\n")
  return "; ".join(l.strip() for l in text.splitlines() if l.strip()) or type(exc).__name__
