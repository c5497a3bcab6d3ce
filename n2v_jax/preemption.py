"""Stopping cleanly on SIGTERM/SIGINT (what Slurm, Kubernetes and spot machines send before
a kill, and Ctrl-C): the current step, file or block is finished, saved, and the run stops;
the same command then continues where it stopped (no JAX here).
"""

import signal
import threading


def exit_status(signum: int) -> int:
  """128 + the signal, as a shell reports a process that the signal ended, so Slurm
  (--requeue), Kubernetes (restartPolicy: OnFailure) and job arrays see a failed task to
  run again; the rerun of the same command resumes where it stopped."""
  return 128 + int(signum)


class Preemption:
  """While active (`with Preemption() as p:`), SIGTERM and SIGINT do not kill the process
  but set `p.signum`; training then checkpoints after the current step and stops, a folder
  or plate after the current file, an OME-Zarr image after the current block. A second
  signal gets its default behaviour (a forced stop; what was saved stands)."""

  def __init__(self):
    self.signum: int | None = None
    self._old = {}

  def _handler(self, signum, frame):
    if self.signum is not None:  # asked twice: stop now, what was saved stands
      signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
    self.signum = signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # signals reach only it
      for s in (signal.SIGTERM, signal.SIGINT):
        self._old[s] = signal.signal(s, self._handler)
    return self

  def __exit__(self, *exc):
    for s, old in self._old.items():
      signal.signal(s, old)
    self._old = {}
    return False


def signal_name(signum: int) -> str:
  return signal.Signals(signum).name
