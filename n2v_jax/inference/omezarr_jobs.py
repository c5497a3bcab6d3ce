"""OME-Zarr images and HCS plates denoised block by block, never whole in memory.

    python -m n2v_jax.predict --workdir DIR --input in.ome.zarr --output out.ome.zarr
    python -m n2v_jax.predict --workdir DIR --input plate.zarr --output out.zarr [--shard i/N]

* An image is cut into blocks of whole chunks (`omezarr.block_grid`: one chunk deep along
  T, every channel, a few chunks along the spatial axes). Each block is read with the
  model's halo around it (`Predictor.halo`, the start on the pooling grid), predicted as one
  image and only its core is written: the result equals whole-image prediction (tiling is
  exact, inference.tiling), TTA included.
* The output (`omezarr.create_image`) has the input's NGFF version, axes, channel names,
  and its pyramid: every level with its shape, chunks and scales. Level 0 is denoised;
  level k is made block by block from the denoised level k - 1 (`omezarr.downsample`), so a
  viewer opens the output as it opened the input. Each finished block (of any level) is
  listed in the output's BlockLog, so an interrupted run (killed, or stopped after the
  current block by SIGTERM/SIGINT) continues with the blocks not listed; nothing finished
  is recomputed.
* A plate (plate -> wells -> fields) goes to a new plate of the same layout, each field a
  job of n2v_jax.inference.jobs.run_jobs: finished fields skipped, `--shard i/N` by field, claims
  for several processes, one failing field reported while the others go on.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import zarr

from n2v_jax.errors import ExistsError, N2VError
from n2v_jax.inference import dtypes, jobs, predictor
from n2v_jax.inference.options import PredictOptions
from n2v_jax.io import omezarr
from n2v_jax.io.axes import from_canonical, to_canonical
from n2v_jax.preemption import Preemption

MAX_NOTES = 5  # per image: the first notes (e.g. clipped pixels) of its blocks


def _region(core: slice, n: int, halo: int, divisor: int) -> slice:
  """What a block reads along one spatial axis of length n: the core and `halo` around it,
  starting on the pooling grid (a multiple of `divisor` from the image's start) and ending
  a multiple of `divisor` before the image's end (where flipped TTA passes put their grid),
  so every core pixel is predicted from what a whole-image pass gives it."""
  start = max(0, (core.start - halo) // divisor * divisor)
  end = core.stop + halo
  end = n if end >= n else n - (n - end) // divisor * divisor
  return slice(start, end)


def predict_block(pred: predictor.Predictor, img: omezarr.ZarrImage, core: tuple[slice, ...],
                  options: PredictOptions, name: str) -> np.ndarray:
  """The denoised block `core` (slices of img.array) in data units, float32, img's axes."""
  region = tuple(_region(c, n, pred.halo, pred.divisor) if a in "ZYX" else c
                 for a, c, n in zip(img.axes, core, img.shape))
  data = np.asarray(img.array[region])
  array, spatial = to_canonical(data, img.axes)
  predictor.check_input(pred, name, array, spatial)
  out = np.stack([predictor.predict_image(pred, s.astype(np.float32), options) for s in array])
  inner = tuple(slice(core[i].start - region[i].start, core[i].stop - region[i].start)
                for i in (img.axes.index(a) for a in spatial))
  shape = tuple(c.stop - c.start for c in core)
  return from_canonical(out[(slice(None), *inner)], img.axes, shape)


def _plan(img: omezarr.ZarrImage, budget: int) -> list[dict]:
  """Per level: its shape, block shape, blocks per axis and the index of its first block in
  the BlockLog (level 0's blocks first, then level 1's, ...)."""
  plans, first = [], 0
  for array in img.levels():
    shape = tuple(int(n) for n in array.shape)
    block, counts = omezarr.block_grid(shape, img.axes, omezarr.write_chunks(array), budget)
    plans.append({"shape": list(shape), "block": list(block), "counts": counts,
                  "first": first})
    first += int(np.prod(counts))
  return plans


def _header(img: omezarr.ZarrImage, out_dtype: np.dtype, plans: list[dict]) -> dict:
  level0 = plans[0]
  header = {"shape": level0["shape"], "dtype": str(out_dtype),
            "chunks": list(img.write_chunks), "block": level0["block"],
            "blocks": sum(int(np.prod(p["counts"])) for p in plans)}
  if len(plans) > 1:  # the pyramid's levels; an output of level 0 only has no entry
    header["levels"] = [{k: p[k] for k in ("shape", "block")} for p in plans[1:]]
  return header


def _downsampled(above: Any, core: tuple[slice, ...], factors: list[int], method: str,
                 dtype: np.dtype) -> np.ndarray:
  """Block `core` of a level from the level above it (already written), in `dtype`."""
  region = tuple(slice(c.start * f, min(c.stop * f, n))
                 for c, f, n in zip(core, factors, above.shape))
  y = omezarr.downsample(np.asarray(above[region]), factors, method)
  y = y[tuple(slice(0, c.stop - c.start) for c in core)]
  if dtype.kind in "ui":
    info = np.iinfo(dtype)
    return np.clip(np.rint(y), info.min, info.max).astype(dtype)
  return y.astype(dtype)


def _complete(header: dict, done: set[int]) -> bool:
  blocks = header.get("blocks")
  return isinstance(blocks, int) and done >= set(range(blocks))


def finished(out_path: str) -> bool:
  """Whether out_path is an output whose every block is written."""
  try:
    header, done = omezarr.BlockLog(out_path).read()
  except N2VError:
    return False
  return _complete(header, done)


def denoise_image(pred: predictor.Predictor, in_path: str, out_path: str,
                  options: PredictOptions | None = None, preemption: Preemption | None = None,
                  name: str | None = None) -> jobs.Result:
  """One OME-Zarr image (or zarr array) to out_path, block by block; resumes an unfinished
  output of the same plan, skips a finished one (unless options.overwrite: then redone).
  preemption: an active Preemption; a signal stops after the current block (jobs.Stopped).
  name: the Result's (a plate's 'A/1/0'); messages name in_path."""
  options = options or PredictOptions()
  t0 = time.perf_counter()
  img = omezarr.open_image(in_path, options.axes)
  if 0 in img.shape:
    raise N2VError(f"{in_path}: empty image ({img.describe()})")
  spatial = "ZYX" if "Z" in img.axes else "YX"
  channels = img.shape[img.axes.index("C")] if "C" in img.axes else 1
  predictor.check_input(  # channels and axes before anything is written
      pred, in_path, np.zeros((1,) * len(spatial) + (channels,), np.float32), spatial,
      img.channel_names if options.check_channel_names else None)
  out_dtype = dtypes.output_dtype(img.dtype, options)
  plans = _plan(img, options.block_voxels)
  factors = omezarr.level_factors([tuple(p["shape"]) for p in plans])
  header = _header(img, out_dtype, plans)
  log = omezarr.BlockLog(out_path)
  if os.path.exists(out_path):
    if options.overwrite:
      omezarr.remove_output(out_path)
    else:
      try:
        old, done = log.read()
      except N2VError:
        raise ExistsError(f"{out_path} exists and is not an unfinished n2v_jax output; "
                          "pass --overwrite to replace it") from None
      if _complete(old, done):  # finished: skipped, as a TIFF output that exists
        return jobs.Result(name or in_path, "skipped", outputs=[out_path])
      if {k: old.get(k) for k in header} != header:
        raise N2VError(f"{out_path}: an unfinished output of another plan ({old}, now "
                       f"{header}); pass --overwrite to start again")
  extra = {"input": os.path.abspath(in_path), "tta": bool(options.tta), "dtype": options.dtype}
  if out_dtype.kind in "ui":
    extra.update(n2v_scale=float(options.int_scale), n2v_offset=float(options.int_offset))
  omezarr.create_image(out_path, img, out_dtype, extra, header)  # False: it was there
  _, done = log.read()
  started_here = not done
  if img.version:  # the output has the input's levels, at the same paths
    group = zarr.open_group(out_path, mode="r+")
    outs = [group[d["path"]] for d in img.multiscale["datasets"]]
  else:
    outs = [zarr.open_array(out_path, mode="r+")]
  notes: list[str] = []
  for level, plan in enumerate(plans):
    for b in range(int(np.prod(plan["counts"]))):
      index = plan["first"] + b
      if index in done:
        continue
      if preemption is not None and preemption.signum is not None:
        raise jobs.Stopped(preemption.signum, f"stopped after {len(done)} of "
                           f"{header['blocks']} block(s) of {out_path}")
      core = omezarr.block_slices(b, tuple(plan["shape"]), plan["block"], plan["counts"])
      if level == 0:
        try:
          y = predict_block(pred, img, core, options, in_path)
        except N2VError:  # the input itself (NaN pixels): a rerun would fail there again,
          if started_here:  # so an output this run began is not left behind half-made
            omezarr.remove_output(out_path)
          raise
        y, _, more = dtypes.to_output_dtype(y, img.dtype, options)
        notes += [f"block {b}: {m}" for m in more]
      else:  # the next level of the pyramid, from the denoised level above it
        y = _downsampled(outs[level - 1], core, factors[level - 1], img.downsampling,
                         out_dtype)
      outs[level][core] = y
      log.add(index)  # after the chunks are stored: a listed block is complete
      done.add(index)
  if len(notes) > MAX_NOTES:
    notes = notes[:MAX_NOTES] + [f"and {len(notes) - MAX_NOTES} more"]
  return jobs.Result(name or in_path, "done", outputs=[out_path], notes=notes,
                     seconds=time.perf_counter() - t0)


def plan_plate(input_path: str, output_path: str) -> list[jobs.Job]:
  """One job per field, named 'row/column/field' (its path in the plate)."""
  return [jobs.Job(f, [os.path.join(input_path, f)], [os.path.join(output_path, f)],
                   key=f.replace("/", "_")) for f in omezarr.plate_fields(input_path)]


def denoise_plate(pred: predictor.Predictor, input_path: str, output_path: str,
                  options: PredictOptions | None = None,
                  preemption: Preemption | None = None) -> jobs.Summary:
  """Every field of an OME-Zarr plate in options.shard into the same place of a new plate."""
  options = options or PredictOptions()
  t0 = time.perf_counter()
  jobs.check_not_input(input_path, output_path)
  fields = plan_plate(input_path, output_path)
  if not fields:
    raise N2VError(f"{input_path}: a plate without fields")
  omezarr.create_plate(output_path, input_path)
  run = lambda job: denoise_image(pred, job.inputs[0], job.outputs[0], options, preemption,
                                  name=job.name)
  return jobs.run_jobs(fields, [], run, lambda job: finished(job.outputs[0]), output_path,
                       options, preemption, started=t0, report_info=dtypes.report_info(
                           input_path, options), unit="field", container="plate")
