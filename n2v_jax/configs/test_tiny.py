"""Tiny config for tests: the default job, shrunk so a run takes seconds."""

import ml_collections

from n2v_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.synthetic.shape = (64, 64)
  config.data.patch_shape = (16, 16)
  config.data.max_val_patches = 4
  config.mask.perc_pix = 5.0
  config.model.depth = 1
  config.model.features = 4
  config.model.batch_chunks = 1  # speed only: slices lengthen compilation of tiny steps
  config.train.num_steps = 6
  config.train.batch_size = 4
  config.train.log_every = 2
  config.train.eval_every = 2
  config.train.checkpoint_every = 4
  config.train.progress = False
  config.opt.warmup_steps = 2
  config.predict.tile = 32
  return config
