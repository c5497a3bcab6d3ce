"""The one way the library tells its user something: status lines, warnings, results and
progress bars.

Library code calls `status`, `warning`, `result` and `progress`; where the text goes is the
current `Reporter`'s business: by default status lines, warnings and bars go to stderr and
results (e.g. the end-of-run PSNR) to stdout, as a command line wants. A GUI (the napari
plugin) or a test installs its own with `use(reporter)`. Errors are not reported here:
they are raised (`n2v_jax.errors`) and shown by whoever catches them.
"""

import contextlib
import contextvars
import sys
from typing import Any, Iterator


class Bar:
  """A progress bar: `update(n)` steps done, `postfix(**values)`, `write(line)` above it."""

  def __init__(self, reporter: "Reporter", total: int, initial: int = 0, unit: str = "step",
               enabled: bool = True):
    self._reporter, self._bar = reporter, None
    if enabled:
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True,
                       file=sys.stderr)

  def update(self, n: int) -> None:
    if self._bar is not None:
      self._bar.update(n)

  def postfix(self, refresh: bool = True, **values: Any) -> None:
    if self._bar is not None:
      self._bar.set_postfix(values, refresh=refresh)

  def write(self, line: str) -> None:
    """A line that must not be drawn over by the bar."""
    if self._bar is not None:
      self._bar.write(line, file=sys.stderr)
    else:
      self._reporter.status(line)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


class Reporter:
  """Where the library's messages go; subclass it and `use` it to send them elsewhere."""

  def status(self, line: str) -> None:
    print(line, file=sys.stderr)

  def warning(self, line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)

  def result(self, line: str) -> None:
    print(line)

  def progress(self, total: int, initial: int = 0, unit: str = "step",
               enabled: bool = True) -> Bar:
    return Bar(self, total, initial, unit, enabled)


_current: contextvars.ContextVar = contextvars.ContextVar("n2v_reporter", default=Reporter())
_warned: set[str] = set()


@contextlib.contextmanager
def use(reporter: Reporter) -> Iterator[Reporter]:
  """Sends the library's messages to `reporter` inside the `with` block (this thread and
  the context it runs in)."""
  token = _current.set(reporter)
  try:
    yield reporter
  finally:
    _current.reset(token)


def status(line: str) -> None:
  _current.get().status(line)


def warning(line: str, once: str | None = None) -> None:
  """A warning; with `once`, only the first warning of that key in this process."""
  if once is not None:
    if once in _warned:
      return
    _warned.add(once)
  _current.get().warning(line)


def result(line: str) -> None:
  _current.get().result(line)


def progress(total: int, initial: int = 0, unit: str = "step", enabled: bool = True) -> Bar:
  return _current.get().progress(total, initial, unit, enabled)
