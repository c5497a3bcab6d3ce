"""Train state, optimizer, and the pure jitted steps: (state, data, key) -> (state, metrics)."""

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from n2v_jax import choices
from n2v_jax.data import sampling
from n2v_jax.errors import N2VError
from n2v_jax.nn import losses, masking, unet


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32: completed steps; per-step keys are fold_in(key, step)
  variables: Any  # {'params': ..., 'batch_stats': ...}
  opt_state: Any
  lr_scale: jax.Array  # reduce-on-plateau factor applied to the schedule
  plateau_best: jax.Array  # best validation loss so far
  plateau_bad: jax.Array  # evaluations since the best


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """Everything static about the step; bound with functools.partial, never traced."""
  patch: tuple[int, ...]
  batch_size: int
  augment: bool
  perc_pix: float
  strategy: str
  radius: int
  channel_mode: str
  struct_mask: tuple | None
  loss: str
  algorithm: str = "n2v"  # 'n2n'/'care': patches hold (input, target) pairs, no blind spots

  def mask_kwargs(self) -> dict:
    return dict(perc_pix=self.perc_pix, strategy=self.strategy, radius=self.radius,
                channel_mode=self.channel_mode,
                struct_mask=None if self.struct_mask is None else np.asarray(self.struct_mask))


def step_spec(config: Any, patch: tuple[int, ...]) -> StepSpec:
  struct = tuple(config.mask.struct_mask) if config.mask.struct_mask else None
  if struct is not None:
    struct = _freeze(np.asarray(struct, np.int32))
  return StepSpec(patch, config.train.batch_size, config.data.augment, config.mask.perc_pix,
                  config.mask.strategy, config.mask.radius, config.mask.channel_mode, struct,
                  config.loss, config.algorithm)


def _freeze(a: np.ndarray):
  return tuple(_freeze(x) for x in a) if a.ndim else int(a)


def make_optimizer(opt_cfg: Any) -> optax.GradientTransformation:
  """Adam direction only; the learning rate is applied in the step (schedule x plateau)."""
  parts = [optax.clip_by_global_norm(opt_cfg.grad_clip)] if opt_cfg.grad_clip > 0 else []
  return optax.chain(*parts, optax.scale_by_adam())


def learning_rate(opt_cfg: Any, num_steps: int, step: jax.Array,
                  base: Any = None, peak: float | None = None) -> jax.Array:
  """Peak rate opt_cfg.learning_rate, or `base` (may be traced: training.multi vmaps it)."""
  if base is not None:  # the schedule is linear in the peak rate; optax needs a static one
    return base * learning_rate(opt_cfg, num_steps, step, peak=1.0)
  base = opt_cfg.learning_rate if peak is None else peak
  if opt_cfg.schedule in ("constant", "plateau"):
    return jnp.asarray(base, jnp.float32)
  if opt_cfg.schedule == "cosine":
    sched = optax.warmup_cosine_decay_schedule(
        0.0, base, max(1, opt_cfg.warmup_steps), max(num_steps, opt_cfg.warmup_steps + 1),
        end_value=base * opt_cfg.min_lr_ratio)
    return sched(step)
  raise N2VError(f"opt.schedule={opt_cfg.schedule!r}: expected one of "
                 f"{', '.join(choices.SCHEDULES)}")


def create_train_state(key: jax.Array, model: Any, tx: optax.GradientTransformation,
                       input_shape: tuple[int, ...]) -> TrainState:
  variables = model.init(key, jnp.zeros(input_shape, jnp.float32), train=False)
  variables = flax.core.unfreeze(variables)
  return TrainState(step=jnp.zeros((), jnp.int32), variables=variables,
                    opt_state=tx.init(variables["params"]),
                    lr_scale=jnp.ones((), jnp.float32),
                    plateau_best=jnp.full((), jnp.inf, jnp.float32),
                    plateau_bad=jnp.zeros((), jnp.int32))


def mask_batch(key: jax.Array, patches: jax.Array, spec: StepSpec):
  keys = jax.random.split(key, patches.shape[0])
  mask_one = functools.partial(masking.mask_image, **spec.mask_kwargs())
  return jax.vmap(mask_one)(keys, patches)


def network_inputs(key: jax.Array, patches: jax.Array, spec: StepSpec):
  """(network input, target, loss mask) of a batch: n2v masks blind spots in the patches
  and scores them there; n2n/care patches are (input, target) pairs along the channels,
  scored at every pixel."""
  if spec.algorithm not in choices.PAIRED_ALGORITHMS:
    masked, loss_mask = mask_batch(key, patches, spec)
    return masked, patches, loss_mask
  inputs, targets = jnp.split(patches, 2, axis=-1)
  return inputs, targets, jnp.ones(targets.shape, bool)


def train_step(state: TrainState, images_NSC: jax.Array, sizes: jax.Array, key: jax.Array, *,
               model: Any, tx: optax.GradientTransformation, spec: StepSpec, opt_cfg: Any,
               num_steps: int, batch_sharding: Any = None,
               base_lr: jax.Array | None = None) -> tuple[TrainState, dict]:
  """One step for ONE model; training.multi vmaps it (state, data, key, base_lr per model)."""
  k_patch, k_mask = jax.random.split(jax.random.fold_in(key, state.step))
  patches = sampling.sample_batch(k_patch, images_NSC, sizes, spec.patch, spec.batch_size,
                                  spec.augment)
  return _step_on_patches(state, patches, k_mask, model=model, tx=tx, spec=spec,
                          opt_cfg=opt_cfg, num_steps=num_steps, batch_sharding=batch_sharding,
                          base_lr=base_lr)


def train_step_on_batch(state: TrainState, patches: jax.Array, key: jax.Array, *, model: Any,
                        tx: optax.GradientTransformation, spec: StepSpec, opt_cfg: Any,
                        num_steps: int, batch_sharding: Any = None,
                        base_lr: jax.Array | None = None) -> tuple[TrainState, dict]:
  """`train_step` on patches sampled on the host (streaming); masks stay keyed by step."""
  _, k_mask = jax.random.split(jax.random.fold_in(key, state.step))
  return _step_on_patches(state, patches, k_mask, model=model, tx=tx, spec=spec,
                          opt_cfg=opt_cfg, num_steps=num_steps, batch_sharding=batch_sharding,
                          base_lr=base_lr)


def _step_on_patches(state: TrainState, patches: jax.Array, k_mask: jax.Array, *, model: Any,
                     tx: optax.GradientTransformation, spec: StepSpec, opt_cfg: Any,
                     num_steps: int, batch_sharding: Any,
                     base_lr: jax.Array | None) -> tuple[TrainState, dict]:
  if batch_sharding is not None:
    patches = jax.lax.with_sharding_constraint(patches, batch_sharding)
  masked, targets, loss_mask = network_inputs(k_mask, patches, spec)
  return update_on_masked(state, masked, targets, loss_mask, model=model, tx=tx, spec=spec,
                          opt_cfg=opt_cfg, num_steps=num_steps, base_lr=base_lr)


def masked_batch(step: jax.Array, images_NSC: jax.Array, sizes: jax.Array, key: jax.Array,
                 spec: StepSpec) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The (network input, targets, loss_mask) that `train_step` trains on at `step`."""
  k_patch, k_mask = jax.random.split(jax.random.fold_in(key, step))
  patches = sampling.sample_batch(k_patch, images_NSC, sizes, spec.patch, spec.batch_size,
                                  spec.augment)
  return network_inputs(k_mask, patches, spec)


def update_on_masked(state: TrainState, masked: jax.Array, targets: jax.Array,
                     loss_mask: jax.Array, *, model: Any, tx: optax.GradientTransformation,
                     spec: StepSpec, opt_cfg: Any, num_steps: int,
                     base_lr: jax.Array | None = None) -> tuple[TrainState, dict]:
  """Forward, blind-spot loss, backward and Adam update on an already masked batch."""
  batch_stats = state.variables.get("batch_stats")

  def loss_fn(params):
    variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
    if batch_stats:
      pred, updates = model.apply(variables, masked, train=True, mutable=["batch_stats"])
    else:
      pred, updates = unet.apply_model(model, variables, masked, train=True), {}
    return losses.LOSSES[spec.loss](pred, targets, loss_mask), updates

  (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.variables["params"])
  direction, opt_state = tx.update(grads, state.opt_state, state.variables["params"])
  lr = learning_rate(opt_cfg, num_steps, state.step, base_lr) * state.lr_scale
  params = jax.tree.map(lambda p, d: p - lr * d, state.variables["params"], direction)
  variables = {**state.variables, "params": params, **updates}
  new_state = state.replace(step=state.step + 1, variables=variables, opt_state=opt_state)
  return new_state, {"loss": loss, "learning_rate": lr}


def eval_loss(state: TrainState, val_masked: jax.Array, val_targets: jax.Array,
              val_loss_mask: jax.Array, *, model: Any, spec: StepSpec) -> jax.Array:
  pred = unet.apply_model(model, state.variables, val_masked, train=False)
  return losses.LOSSES[spec.loss](pred, val_targets, val_loss_mask)


def update_plateau(state: TrainState, val_loss: jax.Array, *, factor: float,
                   patience: int, min_delta: float = 1e-4) -> TrainState:
  """Keras-style ReduceLROnPlateau on the validation loss, as in the original N2V."""
  improved = val_loss < state.plateau_best - min_delta
  bad = jnp.where(improved, 0, state.plateau_bad + 1)
  reduce = bad >= patience
  return state.replace(plateau_best=jnp.where(improved, val_loss, state.plateau_best),
                       plateau_bad=jnp.where(reduce, 0, bad),
                       lr_scale=jnp.where(reduce, state.lr_scale * factor, state.lr_scale))
