"""K models in ONE compiled program: `jax.vmap` of `steps.train_step` over models.

The models may differ in `seed` and `opt.learning_rate` (the fields in `VMAPPED`: traced,
one value per model) and in every masking setting (`mask.*`: perc_pix, strategy, radius,
channel_mode, struct_mask). Masking settings are static (`mask.perc_pix` sets the number
of blind spots, so the shapes), so each model's batch is masked by its own copy of the
masking code inside the program, and only the network step is vmapped; the masked batch
is an image-shaped array whatever the settings. Everything else (shapes, the U-Net, the
optimizer, the data) must be equal: points that differ there are separate programs
(`training.sweep` groups them).

Per model the program carries its own train state (parameters, batch statistics, Adam
state, plateau state), its own keys (from its seed, exactly as `n2v_jax.train` derives
them), its own training data (the seed picks the synthetic image and the validation
split) and its own peak learning rate. Each model gets a normal workdir (config.json,
model.json, checkpoints, metrics.jsonl, loss.png, summary.json), so `predict`, resume and
the sweep tables treat it as a single run; the result equals `train.train_and_evaluate`
on that config up to float rounding (tests/test_multi.py). One device (no data sharding).
"""

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from n2v_jax import reporter
from n2v_jax.data import dataset as dataset_lib
from n2v_jax.errors import N2VError
from n2v_jax.io import locks
from n2v_jax.nn import unet
from n2v_jax.preemption import Preemption
from n2v_jax.training import config as config_lib, session, steps
from n2v_jax.workdir import saved_config

VMAPPED = ("seed", "opt.learning_rate")
PER_MODEL_GROUPS = ("mask",)  # config groups each model may set on its own (static)


def _per_model(key: str) -> bool:
  return key in VMAPPED or key.split(".")[0] in PER_MODEL_GROUPS


def static_part(config: ml_collections.ConfigDict) -> dict:
  """The fields that must be equal for configs to share one program."""
  flat = saved_config.flat(saved_config.to_dict(config))
  return {k: v for k, v in flat.items() if not _per_model(k)}


def incompatibility(configs: Sequence[ml_collections.ConfigDict]) -> str | None:
  """Why these configs cannot share one program (None when they can)."""
  first = static_part(configs[0])
  for c in configs[1:]:
    other = static_part(c)
    diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
    if diff:
      return (f"they differ in {', '.join(diff)} (only {', '.join(VMAPPED)} and the "
              f"{', '.join(g + '.*' for g in PER_MODEL_GROUPS)} settings may differ)")
  return None


def _same(arrays: list[np.ndarray]) -> bool:
  return all(a.shape == arrays[0].shape and np.array_equal(a, arrays[0]) for a in arrays[1:])


def _over_models(fn, in_axes: tuple, mode: str):
  """fn for one model -> fn over the models' axis 0 (args with axis None are shared)."""
  if mode == "vmap":
    return jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):  # lax.map over the models' axis; unmapped args are closed over
    xs = [a if ax == 0 else None for a, ax in zip(args, in_axes)]
    def body(x):
      return fn(*[xi if ax == 0 else a for xi, a, ax in zip(x, args, in_axes)])
    return jax.lax.map(body, xs)
  return mapped


# 'map' (lax.map over the models) is much slower per model-step on CPU: XLA's CPU
# convolutions inside the while loop that lax.map becomes are slow
# (experiments/masking/README.md).
DEFAULT_MODE = "vmap"


@locks.holds_locks  # the workdirs' locks are released when it returns or raises
def train_many(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
               stop_after: int | None = None, mode: str = DEFAULT_MODE,
               preemption: Preemption | None = None) -> list[dict]:
  """Trains (or resumes) len(configs) models together; returns their summaries in order.

  mode: 'vmap' (models side by side: one wide step) or 'map' (`jax.lax.map` over the
  models inside the same compiled program: one model at a time, no per-model dispatch or
  compilation). Both run the same per-model `steps.train_step`.

  Raises N2VError when the configs differ in more than `VMAPPED` and `mask.*`, when their
  data shapes differ, or when their workdirs hold checkpoints at different steps (then
  resume them one by one with `trainer.train_and_evaluate`).
  """
  if len(configs) != len(workdirs) or not configs:
    raise N2VError("train_many needs one workdir per config (and at least one config)")
  why = incompatibility(configs)
  if why:
    raise N2VError(f"cannot train these configs in one program: {why}")
  if len({os.path.abspath(w) for w in workdirs}) != len(workdirs):
    raise N2VError("train_many: the workdirs must be distinct")
  for c in configs:
    config_lib.validate(c)
  config, k = configs[0], len(configs)
  if mode not in ("vmap", "map"):
    raise N2VError(f"train_many mode={mode!r}: expected 'vmap' or 'map'")
  device = jax.devices()[0]
  reporter.status(f"Training {k} models in one program ({mode}) on 1 {device.platform} "
                  f"device ({device.device_kind}).")

  datasets = []
  for c in configs:
    if c.data.streaming:  # sweeps then train these points one by one
      raise N2VError("data.streaming=True is not supported by train_many; train each "
                     "config with n2v_jax.train")
    datasets.append(dataset_lib.load(c.data, c.seed, unet.divisor(c.model.depth),
                                     algorithm=c.algorithm))
  shapes = {(d.train_NSC.shape, None if d.val_inputs is None else d.val_inputs.shape)
            for d in datasets}
  if len(shapes) > 1:
    raise N2VError(f"cannot train these configs in one program: their data shapes differ "
                   f"({sorted(map(str, shapes))})")
  model = unet.make_model(config.model, datasets[0].in_channels)
  tx = steps.make_optimizer(config.opt)
  specs = [steps.step_spec(c, datasets[0].patch) for c in configs]
  spec, same_masking = specs[0], len(set(specs)) == 1

  run = session.Session(configs, workdirs, datasets, stacked=True)
  run.open({"devices": 1, "device_kind": device.device_kind, "platform": device.platform,
            "vmapped_models": k})
  init_keys, train_keys, val_keys = (jnp.stack(ks) for ks in
                                     zip(*[session.keys(c.seed) for c in configs]))
  init_fn = session.init_fn(model, tx, datasets[0])
  state, start = run.restore(jax.eval_shape(init_fn, init_keys[0]),
                             lambda: jax.jit(jax.vmap(init_fn))(init_keys))

  shared_data = _same([d.train_NSC for d in datasets]) and _same([d.train_sizes for d in datasets])
  data_axis = None if shared_data else 0
  if shared_data:
    images, sizes = jnp.asarray(datasets[0].train_NSC), jnp.asarray(datasets[0].train_sizes)
  else:
    images = jnp.asarray(np.stack([d.train_NSC for d in datasets]))
    sizes = jnp.asarray(np.stack([d.train_sizes for d in datasets]))
  lrs = [float(c.opt.learning_rate) for c in configs]
  # Equal rates: the exact single-run formula; else a traced peak rate per model.
  base_lr, lr_axis = (None, None) if len(set(lrs)) == 1 else (jnp.asarray(lrs, jnp.float32), 0)

  in_axes = (0, data_axis, data_axis, 0, lr_axis)
  static = dict(model=model, tx=tx, spec=spec, opt_cfg=config.opt,
                num_steps=config.train.num_steps)
  if same_masking:  # the whole per-model step, vmapped
    batched_step = _over_models(
        lambda state, images, sizes, key, base_lr: steps.train_step(
            state, images, sizes, key, base_lr=base_lr, **static), in_axes, mode)
  else:
    update = _over_models(
        lambda state, masked, targets, loss_mask, base_lr: steps.update_on_masked(
            state, masked, targets, loss_mask, base_lr=base_lr, **static),
        (0, 0, 0, 0, lr_axis), mode)

    def batched_step(state, images, sizes, keys, base_lr):
      # Each model's batch with its own (static) masking settings, as its own run draws it.
      pick = lambda x, i: x if data_axis is None else x[i]
      parts = [steps.masked_batch(state.step[i], pick(images, i), pick(sizes, i), keys[i],
                                  specs[i]) for i in range(k)]
      return update(state, *(jnp.stack(xs) for xs in zip(*parts)), base_lr)
  p_step = jax.jit(batched_step, donate_argnums=(0,))
  val = None
  if datasets[0].val_inputs is not None and len(datasets[0].val_inputs):
    # fixed masks, each model's drawn as its own run draws them
    parts = [session.validation_set(key, jnp.asarray(d.val_inputs), sp)
             for sp, key, d in zip(specs, val_keys, datasets)]
    val = tuple(jnp.stack(xs) for xs in zip(*parts))
  return run.train(lambda s: p_step(s, images, sizes, train_keys, base_lr), state, start,
                   model=model, spec=spec, val=val, stop_after=stop_after,
                   preemption=preemption, inputs=(images, sizes),
                   extra={"vmapped_models": k})
