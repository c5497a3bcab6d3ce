"""BSD68 (sigma 25) with N2V2 (Hoeck et al. 2022), otherwise the original N2V recipe.

    python experiments/bsd68/run.py --config configs/bsd68_n2v2.py --workdir runs/bsd68_n2v2

N2V2: median replacement without the centre pixel, MaxBlurPool instead of max-pool,
no top-level skip connection, not residual. 80,000 steps of batch 128: GPU territory.
"""

import ml_collections

from n2v_jax.configs import bsd68_n2v


def get_config() -> ml_collections.ConfigDict:
  config = bsd68_n2v.get_config()
  config.mask.strategy = "median"
  config.model.n2v2 = True
  config.model.residual = False
  return config
