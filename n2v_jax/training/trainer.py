"""Training one model: `train_and_evaluate(config, workdir)`, what `python -m n2v_jax.train`
runs.

Rerunning it on the same workdir resumes from the last checkpoint and ends with the same
parameters as an uninterrupted run. Batches are drawn on the device from the images in
memory, or (data.streaming) read on the host by a background thread; with several devices
each batch is sharded over them.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from n2v_jax import reporter
from n2v_jax.data import dataset as dataset_lib, prefetch
from n2v_jax.io import locks
from n2v_jax.nn import unet
from n2v_jax.preemption import Preemption
from n2v_jax.training import config as config_lib, runtime, session, steps


@locks.holds_locks  # the workdir's lock is released when the run returns or raises
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after: int | None = None, array: np.ndarray | None = None,
                       preemption: Preemption | None = None) -> dict:
  """Trains (or resumes) in workdir; returns the summary (with PSNR when ground truth exists).

  stop_after: end this call after that step (checkpointed), as a time-limited job would;
  calling again resumes. Returns {'stopped_at': step} then.
  preemption: an active Preemption: on SIGTERM/SIGINT the run checkpoints the current
  step and returns {'stopped_at': step, 'signal': signum}.
  array: train on this NumPy array (axes in config.data.axes) instead of data.path.
  """
  config_lib.validate(config)
  if config.train.distributed:
    runtime.initialize_distributed(config.train)
  dataset = dataset_lib.load(config.data, config.seed, unet.divisor(config.model.depth), array,
                             config.algorithm)
  stream = dataset.streaming
  # Before any JAX computation: the device count is fixed when JAX starts.
  cpu_devices = config.train.cpu_devices
  if not config.train.data_parallel or (config.train.distributed and cpu_devices == 0):
    cpu_devices = 1  # 'auto' splits only single-process data-parallel runs
  runtime.setup_cpu_devices(cpu_devices, config.train.batch_size,
                            0 if stream else dataset.train_NSC.nbytes)
  devices, batch_sharding, replicated = runtime.shardings(config.train)
  reporter.status(f"Training on {len(devices)} {devices[0].platform} device(s) "
                  f"({devices[0].device_kind}), {jax.process_count()} process(es).")
  model = unet.make_model(config.model, dataset.in_channels)
  tx = steps.make_optimizer(config.opt)
  spec = steps.step_spec(config, dataset.patch)

  run = session.Session([config], [workdir], [dataset], stacked=False,
                        primary=jax.process_index() == 0)
  run.open({"devices": len(devices), "device_kind": devices[0].device_kind,
            "platform": devices[0].platform})
  init_key, train_key, val_key = session.keys(config.seed)
  put = (lambda x: jax.device_put(x, replicated)) if replicated is not None else jnp.asarray
  init_fn = session.init_fn(model, tx, dataset)
  # Explicit shardings: orbax then restores a checkpoint written by any device/process layout.
  target = replicated if replicated is not None else jax.sharding.SingleDeviceSharding(devices[0])
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=target),
                          jax.eval_shape(init_fn, init_key))
  # one compile for the initialization, not one per layer
  state, start = run.restore(abstract, lambda: jax.tree.map(put, jax.jit(init_fn)(init_key)))

  step_kwargs = dict(model=model, tx=tx, spec=spec, opt_cfg=config.opt,
                     num_steps=config.train.num_steps, batch_sharding=batch_sharding)
  close = lambda: None
  if stream:  # patches read on the host by a background thread, one batch per step
    batches = prefetch.Prefetcher(
        dataset.sampler(config.train.batch_size, config.data.augment, config.seed,
                        config.data.stream_patches_per_image).batch,
        start, config.train.num_steps)
    close = batches.close
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
    val = session.validation_set(val_key, put(dataset.val_inputs), spec)
  return run.train(run_step, state, start, model=model, spec=spec, val=val,
                   stop_after=stop_after, preemption=preemption, inputs=inputs,
                   close=close)[0]
