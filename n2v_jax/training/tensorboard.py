"""TensorBoard event files beside metrics.jsonl, in <workdir>/tensorboard/ (tensorboardX:
no TensorFlow). `tensorboard --logdir DIR` shows one run per workdir under DIR.

Resuming: a resumed run trains again the steps after its last checkpoint, which the
interrupted run may already have logged. The writer opens with purge_step = restored
step + 1: TensorBoard then hides the events the interrupted run wrote from that step on
(it purges by step at the restart marker), so each step shows once, as in metrics.jsonl
(session.truncate_metrics). The old event files stay on disk.
"""

import os

import numpy as np

TENSORBOARD_DIR = "tensorboard"
PREVIEW_CHANNELS = 4  # rows of the before/after image; more channels are left out
_GAP = 2  # pixels between the panels


class RunLog:
  """One workdir's event files."""

  def __init__(self, workdir: str, start: int):
    from tensorboardX import SummaryWriter  # only runs that log import it
    self.writer = SummaryWriter(logdir=os.path.join(workdir, TENSORBOARD_DIR),
                                purge_step=start + 1)

  def scalars(self, step: int, record: dict) -> None:
    tags = {"train_loss": "loss/train", "val_loss": "loss/validation",
            "learning_rate": "optimizer/learning_rate", "patches_per_s": "speed/patches_per_s"}
    for key, tag in tags.items():
      if key in record:
        self.writer.add_scalar(tag, record[key], step)

  def preview(self, step: int, noisy: np.ndarray, denoised: np.ndarray) -> None:
    self.writer.add_image("preview/noisy_vs_denoised", before_after(noisy, denoised), step,
                          dataformats="HW")

  def flush(self) -> None:  # at each sync, so a live TensorBoard and a killed run see it
    self.writer.flush()

  def close(self) -> None:
    self.writer.close()


def before_after(noisy: np.ndarray, denoised: np.ndarray) -> np.ndarray:
  """(H, 2W + gap) in [0, 1]: one (*spatial, C) patch and its prediction side by side, one
  row per channel (3D: the middle Z slice), each channel at its noisy 1-99 % range."""
  if noisy.ndim == 4:
    noisy, denoised = noisy[noisy.shape[0] // 2], denoised[denoised.shape[0] // 2]
  rows = []
  for c in range(min(noisy.shape[-1], PREVIEW_CHANNELS)):
    lo, hi = np.percentile(noisy[..., c], [1, 99])
    scale = lambda a: np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)
    gap = np.ones((noisy.shape[0], _GAP))
    rows.append(np.concatenate([scale(noisy[..., c]), gap, scale(denoised[..., c])], axis=1))
    rows.append(np.ones((_GAP, rows[-1].shape[1])))
  return np.concatenate(rows[:-1], axis=0).astype(np.float32)
