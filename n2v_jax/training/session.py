"""The run session shared by one model (`trainer.train_and_evaluate`) and K models in one
program (`multi.train_many`): the workdirs checked, locked and written, the state restored
or initialized, the loop with its sync/log/eval/checkpoint cadence, and the end of the run.

`multi` passes its states stacked on a leading models axis (`stacked=True`), the trainer
one state. What differs between them (the data, the shardings, the step) is built by each
and handed to `Session.train`.
"""

import functools
import json
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from n2v_jax import errors, reporter
from n2v_jax.data.dataset import Dataset
from n2v_jax.io import files, locks
from n2v_jax.nn import unet
from n2v_jax.preemption import Preemption
from n2v_jax.training import config as config_lib, loop, steps, summary, tensorboard
from n2v_jax.workdir import checkpoint, saved_config
from n2v_jax.workdir.model_meta import ModelMeta


def keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init, train, validation) keys: everything random in a run comes from its seed."""
  root = jax.random.key(seed)
  return tuple(jax.random.fold_in(root, i) for i in range(3))


def init_fn(model: Any, tx: Any, dataset: Dataset):
  return functools.partial(steps.create_train_state, model=model, tx=tx,
                           input_shape=(1, *dataset.patch, dataset.in_channels))


def validation_set(val_key: jax.Array, val_targets: jax.Array, spec: steps.StepSpec):
  """(network input, targets, loss_mask) of the validation patches, masked once (fixed
  masks)."""
  return jax.jit(functools.partial(steps.network_inputs, spec=spec))(val_key, val_targets)


class Session:
  """The workdirs of one run (one per model) and what is done to them."""

  def __init__(self, configs: Sequence[Any], workdirs: Sequence[str],
               datasets: Sequence[Dataset], stacked: bool, primary: bool = True):
    self.configs, self.datasets, self.stacked = list(configs), list(datasets), stacked
    self.workdirs = [os.path.abspath(w) for w in workdirs]
    self.config = self.configs[0]  # what the models share (train.*, opt.schedule, ...)
    self.primary = primary  # multi-host: one process writes the host-side files
    self.mngrs: list = []

  def open(self, runtime: dict) -> None:
    """Refuses workdirs of other runs, takes the one-writer locks (inside a
    @locks.holds_locks function), writes config.json and model.json, opens the checkpoint
    managers. runtime: where the run computes, recorded in config.json."""
    for c, w in zip(self.configs, self.workdirs):
      config_lib.check_resume(w, c)
    if self.primary:  # one writer per workdir (a multi-host run: its first process)
      for w in self.workdirs:  # all locked before any is written
        os.makedirs(w, exist_ok=True)
        locks.lock_workdir(w)
      for c, d, w in zip(self.configs, self.datasets, self.workdirs):
        saved_config.write(w, c, {"processes": jax.process_count(), "jax": jax.__version__,
                                  **runtime})
        ModelMeta.from_run(c, d).write(w)
    self.mngrs = [checkpoint.manager(w, keep=c.train.keep_checkpoints)
                  for c, w in zip(self.configs, self.workdirs)]

  def restore(self, abstract: Any, init: Callable[[], Any]) -> tuple[Any, int]:
    """(state, its step): the checkpoints' (one model's abstract state; stacked for K
    models, which must be at the same step), else init()."""
    restored = [checkpoint.restore(m, abstract) for m in self.mngrs]
    if all(r is None for r in restored):
      return init(), 0
    found = [None if r is None else int(r.step) for r in restored]
    if len(set(found)) > 1:
      raise errors.N2VError(f"cannot resume these workdirs together: their checkpoints are "
                            f"at steps {found}; resume them one by one with n2v_jax.train")
    start = found[0]
    if self.stacked:
      reporter.status(f"Resuming {len(restored)} models from their checkpoints at step "
                      f"{start}.")
      return jax.tree.map(lambda *xs: jnp.stack(xs), *restored), start
    reporter.status(f"Training already finished (step {start}); redoing the final evaluation."
                    if start >= self.config.train.num_steps else
                    f"Resuming from the checkpoint at step {start}.")
    return restored[0], start

  def train(self, run_step: Callable[[Any], tuple[Any, Any]], state: Any, start: int, *,
            model: Any, spec: steps.StepSpec, val: tuple | None, stop_after: int | None,
            preemption: Preemption | None, inputs: Any = (), extra: dict | None = None,
            close: Callable[[], None] = lambda: None) -> list[dict]:
    """Runs the steps after `start` with the sync cadence of train.*, then ends the run;
    returns one summary per model. val: the fixed validation set (stacked for K models);
    inputs: device arrays the step reads, made ready before the first step so its time
    is the step's own; close: called when the loop ends (a prefetch thread)."""
    over = lambda fn: jax.vmap(fn) if self.stacked else fn
    p_eval = jax.jit(over(functools.partial(steps.eval_loss, model=model, spec=spec)))
    p_plateau = jax.jit(over(functools.partial(
        steps.update_plateau, factor=self.config.opt.plateau_factor,
        patience=self.config.opt.plateau_patience)))
    on_sync = SyncHandler(self, start, p_eval, p_plateau, val, extra,
                          preview_fn(model, stacked=self.stacked))
    jax.block_until_ready((state, inputs))
    try:
      state, stopped = loop.run(run_step, state, start, self.config.train, stop_after, on_sync,
                                preemption)
    finally:
      close()
    on_sync.close()
    if stopped is not None:
      signal = preemption.signum if preemption is not None else None
      return [{"stopped_at": stopped, **({"signal": signal} if signal else {})}
              for _ in self.workdirs]
    if jax.process_count() > 1:
      # The final denoising restores the checkpoint through orbax, which would wait for the
      # other processes: a multi-host run ends here; denoise with n2v_jax.predict afterwards.
      if self.primary:
        for w in self.workdirs:
          summary.plot_losses(w)
      return [{"steps": self.config.train.num_steps, "workdir": w,
               "process_index": jax.process_index(), "processes": jax.process_count()}
              for w in self.workdirs]
    return [summary.finish(c, w, d) for c, w, d in zip(self.configs, self.workdirs,
                                                       self.datasets)]


def truncate_metrics(path: str, last_step: int) -> None:
  """On resume, drop lines logged after the restored checkpoint so the log continues it
  (and a last line cut short by a full disk)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip().endswith("}") and json.loads(l)["step"] <= last_step]
  files.write_text_atomic(path, "".join(lines))


def preview_fn(model: Any, stacked: bool):
  """(state, patches) -> the network's prediction, for the TensorBoard before/after image;
  `stacked`: states and patches with a leading models axis (training.multi)."""
  one = lambda state, x: unet.apply_model(model, state.variables, x, train=False)
  return jax.jit(jax.vmap(one) if stacked else one)


class SyncHandler:
  """What a run does at each host sync (loop.Sync): stop on a non-finite loss, write a
  metrics line per model (and TensorBoard events), evaluate (and update the plateau
  schedule), checkpoint.

  p_eval, p_plateau: the jitted validation loss and plateau update (vmapped for K models);
  val: the fixed validation set; extra: keys added to every metrics line; p_preview:
  preview_fn(model, stacked): with train.tensorboard each evaluation logs the first
  validation patch and the current model's prediction of it."""

  def __init__(self, run: Session, start: int, p_eval: Any, p_plateau: Any,
               val: tuple | None, extra: dict | None, p_preview: Any):
    self.config, self.workdirs, self.mngrs = run.config, run.workdirs, run.mngrs
    self.stacked, self.primary = run.stacked, run.primary
    self.p_eval, self.val, self.p_plateau, self.extra = p_eval, val, p_plateau, extra or {}
    self.p_preview = p_preview
    primary, config = self.primary, self.config
    self.metrics_paths = [os.path.join(w, "metrics.jsonl") for w in self.workdirs]
    if primary:
      for p in self.metrics_paths:
        truncate_metrics(p, start)
    # one event directory per workdir, written by the primary process only
    self.tb_logs = ([tensorboard.RunLog(w, start) for w in self.workdirs]
                    if primary and config.train.tensorboard else [])
    self.progress = reporter.progress(config.train.num_steps, initial=start,
                                      enabled=config.train.progress and primary)
    self.last_step = start

  def __call__(self, state: Any, sync: loop.Sync) -> Any:
    k, batch = len(self.workdirs), self.config.train.batch_size
    losses = sync.losses.reshape(len(sync.losses), k)
    bad = sync.first_bad
    if bad is not None:
      i = int(bad[1][0]) if self.stacked else 0
      self.mngrs[i].wait_until_finished()
      last = self.mngrs[i].latest_step()
      kept = (f"the last good checkpoint (step {last}) is kept in {self.workdirs[i]}"
              if last is not None else "no checkpoint had been saved yet")
      raise errors.NonFiniteLossError(
          f"non-finite training loss at step {bad[0]}"
          + (f" of the model in {self.workdirs[i]}" if k > 1 else "")
          + f"; {kept}. Lower opt.learning_rate or check the data")
    if sync.log:
      lr_now = np.asarray(sync.metrics["learning_rate"]).reshape(k)
      patches_per_s = sync.window_steps * batch / max(sync.window_seconds, 1e-9)
      val_loss = None
      if self.val is not None and sync.evaluate:
        val_loss = self.p_eval(state, *self.val)
        if self.config.opt.schedule == "plateau":
          state = self.p_plateau(state, val_loss)
        val_loss = np.asarray(val_loss).reshape(k)
      records = []
      for i, path in enumerate(self.metrics_paths):
        record = {"step": sync.step, "train_loss": float(losses[:, i].mean()),
                  "learning_rate": float(lr_now[i]), "patches_per_s": patches_per_s,
                  "time": time.time(), **self.extra}
        if val_loss is not None:
          record["val_loss"] = float(val_loss[i])
        records.append(record)
        if self.primary:
          files.append_line(path, json.dumps(record))
      self._show(sync.step, float(losses.mean()), patches_per_s * k,
                 None if val_loss is None else float(val_loss.mean()))
      if self.tb_logs:
        self._tensorboard(state, sync.step, records)
    if sync.save:
      for i, m in enumerate(self.mngrs):
        checkpoint.save(m, sync.step, jax.tree.map(lambda x: x[i], state) if self.stacked
                        else state)
    return state

  def _show(self, step: int, loss: float, patches_per_s: float, val_loss: float | None) -> None:
    """The progress bar: steps done, loss, patches/s (all models), validation loss."""
    self.progress.update(step - self.last_step)
    self.last_step = step
    post = {"loss": f"{loss:.4f}", "patches/s": f"{patches_per_s:.1f}"}
    if val_loss is not None:
      post["val"] = f"{val_loss:.4f}"
    self.progress.postfix(**post)

  def _tensorboard(self, state: Any, step: int, records: list[dict]) -> None:
    """Each model's metrics.jsonl record as scalars; at evaluations the preview."""
    previews = [None] * len(self.tb_logs)
    if "val_loss" in records[0] and self.p_preview is not None:
      # the noisy patch the network is to denoise: n2v's targets are the unmasked patches,
      # n2n/care's inputs are unmasked already. One patch: a cheap call.
      noisy = self.val[1] if self.config.algorithm == "n2v" else self.val[0]
      noisy = noisy[:, :1] if self.stacked else noisy[:1]
      denoised = np.asarray(self.p_preview(state, noisy))
      noisy = np.asarray(noisy)
      previews = ([(noisy[i, 0], denoised[i, 0]) for i in range(len(self.tb_logs))]
                  if self.stacked else [(noisy[0], denoised[0])])
    for log, record, preview in zip(self.tb_logs, records, previews):
      log.scalars(step, record)
      if preview is not None:
        log.preview(step, *preview)
      log.flush()

  def close(self) -> None:
    for m in self.mngrs:
      m.wait_until_finished()
    for log in self.tb_logs:
      log.close()
    self.progress.close()
