"""Global gradient norms of a training checkpoint, to choose `opt.grad_clip`.

    .venv/bin/python experiments/bsd68/grad_norms.py --workdir runs/b6k_s2 --step 800

Restores the checkpoint at --step of a workdir trained with --config (and --seed), then
computes the loss and the global norm of its gradient on the batches (patches and blind
spots) of the next --batches steps, the parameters held fixed, and prints their median and
percentiles. On the BSD68 CPU recipe, seed 2 at step 800: median 1.09, 90th percentile
1.40, max 1.76 over 60 batches, hence configs/bsd68_cpu.py's clip at 1.5; at step 6,000
(clipped run): median 0.136, max 0.287 over 30, so the clip acts early in training only.
"""

import argparse
import os


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--config", default="bsd68_cpu", help="a module in configs/")
  p.add_argument("--seed", type=int, default=None, help="the run's config.seed")
  p.add_argument("--batches", type=int, default=60)
  args = p.parse_args()

  import importlib
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from n2v_jax.data import dataset as dataset_lib
  from n2v_jax.nn import losses
  from n2v_jax.nn import unet
  from n2v_jax.training import session
  from n2v_jax.training import steps
  from n2v_jax.workdir import checkpoint
  config = importlib.import_module(f"n2v_jax.configs.{args.config}").get_config()
  if args.seed is not None:
    config.seed = args.seed
  dataset = dataset_lib.load(config.data, config.seed, unet.divisor(config.model.depth), None,
                             config.algorithm)
  model = unet.make_model(config.model, dataset.in_channels)
  spec = steps.step_spec(config, dataset.patch)
  init_key, train_key, _ = session.keys(config.seed)
  init_fn = session.init_fn(model, steps.make_optimizer(config.opt), dataset)
  mngr = checkpoint.manager(os.path.abspath(args.workdir), keep=config.train.keep_checkpoints)
  state = checkpoint.restore(mngr, jax.eval_shape(init_fn, init_key), args.step)
  images, sizes = jnp.asarray(dataset.train_NSC), jnp.asarray(dataset.train_sizes)

  @jax.jit
  def loss_and_norm(state, step):
    masked, targets, loss_mask = steps.masked_batch(step, images, sizes, train_key, spec)
    def loss_fn(params):  # batch statistics as in training (no batch norm in the recipe)
      pred = unet.apply_model(model, {**state.variables, "params": params}, masked, train=True)
      return losses.LOSSES[spec.loss](pred, targets, loss_mask)
    loss, grads = jax.value_and_grad(loss_fn)(state.variables["params"])
    return loss, optax.global_norm(grads)

  start = int(state.step)
  out = np.array([[float(v) for v in loss_and_norm(state, jnp.int32(s))]
                  for s in range(start, start + args.batches)])
  q = np.percentile(out[:, 1], [10, 50, 90, 100])
  print(f"step {start}, {args.batches} batches: loss median {np.median(out[:, 0]):.4f}; "
        f"gradient norm p10 {q[0]:.3f}, median {q[1]:.3f}, p90 {q[2]:.3f}, max {q[3]:.3f}")


if __name__ == "__main__":
  main()
