"""How to predict: one record (`PredictOptions`) carried from the command line (or the
Python caller) through the folder, plate and OME-Zarr jobs down to the tiler.

Every option is checked once, when the record is made: a bad --dtype, --shard or
--int_scale is one N2VError before any model is loaded or any file is written.
"""

from __future__ import annotations

import dataclasses

from n2v_jax.choices import OUTPUT_DTYPES
from n2v_jax.errors import N2VError
from n2v_jax.io import omezarr

# Largest tile edge by default (predict --tile, config.predict.tile): larger tiles carry less
# halo per output pixel, and MAX_VOXELS_PER_CALL (tiling) still bounds one call's memory.
DEFAULT_TILE = 1024


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int]:
  """'i/N' (0 <= i < N) -> (i, N); None or '' -> (0, 1), the whole folder or plate."""
  if isinstance(text, tuple):
    i, n = text
  elif not text:
    return 0, 1
  else:
    try:
      i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
      raise N2VError(f"--shard {text!r}: expected i/N with integers, e.g. 0/4") from None
  if n < 1 or not 0 <= i < n:
    raise N2VError(f"--shard {i}/{n}: expected 0 <= i < N (shards are numbered from 0)")
  return int(i), int(n)


@dataclasses.dataclass(frozen=True)
class PredictOptions:
  """What `predict_image`, the folder/plate/OME-Zarr jobs and `predict_path` do."""
  tile: int = DEFAULT_TILE  # largest tile edge (pixels); 0 = the whole image in one call
  tta: bool = False  # mean over the 8 flips/rotations of the (Y, X) plane
  blend: bool | None = None  # SURE blend with the input (inference.blend); None: as trained
  batch: int = 0  # tiles per model call; 0 = as many as the voxel budget allows
  axes: str | None = None  # the input's axes; None: from the file
  dtype: str = "float32"  # output type: choices.OUTPUT_DTYPES
  int_scale: float = 1.0  # dtype 'input' with integers: data units per integer step
  int_offset: float = 0.0  # ... and the data value stored as 0
  overwrite: bool = False  # replace existing outputs (folders: recompute them)
  shard: tuple[int, int] | str | None = (0, 1)  # (i, N) or 'i/N': a folder's or plate's part
  channel_pattern: str | None = None  # group single-channel files; None: as trained
  channels: tuple[str, ...] | None = None  # channel ids in model order; None: as trained
  check_channel_names: bool = True  # refuse an input whose channel names differ from training's
  progress: bool = False  # a progress bar over a folder's files or a plate's fields
  report: bool = True  # write n2v_batch_report*.json into an output folder or plate
  block_voxels: int = omezarr.BLOCK_VOXELS  # OME-Zarr: input voxels per block

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    set_("shard", parse_shard(self.shard))
    if self.dtype not in OUTPUT_DTYPES:
      raise N2VError(f"--dtype {self.dtype!r}: expected one of {', '.join(OUTPUT_DTYPES)}")
    if not self.int_scale > 0:
      raise N2VError(f"--int_scale {self.int_scale}: expected > 0")
    if not isinstance(self.tile, int) or self.tile < 0:
      raise N2VError(f"--tile {self.tile!r}: expected 0 (whole image) or a tile edge")
    if self.channels is not None:
      channels = [c for c in (self.channels.split(",") if isinstance(self.channels, str)
                              else self.channels) if str(c)]
      set_("channels", tuple(str(c) for c in channels) or None)
    set_("axes", self.axes or None)

  def replace(self, **changes) -> PredictOptions:
    return dataclasses.replace(self, **changes)
