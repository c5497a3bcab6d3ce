"""Denoising a folder of TIFFs, or of single-channel files grouped into fields, into a
folder of the same file names (the jobs of `jobs.run_jobs`).

    python -m n2v_jax.predict --workdir DIR --input FOLDER --output FOLDER [--shard i/N]

Each input is a job: one TIFF, or (with a channel pattern) one field of single-channel
files, written back as the same single-channel file names. Outputs keep the input's
shape, axes and metadata; see `jobs` for skipping, sharding, claims and failures.
"""

from __future__ import annotations

import os
import time

import numpy as np

from n2v_jax.errors import N2VError
from n2v_jax.inference import dtypes, jobs, predictor
from n2v_jax.inference.jobs import Job, Result, Summary
from n2v_jax.inference.options import PredictOptions
from n2v_jax.io import fields as fields_lib, tiff
from n2v_jax.io.axes import from_canonical, to_canonical
from n2v_jax.preemption import Preemption


def plan(input_dir: str, output_dir: str, pattern: str = "", channels=None,
         ) -> tuple[list[Job], list[Result]]:
  """Jobs for a folder, plus failures found while grouping (incomplete fields)."""
  paths = tiff.list_images(input_dir)
  if not pattern:
    return [Job(os.path.basename(p), [p], [os.path.join(output_dir, os.path.basename(p))])
            for p in paths], []
  found, unmatched, incomplete = fields_lib.group_fields(paths, pattern, channels, strict=False)
  if not found and not incomplete:
    raise N2VError(f"{input_dir}: no file name matches the channel pattern {pattern!r} "
                   f"(e.g. {os.path.basename(paths[0])})")
  planned = [Job(f.key, f.paths, [os.path.join(output_dir, os.path.basename(p)) for p in f.paths],
                 f) for f in found]
  failed = [Result(key, "failed", reason) for key, reason in incomplete]
  failed += [Result(os.path.basename(p), "failed",
                    f"file name does not match the channel pattern {pattern!r}")
             for p in unmatched]
  return planned, failed


def _input_notes(array: np.ndarray) -> list[str]:
  """Things worth knowing about an input that still get denoised."""
  notes = []
  if array.dtype.kind in "ui":
    top = np.iinfo(array.dtype).max
    n = int((array == top).sum())
    if n:
      notes.append(f"{n} saturated pixel(s) (= {top})")
  flat = array.reshape(-1, array.shape[-1])
  const = [c for c in range(flat.shape[1]) if flat[:, c].min() == flat[:, c].max()]
  if const:
    notes.append(f"constant channel(s) {const}")
  return notes


def denoise_array(pred: predictor.Predictor, name: str, data: np.ndarray, axes: str,
                  options: PredictOptions, channel_names: list[str] | None = None,
                  ) -> tuple[np.ndarray, list[str]]:
  """An image of any axes denoised sample by sample, in its own layout (float32), and the
  notes worth reporting about it. channel_names: the file's, checked against the model's."""
  array, spatial_axes = to_canonical(data, axes)
  if min(array.shape[1:-1], default=0) < 1 or array.shape[0] < 1:
    raise N2VError(f"{name}: empty image (shape {data.shape}, axes {axes})")
  predictor.check_input(pred, name, array, spatial_axes,
                        channel_names if options.check_channel_names else None)
  notes = _input_notes(array)
  out = np.stack([predictor.predict_image(pred, s.astype(np.float32), options) for s in array])
  return from_canonical(out, axes, data.shape), notes


def run_job(pred: predictor.Predictor, job: Job, options: PredictOptions) -> Result:
  """One TIFF (or field of single-channel files) to its outputs."""
  t0 = time.perf_counter()
  todo = [o for o in job.outputs if options.overwrite or not os.path.exists(o)]
  if not todo:
    return Result(job.name, "skipped", outputs=list(job.outputs))
  if job.field is None:
    img = tiff.read_image(job.inputs[0], options.axes)
    out, notes = denoise_array(pred, job.inputs[0], img.data, img.axes, options,
                               img.channel_names)
    out, meta, more = dtypes.to_output_dtype(out, img.data.dtype, options)
    tiff.write_image(job.outputs[0], out, img.axes, like=img, overwrite=options.overwrite,
                     extra_metadata=meta)
  else:
    data, field_axes, images = fields_lib.read_field(job.field, options.axes)
    name = os.path.join(os.path.dirname(job.inputs[0]), job.name)
    out, notes = denoise_array(pred, name, data, field_axes, options)
    out, meta, more = dtypes.to_output_dtype(out, data.dtype, options)
    for c, (img, path) in enumerate(zip(images, job.outputs)):
      if path not in todo:
        continue
      plane = out[c].reshape(img.data.shape)  # back to the file's own layout (size-1 C kept)
      tiff.write_image(path, plane, img.axes, like=img, overwrite=options.overwrite,
                       extra_metadata=meta)
  return Result(job.name, "done", outputs=list(job.outputs), notes=notes + more,
                seconds=time.perf_counter() - t0)


def denoise_folder(pred: predictor.Predictor, input_dir: str, output_dir: str,
                   options: PredictOptions | None = None,
                   preemption: Preemption | None = None) -> Summary:
  """Denoise every TIFF (or, with options.channel_pattern, every field) of `input_dir` in
  options.shard into `output_dir`."""
  options = options or PredictOptions()
  t0 = time.perf_counter()
  jobs.check_not_input(input_dir, output_dir)
  job_list, failed = plan(input_dir, output_dir, options.channel_pattern or "", options.channels)
  os.makedirs(output_dir, exist_ok=True)
  finished = lambda job: all(os.path.exists(o) for o in job.outputs)
  return jobs.run_jobs(job_list, failed, lambda job: run_job(pred, job, options), finished,
                       output_dir, options, preemption, started=t0,
                       report_info=dtypes.report_info(input_dir, options))
