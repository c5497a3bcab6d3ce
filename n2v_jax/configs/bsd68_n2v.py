"""BSD68 (sigma 25), the original N2V recipe (Krull et al. 2019; juglab/n2v notebook).

    python experiments/bsd68/run.py --config configs/bsd68_n2v.py --workdir runs/bsd68_n2v

U-Net depth 2, 3x3, 96 first-level features, batch norm, residual; 64x64 patches,
batch 128, 0.198 % blind spots, uniform_withCP radius 2, MSE; Adam 4e-4 halved after
10 epochs (of 400 steps) without validation improvement; 200 x 400 = 80,000 steps.
Trained on the noisy Train400 with 4 images held out; normalization from the noisy
training data. Reference: 27.71 dB (paper), 27.81 dB (juglab/n2v notebook). Cost: GPU
territory (~30 min on one H100 is the target); days on 2 CPU cores.

The data folder is ../shared/data/bsd68 beside the repo, or $N2V_DATA/bsd68.
"""

import os

import ml_collections

from n2v_jax.configs import data_root, default


def bsd68_dir() -> str:
  return os.path.normpath(os.path.join(data_root(), "bsd68"))


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.path = os.path.join(bsd68_dir(), "train_noisy_sigma25.tif")
  config.data.axes = "SYX"  # 400 independent 180x180 images
  config.data.val_fraction = 0.01  # 4 of 400 images held out, as in the N2V notebook
  config.data.max_val_patches = 64
  config.data.patch_shape = (64, 64)
  config.mask.perc_pix = 0.198
  config.mask.strategy = "uniform_withCP"
  config.mask.radius = 2
  config.model.depth = 2
  config.model.kernel_size = 3
  config.model.features = 96
  config.model.batch_norm = True
  config.model.residual = True
  config.opt.learning_rate = 4e-4
  config.opt.schedule = "plateau"
  config.opt.plateau_factor = 0.5
  config.opt.plateau_patience = 10  # epochs of 400 steps
  config.loss = "mse"
  config.train.num_steps = 200 * 400
  config.train.batch_size = 128
  config.train.log_every = 100
  config.train.eval_every = 400  # one N2V "epoch"
  config.train.checkpoint_every = 2000
  config.predict.tile = 0
  return config
