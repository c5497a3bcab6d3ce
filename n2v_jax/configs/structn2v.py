"""structN2V (Broaddus et al. 2020): masks a line of neighbours with each blind spot.

    python -m n2v_jax.train --config configs/structn2v.py --workdir runs/structn2v

Use it when the noise is correlated along one axis (e.g. horizontal streaks from a
scanning detector): `mask.struct_mask` lists the rows of an odd-sized binary mask
centred on the blind spot; here 1x5 along X. On the built-in synthetic data (pixel-
independent noise) it costs a little PSNR compared with plain N2V; about a minute.
"""

import ml_collections

from n2v_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.mask.struct_mask = ((1, 1, 1, 1, 1),)  # (1, 5): the blind spot and 2 neighbours each side in X
  return config
