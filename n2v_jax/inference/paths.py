"""Prediction by path, whatever the input is: a TIFF to a TIFF, a folder (of TIFFs or of
grouped single-channel files) to a folder, an OME-Zarr image (or zarr array) to an
OME-Zarr image and an OME-Zarr HCS plate to a plate. What `python -m n2v_jax.predict` runs.
"""

import os

from n2v_jax.errors import ExistsError, N2VError, NotFoundError
from n2v_jax.inference import folders, jobs, omezarr_jobs, predictor
from n2v_jax.inference.options import PredictOptions
from n2v_jax.io import files, locks, omezarr, tiff
from n2v_jax.preemption import Preemption
from n2v_jax.workdir import saved_config


def predict_file(pred: predictor.Predictor, in_path: str, out_path: str,
                 options: PredictOptions | None = None) -> jobs.Result:
  """One TIFF to one TIFF: the one-file case of the folder job."""
  options = options or PredictOptions()
  files.refuse_existing(out_path, options.overwrite)
  files.check_output_folder(out_path)  # before the work, not after it
  return folders.run_job(pred, jobs.Job(os.path.basename(in_path), [in_path], [out_path]),
                         options)


def trained_grouping(workdir: str) -> tuple[str, tuple]:
  """(channel_pattern, channels) the model was trained with ('' when not grouped)."""
  if not saved_config.exists(workdir):
    return "", ()
  data_cfg = saved_config.read(workdir)["data"]
  return data_cfg["channel_pattern"] or "", tuple(data_cfg["channels"] or ())


def predict_path(workdir: str, input_path: str, output_path: str,
                 options: PredictOptions | None = None,
                 preemption: Preemption | None = None) -> jobs.Summary:
  """Denoises input_path into output_path with the model of `workdir`; returns the summary
  of the jobs (one for a file or an OME-Zarr image; `.outputs` lists what was written).

  A folder or plate run skips outputs that exist (unless options.overwrite), goes on past
  failing files and then raises `jobs.JobsFailed` (its `.summary` names them); an unfinished
  OME-Zarr output is continued. options.channel_pattern None: the one the model was trained
  with. preemption: an active Preemption: a folder or plate stops after the current file
  or field (`Summary.stopped_by`), an OME-Zarr image after the current block (raises
  `jobs.Stopped`)."""
  options = options or PredictOptions()
  jobs.check_not_input(input_path, output_path)
  if not os.path.exists(input_path):
    raise NotFoundError(f"{input_path}: no such file")
  if omezarr.is_zarr(input_path):
    summary = _predict_zarr(workdir, input_path, output_path, options, preemption)
  elif os.path.isdir(input_path):
    if options.channel_pattern is None:
      pattern, trained_channels = trained_grouping(workdir)
      options = options.replace(channel_pattern=pattern,
                                channels=options.channels or trained_channels or None)
    tiff.list_images(input_path)  # a clear error before loading the model
    summary = folders.denoise_folder(predictor.load_predictor(workdir), input_path,
                                     output_path, options, preemption)
  else:
    _refuse_shard(options, "a folder")
    pred = predictor.load_predictor(workdir)
    summary = _one(predict_file(pred, input_path, output_path, options), "file")
  if summary.failed:
    raise jobs.JobsFailed(summary)
  return summary


def _one(result: jobs.Result, container: str) -> jobs.Summary:
  return jobs.Summary([result], (0, 1), 1, result.seconds, container=container)


def _refuse_shard(options: PredictOptions, what: str) -> None:
  i, n = options.shard
  if n > 1:
    raise N2VError(f"--shard {i}/{n} needs {what} as --input")


def _predict_zarr(workdir: str, input_path: str, output_path: str, options: PredictOptions,
                  preemption: Preemption | None) -> jobs.Summary:
  kind = omezarr.kind(input_path)  # a clear error before loading the model
  if kind == "well":
    raise N2VError(f"{input_path}: a well of a plate; give the plate, or one field")
  if kind != "plate":
    _refuse_shard(options, "a folder or an OME-Zarr plate")
  if output_path.lower().endswith((".tif", ".tiff")):
    raise N2VError(f"--output {output_path}: an OME-Zarr input is written as OME-Zarr; "
                   "give an output ending in .zarr")
  pred = predictor.load_predictor(workdir)
  if kind == "plate":
    return omezarr_jobs.denoise_plate(pred, input_path, output_path, options, preemption)
  folder, base = os.path.split(os.path.abspath(output_path))
  if not os.path.isdir(folder):
    raise NotFoundError(f"{folder}: no such folder (for output {output_path})")
  with locks.claim_job(folder, base) as holder:  # one writer per output image
    if holder:
      raise ExistsError(f"{output_path} is being written by another process ({holder})")
    result = omezarr_jobs.denoise_image(pred, input_path, output_path, options, preemption)
  if result.status == "skipped":
    raise ExistsError(f"{output_path} exists (finished); pass --overwrite to replace it")
  return _one(result, "image")
