"""Masking study: what matters in the blind spot? (`experiments/masking/README.md`)

    python -m n2v_jax.sweep --config experiments/masking/config.py --workdir runs/masking

(a) `mask.perc_pix` x replacement `mask.strategy` on the built-in 1-channel synthetic
    image; (b) `mask.channel_mode` shared vs independent on a 3-channel synthetic image
    whose channels are independent (`correlation` 0) or share 80 % of signal and noise
    (`correlation` 0.8, like bleed-through). Every point with seeds 0, 1, 2 (the seed also
    draws the synthetic image); the seeds of a point train in one vmapped program.
Small on purpose (CPU budget): 128x128 image, 8-feature depth-2 U-Net, 300 steps of
8 patches of 32x32.
"""

from n2v_jax.configs import default

SEEDS = (0, 1, 2)
PERC_PIX = (0.5, 2.0, 8.0)
STRATEGIES = ("uniform_withCP", "uniform_withoutCP", "median")


def get_config():
  config = default.get_config()
  config.data.synthetic.shape = (128, 128)
  config.data.patch_shape = (32, 32)
  config.model.features = 8
  config.train.batch_size = 8
  config.train.num_steps = 300
  config.train.log_every = 50
  config.train.eval_every = 100
  config.train.checkpoint_every = 300
  config.train.progress = False
  config.predict.tile = 0
  return config


def sweep():
  points = [{"mask.perc_pix": p, "mask.strategy": s, "seed": seed}
            for p in PERC_PIX for s in STRATEGIES for seed in SEEDS]
  points += [{"data.synthetic.channels": 3, "data.synthetic.correlation": rho,
              "mask.channel_mode": mode, "seed": seed}
             for rho in (0.0, 0.8) for mode in ("independent", "shared") for seed in SEEDS]
  return points
