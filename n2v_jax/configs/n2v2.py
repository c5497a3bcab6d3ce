"""N2V2 (Hoeck et al. 2022) on the built-in synthetic image.

    python -m n2v_jax.train --config configs/n2v2.py --workdir runs/n2v2

N2V2 removes the checkerboard artefacts of N2V: MaxBlurPool instead of max-pool,
no top-level skip connection, and median replacement that excludes the centre.
Same cost as the default job (about a minute on 2 CPU cores).
"""

import ml_collections

from n2v_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.n2v2 = True
  config.model.residual = False
  config.mask.strategy = "median"
  return config
