"""K models in ONE compiled program: `jax.vmap` of `steps.train_step` over models.

The models may differ in `seed` and `opt.learning_rate` (the fields in `VMAPPED`: traced,
one value per model) and in every masking setting (`mask.*`: perc_pix, strategy, radius,
channel_mode, struct_mask). Masking settings are static (`mask.perc_pix` sets the number
of blind spots, so the shapes), so each model's batch is masked by its own copy of the
masking code inside the program, and only the network step is vmapped; the masked batch
is an image-shaped array whatever the settings. Everything else (shapes, the U-Net, the
optimizer, the data) must be equal: points that differ there are separate programs
(`n2v_jax.sweep` groups them).

Per model the program carries its own train state (parameters, batch statistics, Adam
state, plateau state), its own keys (from its seed, exactly as `n2v_jax.train` derives
them), its own training data (the seed picks the synthetic image and the validation
split) and its own peak learning rate. Each model gets a normal workdir (config.json,
model.json, checkpoints, metrics.jsonl, loss.png, summary.json), so `predict`, resume and
the sweep tables treat it as a single run; the result equals `train.train_and_evaluate`
on that config up to float rounding (tests/test_multi.py). One device (no data sharding).
"""

import functools
import json
import os
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from n2v_jax import checkpoint, cluster, config_lib, data as data_lib, loop, models, report, steps
from n2v_jax import train

VMAPPED = ("seed", "opt.learning_rate")
PER_MODEL_GROUPS = ("mask",)  # config groups each model may set on its own (static)


def _per_model(key: str) -> bool:
  return key in VMAPPED or key.split(".")[0] in PER_MODEL_GROUPS


def _static_part(config: ml_collections.ConfigDict) -> dict:
  flat = config_lib.flat(config_lib.to_dict(config))
  return {k: v for k, v in flat.items() if not _per_model(k)}


def incompatibility(configs: Sequence[ml_collections.ConfigDict]) -> str | None:
  """Why these configs cannot share one program (None when they can)."""
  first = _static_part(configs[0])
  for c in configs[1:]:
    other = _static_part(c)
    diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
    if diff:
      return (f"they differ in {', '.join(diff)} (only {', '.join(VMAPPED)} and the "
              f"{', '.join(g + '.*' for g in PER_MODEL_GROUPS)} settings may differ)")
  return None


def _stack(trees: list) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: Any, i: int) -> Any:
  return jax.tree.map(lambda x: x[i], tree)


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


def default_mode() -> str:
  """'vmap'. ('map' measured ~10x slower per model-step on CPU: XLA's CPU convolutions
  inside the while loop that lax.map becomes are slow; see experiments/masking/README.md.)"""
  return "vmap"


@cluster.holds_locks  # the workdirs' locks are released when it returns or raises
def train_many(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
               stop_after: int | None = None, mode: str | None = None,
               preemption: loop.Preemption | None = None) -> list[dict]:
  """Trains (or resumes) len(configs) models together; returns their summaries in order.

  mode: 'vmap' (models side by side: one wide step) or 'map' (`jax.lax.map` over the
  models inside the same compiled program: one model at a time, no per-model dispatch or
  compilation); None = `default_mode()`. Both run the same per-model `steps.train_step`.

  Raises ValueError when the configs differ in more than `VMAPPED` and `mask.*`, when their data
  shapes differ, or when their workdirs hold checkpoints at different steps (then resume
  them one by one with `train.train_and_evaluate`).
  """
  if len(configs) != len(workdirs) or not configs:
    raise ValueError("train_many needs one workdir per config (and at least one config)")
  why = incompatibility(configs)
  if why:
    raise ValueError(f"cannot train these configs in one program: {why}")
  if len({os.path.abspath(w) for w in workdirs}) != len(workdirs):
    raise ValueError("train_many: the workdirs must be distinct")
  for c in configs:
    config_lib.validate(c)
  config, k = configs[0], len(configs)
  mode = mode or default_mode()
  if mode not in ("vmap", "map"):
    raise ValueError(f"train_many mode={mode!r}: expected 'vmap' or 'map'")
  workdirs = [os.path.abspath(w) for w in workdirs]
  device = jax.devices()[0]
  print(f"Training {k} models in one program ({mode}) on 1 {device.platform} device "
        f"({device.device_kind}).", file=sys.stderr)

  datasets, patch = [], None
  for c in configs:
    if c.data.get("streaming", False):  # sweeps then train these points one by one
      raise ValueError("data.streaming=True is not supported by train_many; train each "
                       "config with n2v_jax.train")
    raw = data_lib.load_raw(c.data, c.seed)
    patch = data_lib.resolve_patch_shape(c.data.patch_shape, len(raw.spatial_axes),
                                         models.divisor(c.model.depth))
    datasets.append(data_lib.build_dataset(c.data, raw, patch, c.seed))
  shapes = {(d.train_NSC.shape, None if d.val_inputs is None else d.val_inputs.shape)
            for d in datasets}
  if len(shapes) > 1:
    raise ValueError(f"cannot train these configs in one program: their data shapes differ "
                     f"({sorted(map(str, shapes))})")
  model = models.make_model(config.model, datasets[0].in_channels)
  tx = steps.make_optimizer(config.opt)
  specs = [steps.step_spec(c, patch) for c in configs]
  spec, same_masking = specs[0], len(set(specs)) == 1

  for c, d, w in zip(configs, datasets, workdirs):
    config_dict = config_lib.to_dict(c)
    train._check_resume(w, config_dict)
  for w in workdirs:  # one writer per workdir: all locked before any is written
    os.makedirs(w, exist_ok=True)
    cluster.lock_workdir(w)
  for c, d, w in zip(configs, datasets, workdirs):
    os.makedirs(w, exist_ok=True)
    config_dict = config_lib.to_dict(c)
    config_dict["runtime"] = {"devices": 1, "device_kind": device.device_kind,
                              "platform": device.platform, "processes": jax.process_count(),
                              "jax": jax.__version__, "vmapped_models": k}
    checkpoint.write_json_atomic(os.path.join(w, "config.json"), config_dict)
    checkpoint.write_json_atomic(os.path.join(w, checkpoint.MODEL_JSON),
                                 train.model_metadata(c, d, patch))

  roots = [jax.random.key(c.seed) for c in configs]  # as train.py: fold_in(root, 0/1/2)
  init_keys, train_keys, val_keys = (jnp.stack([jax.random.fold_in(r, i) for r in roots])
                                     for i in range(3))
  init_fn = functools.partial(steps.create_train_state, model=model, tx=tx,
                              input_shape=(1, *patch, datasets[0].in_channels))
  mngrs = [checkpoint.manager(w, keep=c.train.keep_checkpoints) for c, w in zip(configs, workdirs)]
  abstract = jax.eval_shape(init_fn, init_keys[0])
  restored = [checkpoint.restore(m, abstract) for m in mngrs]
  if all(r is None for r in restored):
    state, start = jax.jit(jax.vmap(init_fn))(init_keys), 0
  elif all(r is not None for r in restored) and len({int(r.step) for r in restored}) == 1:
    state, start = _stack(restored), int(restored[0].step)
    print(f"Resuming {k} models from their checkpoints at step {start}.", file=sys.stderr)
  else:
    found = [None if r is None else int(r.step) for r in restored]
    raise ValueError(f"cannot resume these workdirs together: their checkpoints are at "
                     f"steps {found}; resume them one by one with n2v_jax.train")
  del restored
  metrics_paths = [os.path.join(w, "metrics.jsonl") for w in workdirs]
  for p in metrics_paths:
    train._truncate_metrics(p, start)

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
        lambda state, patches, masked, loss_mask, base_lr: steps.update_on_masked(
            state, patches, masked, loss_mask, base_lr=base_lr, **static),
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
    val_targets = jnp.asarray(np.stack([d.val_inputs for d in datasets]))
    if same_masking:  # fixed masks, as train.py draws them per model
      val_masked, val_mask = jax.jit(jax.vmap(functools.partial(steps.mask_batch, spec=spec)))(
          val_keys, val_targets)
    else:
      parts = [jax.jit(functools.partial(steps.mask_batch, spec=sp))(key, t)
               for sp, key, t in zip(specs, val_keys, val_targets)]
      val_masked, val_mask = (jnp.stack(xs) for xs in zip(*parts))
    p_eval = jax.jit(jax.vmap(functools.partial(steps.eval_loss, model=model, spec=spec)))
    val = (val_masked, val_targets, val_mask)
  p_plateau = jax.jit(jax.vmap(functools.partial(
      steps.update_plateau, factor=config.opt.plateau_factor,
      patience=config.opt.plateau_patience)))

  num_steps, batch = config.train.num_steps, config.train.batch_size
  progress = report.Progress(start, num_steps, batch * k, config.train.progress)

  def on_sync(state, sync: loop.Sync):
    bad = sync.first_bad
    if bad is not None:
      i = bad[1][0]
      raise train.NonFiniteLossError(
          f"non-finite training loss at step {bad[0]} of the model in {workdirs[i]} "
          f"(opt.learning_rate={lrs[i]}); lower its learning rate")
    if sync.log:
      lr_now = np.asarray(sync.metrics["learning_rate"])
      patches_per_s = sync.window_steps * batch / max(sync.window_seconds, 1e-9)
      val_loss = None
      if val is not None and sync.evaluate:
        val_loss = p_eval(state, *val)
        if config.opt.schedule == "plateau":
          state = p_plateau(state, val_loss)
        val_loss = np.asarray(val_loss)
      for i, path in enumerate(metrics_paths):
        record = {"step": sync.step, "train_loss": float(sync.losses[:, i].mean()),
                  "learning_rate": float(lr_now[i]), "patches_per_s": patches_per_s,
                  "time": time.time(), "vmapped_models": k}
        if val_loss is not None:
          record["val_loss"] = float(val_loss[i])
        checkpoint.append_line(path, json.dumps(record))
      progress.update(sync.step, {"train_loss": float(sync.losses.mean()),
                                  "patches_per_s": patches_per_s * k})
    if sync.save:
      for i, m in enumerate(mngrs):
        checkpoint.save(m, sync.step, _unstack(state, i))
    return state

  state, stopped = loop.run(lambda s: p_step(s, images, sizes, train_keys, base_lr), state,
                            start, config.train, stop_after, on_sync, preemption)
  for m in mngrs:
    m.wait_until_finished()
  progress.close()
  if stopped is not None:
    return [{"stopped_at": stopped, **({"signal": preemption.signum}
                                       if preemption is not None and preemption.signum else {})}
            for _ in configs]
  summaries = []
  for i, (c, d, w) in enumerate(zip(configs, datasets, workdirs)):
    report.plot_losses(metrics_paths[i], os.path.join(w, "loss.png"))
    summaries.append(report.final_evaluation(c, w, d, _unstack(state, i).variables, model))
  return summaries
