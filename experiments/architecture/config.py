"""Architecture study: N2V vs N2V2, each with and without a residual output, on BSD68.

    python -m n2v_jax.sweep --config experiments/architecture/config.py --workdir runs/architecture

Trains on the 400 noisy Train400 images (sigma 25; 5 % held out for the validation loss)
and reports PSNR (range 255, the N2V convention) on the first N_TEST noisy BSD68 test
images against their clean versions (`evaluate` below, called by the sweep runner).
Variants:
  n2v            U-Net, `uniform_withCP` replacement (the original N2V)
  n2v2           MaxBlurPool, no top skip, `median` replacement (N2V2)
  each with `model.residual` False / True. Seeds 0, 1, 2 in one vmapped program per variant.
REDUCED budget (2 shared CPU cores): 16 features, depth 2, 200 steps of 8 patches of
32x32. The CPU-budget reference (20 min per run) is configs/bsd68_*.py; 4 variants x 3
seeds of that do not fit here. Set N2V_DATA to move the data root.
"""

import os

from configs import default

DATA = os.environ.get("N2V_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                               "shared", "data"))
SEEDS = (0, 1, 2)
N_TEST = 8  # BSD68 test images evaluated (sorted names); all 68 cost too much CPU here
VARIANTS = {"n2v": {"model.n2v2": False, "mask.strategy": "uniform_withCP"},
            "n2v2": {"model.n2v2": True, "mask.strategy": "median"}}


def get_config():
  config = default.get_config()
  config.data.path = os.path.normpath(os.path.join(DATA, "bsd68", "train_noisy_sigma25.tif"))
  config.data.patch_shape = (32, 32)
  config.data.val_fraction = 0.05
  config.model.features = 16
  config.train.batch_size = 8
  config.train.num_steps = 200
  config.train.log_every = 50
  config.train.eval_every = 50
  config.train.checkpoint_every = 200
  config.train.progress = False
  config.predict.tile = 0
  return config


def sweep():
  return [{**overrides, "model.residual": residual, "seed": seed}
          for overrides in VARIANTS.values() for residual in (False, True) for seed in SEEDS]


def evaluate(point_dir):
  """PSNR (range 255) of the point's model on the first N_TEST BSD68 test images."""
  import glob

  import numpy as np
  from PIL import Image

  from n2v_jax import metrics, predict, tiff_io
  pred = predict.load_predictor(point_dir)
  noisy_paths = sorted(glob.glob(os.path.join(DATA, "bsd68", "test_noisy_sigma25", "*.tif")))
  if len(noisy_paths) < N_TEST:
    raise FileNotFoundError(f"{DATA}/bsd68/test_noisy_sigma25: expected >= {N_TEST} TIFFs")
  psnr, psnr_noisy = [], []
  for path in noisy_paths[:N_TEST]:
    stem = os.path.splitext(os.path.basename(path))[0]
    clean = np.asarray(Image.open(os.path.join(DATA, "bsd68", "test", stem + ".png")), np.float64)
    noisy = tiff_io.read_image(path, "YX").data.astype(np.float32)
    denoised = predict.predict_image(pred, noisy[..., None], tile=0)[..., 0]
    psnr.append(metrics.psnr_fixed_range(clean, denoised))
    psnr_noisy.append(metrics.psnr_fixed_range(clean, noisy))
  return {"psnr_test": float(np.mean(psnr)), "psnr_noisy_test": float(np.mean(psnr_noisy))}
