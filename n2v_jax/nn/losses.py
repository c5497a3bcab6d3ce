"""Masked Noise2Void losses: averaged over the masked (blind-spot) elements only.

Works on any shape, e.g. (B, *spatial, C). The loss is sum(err * mask) / max(count, 1)
over the whole batch. Unmasked differences are selected away BEFORE squaring/abs, so
they have no effect on the value or the gradient (even if they are inf/NaN).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from n2v_jax import choices
from n2v_jax.errors import N2VError


def _masked_diff(prediction, target, loss_mask) -> tuple[jax.Array, jax.Array]:
  prediction = jnp.asarray(prediction)
  target = jnp.asarray(target)
  if prediction.shape != target.shape:
    raise N2VError(f"prediction shape {prediction.shape} != target shape {target.shape}")
  try:
    mask = jnp.broadcast_to(jnp.asarray(loss_mask, bool), prediction.shape)
  except ValueError as err:
    raise N2VError(f"loss_mask shape {jnp.shape(loss_mask)} does not broadcast to "
                   f"prediction shape {prediction.shape}") from err
  dtype = jnp.promote_types(jnp.result_type(prediction, target), jnp.float32)
  diff = jnp.where(mask, prediction.astype(dtype) - target.astype(dtype), 0.0)
  count = jnp.maximum(jnp.sum(mask, dtype=dtype), 1.0)
  return diff, count


def masked_mse(prediction, target, loss_mask) -> jax.Array:
  """Mean squared error over the elements where loss_mask is True."""
  diff, count = _masked_diff(prediction, target, loss_mask)
  return jnp.sum(jnp.square(diff)) / count


def masked_mae(prediction, target, loss_mask) -> jax.Array:
  """Mean absolute error over the elements where loss_mask is True."""
  diff, count = _masked_diff(prediction, target, loss_mask)
  return jnp.sum(jnp.abs(diff)) / count


_BY_NAME = {"mse": masked_mse, "mae": masked_mae}
# The loss of each name in choices.LOSSES (a KeyError here is a choice left unimplemented).
LOSSES: dict[str, Callable[..., jax.Array]] = {name: _BY_NAME[name] for name in choices.LOSSES}
