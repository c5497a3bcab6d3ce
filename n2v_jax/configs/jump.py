"""N2V for multi-channel Cell Painting fields (JUMP): channels, not colour.

    python -m n2v_jax.train --config configs/jump.py --workdir runs/jump
    python -m n2v_jax.train --config configs/jump.py:orig --workdir runs/jump_orig

The argument after ':' picks the training data (all can be overridden with
--config.data.path=...):
  hyperstack  (default) the JUMP field as one ImageJ CYX hyperstack (DNA, RNA, AGP)
  orig        the raw Phenix per-channel files (`r01c01f01p01-ch5sk1fk1fl1.tiff`, LZW,
              needs imagecodecs), grouped into fields by `data.channel_pattern`; set
              `data.path` to a plate's `Images/` folder to train on many fields
  folder      a folder of multi-channel hyperstacks (set data.path)
  stack       one (S, C, Y, X) stack, e.g. the JUMP denoising set (set data.path)

Expected: ~20 minutes on 2 CPU cores for one field, the background noise from 10-15 to
~4 counts (experiments/jump/README.md holds the measurements). The recipe:
- Anscombe transform (`data.transform`): the noise of these photon counts grows with
  intensity (~10 counts in the background, hundreds in bright nuclei), so on the raw
  scale the loss would be all nuclei; after 2*sqrt(x + 3/8) every region weighs alike.
- Per-channel percentile normalization after it (robust to the ~100-300 count camera
  offset and to saturated pixels).
- N2V2 (MaxBlurPool, no top skip connection, median replacement): no checkerboard
  artefacts, which a short N2V run left on the nuclei.
- 5 % blind spots (instead of N2V's 0.2-1.5 %): this field is nearly noise-free at the
  scale of its nuclei, so the network mostly learns to interpolate each pixel from its
  neighbours, and more blind spots per patch give that more signal per step.
- 2,400 steps of 16 patches of 64x64, 32 features.
- Adam at 3e-3 (peak) after 50 warm-up steps, cosine decay: ~1 dB above 1e-3 on the
  semi-synthetic ground truth (experiments/jump/semisynthetic.py).

Each channel has its own blind spots (`mask.channel_mode`
'independent': the network may read the other channels at a blind spot, which helps when
channels share structure, as DNA/RNA do, while their noise is independent); one joint
network (`model.independent_channels=False`). Use `mask.channel_mode=shared` when channels
are copies with correlated noise (bleed-through), and `model.independent_channels=True`
to keep channels from mixing at all.
"""

import os

import ml_collections

from n2v_jax.configs import data_root, default

_FIELD = "microscopy/jump_cpg0000_BR00117006_A01_s1"
SOURCES = ("hyperstack", "orig", "folder", "stack")


def get_config(source: str = "hyperstack") -> ml_collections.ConfigDict:
  source = source or "hyperstack"
  if source not in SOURCES:
    raise ValueError(f"configs/jump.py:{source}: expected one of {', '.join(SOURCES)}")
  config = default.get_config()
  field = os.path.normpath(os.path.join(data_root(), _FIELD))
  if source == "hyperstack":
    config.data.path = os.path.join(field, "jump_BR00117006_A01_s1_CYX.tif")
  elif source == "orig":
    config.data.path = os.path.join(field, "orig")
    config.data.channel_pattern = "phenix"
    config.data.channels = (5, 3, 2)  # this plate's map: ch5 DNA, ch3 RNA, ch2 AGP
    config.data.channel_names = ("DNA", "RNA", "AGP")
  elif source == "folder":
    config.data.path = ""  # set: a folder of CYX hyperstacks with the same channels
  else:
    config.data.path = ""  # set: one SCYX stack
    config.data.axes = "SCYX"
  config.data.patch_shape = (64, 64)
  config.data.normalization = "percentile"
  config.data.percentiles = (1.0, 99.5)
  config.data.transform = "anscombe"
  config.data.val_fraction = 0.1  # one field: its last rows; several: held-out fields
  config.mask.channel_mode = "independent"
  config.mask.perc_pix = 5.0
  config.mask.strategy = "median"
  config.model.depth = 2
  config.model.features = 32
  config.model.n2v2 = True
  config.model.independent_channels = False
  config.opt.learning_rate = 3e-3
  config.opt.warmup_steps = 50
  config.train.num_steps = 2400
  config.train.batch_size = 16
  config.train.log_every = 50
  config.train.eval_every = 100
  config.train.checkpoint_every = 200
  return config
