"""The host side of a training loop, shared by one model (trainer) and K models (multi).

Steps are dispatched without waiting; the host fetches the losses only at log and
checkpoint steps (the one sync), where the caller logs, evaluates and saves.
"""

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from n2v_jax.preemption import Preemption


@dataclasses.dataclass
class Sync:
  """What happened since the last sync, handed to the caller at a log/checkpoint step."""
  step: int
  losses: np.ndarray  # (steps since the last sync, ...) training losses
  metrics: Any  # the last step's metrics (on device)
  log: bool  # a log_every step (or the last): write metrics
  evaluate: bool  # and an eval_every step (or the last): validation loss too
  save: bool  # a checkpoint_every step, the last, or stop_after
  stop: bool  # stop_after: the caller ends after this sync
  window_steps: int  # steps timed since the last log, compilation excluded
  window_seconds: float

  @property
  def first_bad(self) -> tuple[int, tuple[int, ...]] | None:
    """(step, index of the model) of the first non-finite loss, or None."""
    bad = np.argwhere(~np.isfinite(self.losses))
    if not bad.size:
      return None
    return self.step - len(self.losses) + 1 + int(bad[0][0]), tuple(int(i) for i in bad[0][1:])


def stop_requested(preemption: Preemption | None, at_sync: bool) -> bool:
  """Whether a signal asks the run to stop now. One process: as soon as one came. Several:
  all processes agree at sync steps (one tiny all-gather per sync), so they save the same
  step."""
  if preemption is None:
    return False
  if jax.process_count() == 1:
    return preemption.signum is not None
  if not at_sync:
    return False
  from jax.experimental import multihost_utils
  flags = multihost_utils.process_allgather(np.int32(preemption.signum or 0))
  if preemption.signum is None and flags.max():
    preemption.signum = int(flags.max())
  return bool(flags.max())


def run(run_step: Callable[[Any], tuple[Any, Any]], state: Any, start: int, train_cfg: Any,
        stop_after: int | None, on_sync: Callable[[Any, Sync], Any],
        preemption: Preemption | None = None) -> tuple[Any, int | None]:
  """run_step(state) -> (state, metrics with 'loss') for steps start+1..train_cfg.num_steps;
  on_sync(state, sync) -> state at every log/checkpoint step. Returns (state, the step it
  stopped at early: stop_after or a preemption; None when it ran to the end)."""
  num_steps = train_cfg.num_steps
  pending, window_start, window_t0 = [], start, time.perf_counter()
  for step in range(start + 1, num_steps + 1):
    state, metrics = run_step(state)
    pending.append(metrics["loss"])
    if step == start + 1:  # keep compilation out of the throughput figure
      jax.block_until_ready(metrics)
      window_start, window_t0 = step, time.perf_counter()
    log = step % train_cfg.log_every == 0 or step == num_steps
    if step < num_steps and stop_requested(preemption, log):
      stop_after = step  # checkpoint this step, then stop
    save = step % train_cfg.checkpoint_every == 0 or step in (num_steps, stop_after)
    if not (log or save):
      continue
    losses = np.asarray(jax.device_get(jnp.stack(pending)))
    state = on_sync(state, Sync(
        step, losses, metrics, log,
        log and (step % train_cfg.eval_every == 0 or step == num_steps), save,
        step == stop_after, step - window_start, time.perf_counter() - window_t0))
    pending = []
    if log:
      window_start, window_t0 = step, time.perf_counter()
    if step == stop_after:
      return state, step
  return state, None
