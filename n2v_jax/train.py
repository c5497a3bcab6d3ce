"""Training: `python -m n2v_jax.train --config configs/default.py --workdir DIR`.

Rerunning the same command on the same workdir resumes from the last checkpoint
and ends with the same parameters as an uninterrupted run.
"""

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from n2v_jax import checkpoint, cluster, config_lib, data as data_lib, loop, models, run_setup
from n2v_jax import runtime
from n2v_jax import steps

NonFiniteLossError = run_setup.NonFiniteLossError


def shardings(config: ml_collections.ConfigDict):
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
  dataset = data_lib.load(config.data, config.seed, models.divisor(config.model.depth), array,
                          config.algorithm)
  stream = dataset.streaming
  # Before any JAX computation: the device count is fixed when JAX starts (n2v_jax.runtime).
  cpu_devices = config.train.cpu_devices
  if not config.train.data_parallel or (config.train.distributed and cpu_devices == 0):
    cpu_devices = 1  # 'auto' splits only single-process data-parallel runs
  runtime.setup_cpu_devices(cpu_devices, config.train.batch_size,
                            0 if stream else dataset.train_NSC.nbytes)
  devices, batch_sharding, replicated = shardings(config)
  print(f"Training on {len(devices)} {devices[0].platform} device(s) "
        f"({devices[0].device_kind}), {jax.process_count()} process(es).", file=sys.stderr)
  model = models.make_model(config.model, dataset.in_channels)
  tx = steps.make_optimizer(config.opt)
  spec = steps.step_spec(config, dataset.patch)

  run_setup.check_resume(workdir, config)
  primary = jax.process_index() == 0  # multi-host: one process writes the host-side files
  if primary:  # one writer per workdir (a multi-host run: its first process)
    run_setup.lock(workdir)
    run_setup.write_run_files(workdir, config, dataset, {
        "devices": len(devices), "device_kind": devices[0].device_kind,
        "platform": devices[0].platform})

  init_key, train_key, val_key = run_setup.keys(config.seed)
  put = (lambda x: jax.device_put(x, replicated)) if replicated is not None else jnp.asarray
  init_fn = run_setup.init_fn(model, tx, dataset)
  mngr = checkpoint.manager(workdir, keep=config.train.keep_checkpoints)
  # Explicit shardings: orbax then restores a checkpoint written by any device/process layout.
  target = replicated if replicated is not None else jax.sharding.SingleDeviceSharding(devices[0])
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=target),
                          jax.eval_shape(init_fn, init_key))
  state = checkpoint.restore(mngr, abstract)
  if state is None:
    state = jax.tree.map(put, jax.jit(init_fn)(init_key))  # one compile, not one per layer
    start = 0
  else:
    start = int(state.step)
    print(f"Training already finished (step {start}); redoing the final evaluation."
          if start >= config.train.num_steps else
          f"Resuming from the checkpoint at step {start}.", file=sys.stderr)

  step_kwargs = dict(model=model, tx=tx, spec=spec, opt_cfg=config.opt,
                     num_steps=config.train.num_steps, batch_sharding=batch_sharding)
  if stream:  # patches read on the host by a background thread, one batch per step
    batches = data_lib.Prefetcher(
        dataset.sampler(config.train.batch_size, config.data.augment, config.seed,
                        config.data.stream_patches_per_image).batch,
        start, config.train.num_steps)
    to_device = ((lambda b: jax.device_put(b, batch_sharding)) if batch_sharding is not None
                 else (lambda b: b))
    p_batch = jax.jit(functools.partial(steps.train_step_on_batch, **step_kwargs),
                      donate_argnums=(0,))
    run_step = lambda state: p_batch(state, to_device(batches.get()), train_key)
    inputs = ()
  else:
    inputs = images, sizes = put(dataset.train_NSC), put(dataset.train_sizes)
    p_step = jax.jit(functools.partial(steps.train_step, **step_kwargs), donate_argnums=(0,))
    run_step = lambda state: p_step(state, images, sizes, train_key)
  val = None
  if dataset.val_inputs is not None and len(dataset.val_inputs):
    val_targets = put(dataset.val_inputs)
    val = run_setup.validation_set(val_key, val_targets, spec)
  p_eval = jax.jit(functools.partial(steps.eval_loss, model=model, spec=spec))
  p_plateau = jax.jit(functools.partial(steps.update_plateau, factor=config.opt.plateau_factor,
                                        patience=config.opt.plateau_patience))
  on_sync = run_setup.SyncHandler(config, [workdir], [mngr], start, p_eval, val, p_plateau,
                                  stacked=False, primary=primary,
                                  p_preview=run_setup.preview_fn(model, stacked=False))

  # Inputs in place before the first step, so its time is the step's own (with the opt-in
  # CPU device split this did not prevent XLA's all-reduce abort: n2v_jax/runtime.py).
  jax.block_until_ready((state, inputs))
  try:
    state, stopped = loop.run(run_step, state, start, config.train, stop_after, on_sync,
                              preemption)
  finally:
    if stream:
      batches.close()
  on_sync.close()
  if stopped is not None:
    return run_setup.stopped_summary(stopped, preemption)
  if jax.process_count() > 1:
    # The final denoising restores the checkpoint through orbax, which would wait for the
    # other processes: a multi-host run ends here; denoise with n2v_jax.predict afterwards.
    if primary:
      run_setup.plot_losses(workdir)
    return {"steps": config.train.num_steps, "workdir": workdir,
            "process_index": jax.process_index(), "processes": jax.process_count()}
  return run_setup.finish(config, workdir, dataset)


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
