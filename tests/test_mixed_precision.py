"""Mixed precision: model.dtype='bfloat16' computes in bf16; parameters and loss stay float32."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from n2v_jax.data import dataset as dataset_lib
from n2v_jax.data import sources
from n2v_jax.nn import unet
from n2v_jax.training import steps
from tests.helpers import tiny_config


def _two_steps(dtype):
  config = tiny_config(**{"model.dtype": dtype})
  raw = sources.open_source(config.data, config.seed)
  patch = tuple(config.data.patch_shape)
  ds = dataset_lib.build_dataset(config.data, raw, patch, config.seed)
  model, tx = unet.make_model(config.model, ds.in_channels), steps.make_optimizer(config.opt)
  state = steps.create_train_state(jax.random.key(0), model, tx, (1, *patch, ds.in_channels))
  fn = jax.jit(functools.partial(steps.train_step, model=model, tx=tx,
                                 spec=steps.step_spec(config, patch), opt_cfg=config.opt,
                                 num_steps=2))
  hlo = fn.lower(state, ds.train_NSC, ds.train_sizes, jax.random.key(1)).as_text()
  losses = []
  for _ in range(2):
    state, metrics = fn(state, jnp.asarray(ds.train_NSC), jnp.asarray(ds.train_sizes),
                        jax.random.key(1))
    losses.append(metrics["loss"])
  return state, losses, hlo


def test_bfloat16_step_runs_on_cpu_with_float32_params_and_loss():
  state16, losses16, hlo16 = _two_steps("bfloat16")
  state32, losses32, hlo32 = _two_steps("float32")
  assert "bf16" in hlo16 and "bf16" not in hlo32  # the convolutions really run in bf16
  assert all(l.dtype == jnp.float32 and np.isfinite(float(l)) for l in losses16)
  for leaf in jax.tree.leaves(state16.variables) + jax.tree.leaves(state16.opt_state):
    assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
  # Same data, masks and initialization: bf16 rounding (8 bits of mantissa) moves the loss a little.
  np.testing.assert_allclose(np.asarray(losses16), np.asarray(losses32), rtol=5e-2)
  assert float(losses16[0]) != float(losses32[0])
