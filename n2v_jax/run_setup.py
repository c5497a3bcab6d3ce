"""One run setup for n2v_jax.train (one model) and n2v_jax.multi (K models in one program).

Both derive their keys, check and write their workdirs, draw the fixed validation masks,
log, evaluate, checkpoint and end their runs here; `multi` passes its states stacked on a
leading models axis, `train` one state (`stacked=False`).
"""

import functools
import json
import os
import time
from typing import Any, Sequence

import jax
import numpy as np

from n2v_jax import checkpoint, cluster, config_lib, data as data_lib, loop, models, report
from n2v_jax import steps, symmetry, tensorboard_log


class NonFiniteLossError(RuntimeError):
  pass


def model_metadata(config: Any, dataset: data_lib.Dataset) -> dict:
  """Everything predict needs, as plain JSON (never pickled)."""
  patch = dataset.patch
  return {
      "format": checkpoint.MODEL_FORMAT,
      "algorithm": config.algorithm,
      "model": config_lib.to_dict(config.model),
      "opt": config_lib.to_dict(config.opt),
      "in_channels": dataset.in_channels,
      "spatial_axes": dataset.spatial_axes,
      "channel_names": dataset.channel_names,
      "mean": dataset.mean.tolist(),
      "std": dataset.std.tolist(),
      "normalization": config.data.normalization,
      "transform": dataset.transform,
      "patch_shape": list(patch),
      "train_axes": dataset.source.source_axes,
      "augment": bool(config.data.augment and symmetry.square_yx(patch)),
      "predict_blend": bool(config.predict.blend),  # prediction's default (inference.sure_blend)
  }


def check_resume(workdir: str, config: Any) -> None:
  """Refuses a workdir that holds a run with another config (or an unreadable model)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  model_json = os.path.join(workdir, checkpoint.MODEL_JSON)
  if os.path.exists(model_json):
    checkpoint.check_model_format(workdir, checkpoint.read_json(model_json))
  changed = config_lib.incompatible_changes(checkpoint.read_json(path), config_lib.to_dict(config))
  if changed:
    raise ValueError(f"{workdir} holds a run with a different config ({', '.join(changed)}); "
                     "use a new --workdir to start a new run")


def lock(workdir: str) -> None:
  """One writer per workdir (cluster.lock_workdir): made, then locked before anything is
  written into it; inside a @cluster.holds_locks function."""
  os.makedirs(workdir, exist_ok=True)
  cluster.lock_workdir(workdir)


def write_run_files(workdir: str, config: Any, dataset: data_lib.Dataset,
                    runtime: dict) -> None:
  """config.json (with where it ran) and model.json; only once data and config are good."""
  config_dict = config_lib.to_dict(config)
  config_dict["runtime"] = {"processes": jax.process_count(), "jax": jax.__version__, **runtime}
  cluster.write_json_atomic(os.path.join(workdir, "config.json"), config_dict)
  cluster.write_json_atomic(os.path.join(workdir, checkpoint.MODEL_JSON),
                            model_metadata(config, dataset))


def keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init, train, validation) keys: everything random in a run comes from its seed."""
  root = jax.random.key(seed)
  return tuple(jax.random.fold_in(root, i) for i in range(3))


def init_fn(model: Any, tx: Any, dataset: data_lib.Dataset):
  return functools.partial(steps.create_train_state, model=model, tx=tx,
                           input_shape=(1, *dataset.patch, dataset.in_channels))


def validation_set(val_key: jax.Array, val_targets: jax.Array, spec: steps.StepSpec):
  """(network input, targets, loss_mask) of the validation patches, masked once (fixed
  masks)."""
  return jax.jit(functools.partial(steps.network_inputs, spec=spec))(val_key, val_targets)


def truncate_metrics(path: str, last_step: int) -> None:
  """On resume, drop lines logged after the restored checkpoint so the log continues it
  (and a last line cut short by a full disk)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip().endswith("}") and json.loads(l)["step"] <= last_step]
  cluster.write_text_atomic(path, "".join(lines))


def preview_fn(model: Any, stacked: bool):
  """(state, patches) -> the network's prediction, for the TensorBoard before/after image;
  `stacked`: states and patches with a leading models axis (n2v_jax.multi)."""
  one = lambda state, x: models.apply_model(model, state.variables, x, train=False)
  return jax.jit(jax.vmap(one) if stacked else one)


class SyncHandler:
  """What a run does at each host sync (loop.Sync): stop on a non-finite loss, write a
  metrics line per model (and TensorBoard events), evaluate (and update the plateau
  schedule), checkpoint.

  p_preview: preview_fn(model, stacked); with train.tensorboard each evaluation logs the
  first validation patch and the current model's prediction of it."""

  def __init__(self, config: Any, workdirs: Sequence[str], mngrs: Sequence[Any], start: int,
               p_eval: Any, val: tuple | None, p_plateau: Any, stacked: bool,
               primary: bool = True, extra: dict | None = None, p_preview: Any = None):
    self.config, self.workdirs, self.mngrs, self.stacked = config, list(workdirs), mngrs, stacked
    self.p_eval, self.val, self.p_plateau, self.extra = p_eval, val, p_plateau, extra or {}
    self.p_preview = p_preview
    self.primary = primary
    self.metrics_paths = [os.path.join(w, "metrics.jsonl") for w in self.workdirs]
    if primary:
      for p in self.metrics_paths:
        truncate_metrics(p, start)
    # one event directory per workdir, written by the primary process only
    self.tb_logs = ([tensorboard_log.RunLog(w, start) for w in self.workdirs]
                    if primary and config.train.tensorboard else [])
    k = len(self.workdirs)
    self.progress = report.Progress(start, config.train.num_steps,
                                    config.train.batch_size * k, config.train.progress and primary)

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
      raise NonFiniteLossError(f"non-finite training loss at step {bad[0]}"
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
          checkpoint.append_line(path, json.dumps(record))
      shown = {"train_loss": float(losses.mean()), "patches_per_s": patches_per_s * k}
      self.progress.update(sync.step, {**shown, **({"val_loss": float(val_loss.mean())}
                                                    if val_loss is not None else {})})
      if self.tb_logs:
        self._tensorboard(state, sync.step, records)
    if sync.save:
      for i, m in enumerate(self.mngrs):
        checkpoint.save(m, sync.step, jax.tree.map(lambda x: x[i], state) if self.stacked
                        else state)
    return state

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


def stopped_summary(stopped: int, preemption: loop.Preemption | None) -> dict:
  """What a run returns when it stopped early (stop_after, or a signal)."""
  signal = preemption.signum if preemption is not None else None
  return {"stopped_at": stopped, **({"signal": signal} if signal else {})}


def plot_losses(workdir: str) -> None:
  report.plot_losses(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "loss.png"))


def finish(config: Any, workdir: str, dataset: data_lib.Dataset) -> dict:
  """The end of a run: the loss plot, the final evaluation on ground truth, summary.json."""
  plot_losses(workdir)
  return report.final_evaluation(config, workdir, dataset.evaluation_samples())
