"""Training: `python -m n2v_jax.train --config configs/default.py --workdir DIR`.

Rerunning the same command on the same workdir resumes from the last checkpoint
and ends with the same parameters as an uninterrupted run.
"""

import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from n2v_jax import checkpoint, cluster, config_lib, data as data_lib, loop, models, report
from n2v_jax import runtime
from n2v_jax import steps
from n2v_jax import streaming


class NonFiniteLossError(RuntimeError):
  pass


def _devices(config: ml_collections.ConfigDict):
  """Mesh shardings for data parallelism (None when one device or switched off)."""
  devices = jax.devices()
  if not config.train.data_parallel or len(devices) == 1:
    return devices[:1], None, None
  if config.train.batch_size % len(devices):
    raise ValueError(f"config.train.batch_size={config.train.batch_size} must be divisible by "
                     f"the {len(devices)} visible devices for data parallelism")
  mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return devices, batch, replicated


def _initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """jax.distributed.initialize() with the config's coordinator/num_processes/process_id
  where set (else JAX's cluster detection and JAX_COORDINATOR_ADDRESS)."""
  t = config.train
  kwargs = {}
  if t.coordinator_address:
    kwargs["coordinator_address"] = t.coordinator_address
  if t.num_processes > 0:
    kwargs["num_processes"] = int(t.num_processes)
  if t.process_id >= 0:
    kwargs["process_id"] = int(t.process_id)
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize(**kwargs)


def model_metadata(config, dataset: data_lib.Dataset, patch) -> dict:
  """Everything predict needs, as plain JSON (never pickled)."""
  return {
      "format": checkpoint.MODEL_FORMAT,
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
      "train_axes": dataset.raw.source_axes,
      "augment": bool(config.data.augment and patch[-1] == patch[-2]),
  }


def _truncate_metrics(path: str, last_step: int) -> None:
  """On resume, drop lines logged after the restored checkpoint so the log continues it
  (and a last line cut short by a full disk)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip().endswith("}") and json.loads(l)["step"] <= last_step]
  checkpoint.write_text_atomic(path, "".join(lines))


def _check_resume(workdir: str, config_dict: dict) -> None:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  model_json = os.path.join(workdir, checkpoint.MODEL_JSON)
  if os.path.exists(model_json):
    checkpoint.check_model_format(workdir, checkpoint.read_json(model_json))
  changed = config_lib.incompatible_changes(checkpoint.read_json(path), config_dict)
  if changed:
    raise ValueError(f"{workdir} holds a run with a different config ({', '.join(changed)}); "
                     "use a new --workdir to start a new run")


@cluster.holds_locks  # the workdir's lock is released when the run returns or raises
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after: int | None = None, array: np.ndarray | None = None,
                       preemption: loop.Preemption | None = None) -> dict:
  """Trains (or resumes) in workdir; returns the summary (with PSNR when ground truth exists).

  stop_after: end this call after that step (checkpointed), as a time-limited job would;
  calling again resumes. Returns {'stopped_at': step} then.
  preemption: an active loop.Preemption: on SIGTERM/SIGINT the run checkpoints the current
  step and returns {'stopped_at': step, 'signal': signum}.
  array: train on this NumPy array (axes in config.data.axes) instead of data.path.
  """
  config_lib.validate(config)
  if config.train.distributed:
    _initialize_distributed(config)
  workdir = os.path.abspath(workdir)
  stream = bool(config.data.get("streaming", False))  # absent in configs older than it
  data_mod = streaming if stream else data_lib  # same load_raw / build_dataset interface
  raw = data_mod.load_raw(config.data, config.seed, array)
  ndim = len(raw.spatial_axes)
  patch = data_lib.resolve_patch_shape(config.data.patch_shape, ndim,
                                       models.divisor(config.model.depth))
  dataset = data_mod.build_dataset(config.data, raw, patch, config.seed)
  # Before any JAX computation: the device count is fixed when JAX starts (n2v_jax.runtime).
  cpu_devices = config.train.get("cpu_devices", 1)  # absent in configs older than it
  if not config.train.data_parallel or (config.train.distributed and cpu_devices == 0):
    cpu_devices = 1  # 'auto' splits only single-process data-parallel runs
  runtime.setup_cpu_devices(cpu_devices, config.train.batch_size,
                            getattr(dataset, "train_NSC", np.zeros(0)).nbytes)
  devices, batch_sharding, replicated = _devices(config)
  print(f"Training on {len(devices)} {devices[0].platform} device(s) "
        f"({devices[0].device_kind}), {jax.process_count()} process(es).", file=sys.stderr)
  model = models.make_model(config.model, dataset.in_channels)
  tx = steps.make_optimizer(config.opt)
  spec = steps.step_spec(config, patch)

  config_dict = config_lib.to_dict(config)
  _check_resume(workdir, config_dict)
  os.makedirs(workdir, exist_ok=True)  # only once the data and config are known to be good
  if jax.process_index() == 0:  # one writer per workdir (a multi-host run: its first process)
    cluster.lock_workdir(workdir)
  config_dict["runtime"] = {"devices": len(devices), "device_kind": devices[0].device_kind,
                            "platform": devices[0].platform, "processes": jax.process_count(),
                            "jax": jax.__version__}
  primary = jax.process_index() == 0  # multi-host: one process writes the host-side files
  if primary:
    checkpoint.write_json_atomic(os.path.join(workdir, "config.json"), config_dict)
    checkpoint.write_json_atomic(os.path.join(workdir, checkpoint.MODEL_JSON),
                                 model_metadata(config, dataset, patch))

  root_key = jax.random.key(config.seed)
  init_key, train_key, val_key = (jax.random.fold_in(root_key, i) for i in range(3))
  put = (lambda x: jax.device_put(x, replicated)) if replicated is not None else jnp.asarray
  init_fn = functools.partial(steps.create_train_state, model=model, tx=tx,
                              input_shape=(1, *patch, dataset.in_channels))
  mngr = checkpoint.manager(workdir, keep=config.train.keep_checkpoints)
  abstract = jax.eval_shape(init_fn, init_key)
  # Explicit shardings: orbax then restores a checkpoint written by any device/process layout.
  target = replicated if replicated is not None else jax.sharding.SingleDeviceSharding(devices[0])
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=target),
                          abstract)
  state = checkpoint.restore(mngr, abstract)
  if state is None:
    state = jax.tree.map(put, jax.jit(init_fn)(init_key))  # one compile, not one per layer
    start = 0
  else:
    start = int(state.step)
    print(f"Training already finished (step {start}); redoing the final evaluation."
          if start >= config.train.num_steps else
          f"Resuming from the checkpoint at step {start}.", file=sys.stderr)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if primary:
    _truncate_metrics(metrics_path, start)

  step_kwargs = dict(model=model, tx=tx, spec=spec, opt_cfg=config.opt,
                     num_steps=config.train.num_steps, batch_sharding=batch_sharding)
  if stream:  # patches read on the host by a background thread, one batch per step
    batches = streaming.Prefetcher(
        dataset.sampler(config.train.batch_size, config.data.augment, config.seed,
                        config.data.get("stream_patches_per_image", 1)).batch,
        start, config.train.num_steps)
    to_device = ((lambda b: jax.device_put(b, batch_sharding)) if batch_sharding is not None
                 else (lambda b: b))
    p_batch = jax.jit(functools.partial(steps.train_step_on_batch, **step_kwargs),
                      donate_argnums=(0,))
    run_step = lambda state: p_batch(state, to_device(batches.get()), train_key)
  else:
    images, sizes = put(dataset.train_NSC), put(dataset.train_sizes)
    p_step = jax.jit(functools.partial(steps.train_step, **step_kwargs), donate_argnums=(0,))
    run_step = lambda state: p_step(state, images, sizes, train_key)
  val = None
  if dataset.val_inputs is not None and len(dataset.val_inputs):
    val_targets = put(dataset.val_inputs)
    val_masked, val_mask = steps.mask_batch(val_key, val_targets, spec)  # fixed masks
    p_eval = jax.jit(functools.partial(steps.eval_loss, model=model, spec=spec))
    val = (val_masked, val_targets, val_mask)
  p_plateau = jax.jit(functools.partial(steps.update_plateau, factor=config.opt.plateau_factor,
                                        patience=config.opt.plateau_patience))

  num_steps = config.train.num_steps
  progress = report.Progress(start, num_steps, config.train.batch_size,
                             config.train.progress and primary)

  def on_sync(state, sync: loop.Sync):
    bad = sync.first_bad
    if bad is not None:
      mngr.wait_until_finished()
      last = mngr.latest_step()
      kept = (f"the last good checkpoint (step {last}) is kept in {workdir}" if last is not None
              else "no checkpoint had been saved yet")
      raise NonFiniteLossError(f"non-finite training loss at step {bad[0]}; {kept}. Lower "
                               "opt.learning_rate or check the data")
    if sync.log:
      record = {"step": sync.step, "train_loss": float(sync.losses.mean()),
                "learning_rate": float(sync.metrics["learning_rate"]),
                "patches_per_s": sync.window_steps * config.train.batch_size
                                 / max(sync.window_seconds, 1e-9),
                "time": time.time()}
      if val is not None and sync.evaluate:
        val_loss = p_eval(state, *val)
        record["val_loss"] = float(val_loss)
        if config.opt.schedule == "plateau":
          state = p_plateau(state, val_loss)
      if primary:
        checkpoint.append_line(metrics_path, json.dumps(record))
      progress.update(sync.step, record)
    if sync.save:
      checkpoint.save(mngr, sync.step, state)
    return state

  # Inputs in place before the first step, so its time is the step's own (with the opt-in
  # CPU device split this did not prevent XLA's all-reduce abort: n2v_jax/runtime.py).
  jax.block_until_ready((state, images, sizes) if not stream else state)
  try:
    state, stopped = loop.run(run_step, state, start, config.train, stop_after, on_sync,
                              preemption)
  finally:
    if stream:
      batches.close()
  mngr.wait_until_finished()
  progress.close()
  if stopped is not None:
    return {"stopped_at": stopped, **({"signal": preemption.signum}
                                      if preemption is not None and preemption.signum else {})}
  if jax.process_count() > 1:
    # The final denoising restores the checkpoint through orbax, which would wait for the
    # other processes: a multi-host run ends here; denoise with n2v_jax.predict afterwards.
    if primary:
      report.plot_losses(metrics_path, os.path.join(workdir, "loss.png"))
    return {"steps": num_steps, "workdir": workdir, "process_index": jax.process_index(),
            "processes": jax.process_count()}
  report.plot_losses(metrics_path, os.path.join(workdir, "loss.png"))
  if stream:  # bounded: the training set is never loaded
    dataset = dataset.evaluation_data()
  return report.final_evaluation(config, workdir, dataset, state.variables, model)


def main(argv) -> None:
  del argv
  from absl import flags
  try:
    with loop.Preemption() as preemption:
      summary = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir,
                                   preemption=preemption)
  except (ValueError, OSError, NonFiniteLossError) as e:  # OSError: a full disk, ...
    print(f"error: {cluster.error_message(e)}", file=sys.stderr)
    sys.exit(1)
  if "signal" in summary:
    loop.report_preemption(summary["signal"], summary["stopped_at"], flags.FLAGS.workdir)
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/default.py.")
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
  flags.mark_flags_as_required(["config", "workdir"])
  from n2v_jax import cli
  cli.run(main)
