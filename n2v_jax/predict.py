"""Prediction: `python -m n2v_jax.predict --workdir DIR --input PATH --output PATH`.

A TIFF to a TIFF, or a folder (a plate) to a folder through n2v_jax.batch; an OME-Zarr
image (or zarr array) to an OME-Zarr image and an OME-Zarr HCS plate to a plate, block by
block, through n2v_jax.zarr_jobs. The Python
API of inference (a `Predictor`, tiled `predict_image`) lives in n2v_jax.inference and
is re-exported here, where scripts and notebooks have always found it.
"""

import contextlib
import os
import sys

from n2v_jax import batch, checkpoint, cluster, config_lib, loop, tiff_io, zarr_io, zarr_jobs
from n2v_jax.inference import (  # noqa: F401 (the API)
    DEFAULT_TILE, Predictor, load_predictor, predict_image)


def predict_file(pred: Predictor, in_path: str, out_path: str, axes: str | None = None,
                 tile: int = DEFAULT_TILE, tta: bool = False, overwrite: bool = False,
                 dtype: str = "float32", scale: float = 1.0, offset: float = 0.0) -> None:
  """One TIFF to one TIFF: the one-file case of the folder job (n2v_jax.batch)."""
  cluster.refuse_existing(out_path, overwrite)
  job = batch.Job(os.path.basename(in_path), [in_path], [out_path])
  batch.run_job(pred, job, axes=axes, tile=tile, tta=tta, overwrite=overwrite, dtype=dtype,
                scale=scale, offset=offset)


def workdir_grouping(workdir: str) -> tuple[str, tuple]:
  """(channel_pattern, channels) the model was trained with ('' when not grouped)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return "", ()
  data_cfg = config_lib.with_added_fields(checkpoint.read_json(path))["data"]
  return data_cfg["channel_pattern"] or "", tuple(data_cfg["channels"] or ())


def predict_path(workdir: str, input_path: str, output_path: str, axes: str | None = None,
                 tile: int = DEFAULT_TILE, tta: bool = False, overwrite: bool = False,
                 dtype: str = "float32", scale: float = 1.0, offset: float = 0.0,
                 shard: str | None = None, channel_pattern: str | None = None,
                 channels=None, progress: bool = False, summary_out: list | None = None,
                 preemption=None, blend: bool | None = None) -> list[str]:
  """A TIFF to a TIFF, or a folder to a folder (same file names); an OME-Zarr image or
  plate to the same (n2v_jax.zarr_jobs: an unfinished output is continued). Returns the
  outputs.

  A folder run (n2v_jax.batch) skips outputs that exist (unless overwrite), goes on past
  failing files and then raises a ValueError naming them; `summary_out` (a list) receives
  the batch.Summary. channel_pattern None: the one the model was trained with.
  preemption: an active loop.Preemption: a folder run stops after the current file, an
  OME-Zarr run after the current block (an image: batch.Stopped is raised).
  blend: the SURE blend with the input (inference.sure_blend), per image (per block of an
  OME-Zarr image); None: as the model was trained (config.predict.blend).
  """
  if os.path.abspath(input_path) == os.path.abspath(output_path):
    raise ValueError(f"--output {output_path} is the input; the input is never modified")
  if dtype not in batch.DTYPES:
    raise ValueError(f"--dtype {dtype!r}: expected one of {', '.join(batch.DTYPES)}")
  shard_tuple = batch.parse_shard(shard)
  if not os.path.exists(input_path):
    raise FileNotFoundError(f"{input_path}: no such file")
  if zarr_io.is_zarr(input_path):
    return _predict_zarr(workdir, input_path, output_path, axes, tile, tta, overwrite, dtype,
                         scale, offset, shard_tuple, progress, summary_out, preemption, blend)
  if os.path.isdir(input_path):
    if channel_pattern is None:
      channel_pattern, trained_channels = workdir_grouping(workdir)
      channels = channels or trained_channels
    tiff_io.list_images(input_path)  # a clear error before loading the model
  pred = load_predictor(workdir, blend)
  if not os.path.isdir(input_path):
    if shard_tuple[1] > 1:
      raise ValueError(f"--shard {shard} needs a folder as --input")
    predict_file(pred, input_path, output_path, axes, tile, tta, overwrite, dtype, scale, offset)
    return [output_path]
  summary = batch.denoise_folder(pred, input_path, output_path, axes=axes, tile=tile, tta=tta,
                                 overwrite=overwrite, shard=shard_tuple, dtype=dtype,
                                 scale=scale, offset=offset, pattern=channel_pattern,
                                 channels=channels, progress=progress, preemption=preemption)
  return _outputs(summary, summary_out)


def _predict_zarr(workdir, input_path, output_path, axes, tile, tta, overwrite, dtype, scale,
                  offset, shard_tuple, progress, summary_out, preemption, blend) -> list[str]:
  kind = zarr_io.kind(input_path)  # a clear error before loading the model
  if kind == "well":
    raise ValueError(f"{input_path}: a well of a plate; give the plate, or one field")
  if shard_tuple[1] > 1 and kind != "plate":
    raise ValueError(f"--shard {shard_tuple[0]}/{shard_tuple[1]} needs a folder or an "
                     "OME-Zarr plate as --input")
  if output_path.lower().endswith((".tif", ".tiff")):
    raise ValueError(f"--output {output_path}: an OME-Zarr input is written as OME-Zarr; "
                     "give an output ending in .zarr")
  pred = load_predictor(workdir, blend)
  if kind == "plate":
    summary = zarr_jobs.denoise_plate(pred, input_path, output_path, axes=axes, tile=tile,
                                      tta=tta, overwrite=overwrite, shard=shard_tuple,
                                      dtype=dtype, scale=scale, offset=offset,
                                      progress=progress, preemption=preemption)
    return _outputs(summary, summary_out)
  folder, base = os.path.split(os.path.abspath(output_path))
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder}: no such folder (for output {output_path})")
  with cluster.claim_job(folder, base) as holder:  # one writer per output image
    if holder:
      raise FileExistsError(f"{output_path} is being written by another process ({holder})")
    result = zarr_jobs.denoise_image(pred, input_path, output_path, axes=axes, tile=tile,
                                     tta=tta, overwrite=overwrite, dtype=dtype, scale=scale,
                                     offset=offset, preemption=preemption)
  if result.status == "skipped":
    raise FileExistsError(f"{output_path} exists (finished); pass --overwrite to replace it")
  return [output_path]


def _outputs(summary: batch.Summary, summary_out: list | None) -> list[str]:
  if summary_out is not None:
    summary_out.append(summary)
  if summary.failed:
    first = summary.failed[0]
    raise ValueError(f"{len(summary.failed)} of {len(summary.results)} job(s) failed "
                     f"(first: {first.name}: {first.reason}); see {summary.report_path}")
  return [o for r in summary.results for o in r.outputs]


def main(argv) -> None:
  del argv
  from absl import flags
  f = flags.FLAGS
  channels = [c for c in (f.channels or "").split(",") if c] or None
  summaries: list = []
  # On SIGTERM/SIGINT a folder stops after the current file, an OME-Zarr after the current
  # block (a zarr store is a folder too).
  folder = os.path.isdir(f.input)
  try:
    with loop.Preemption() if folder else contextlib.nullcontext() as preemption:
      outputs = predict_path(f.workdir, f.input, f.output, f.axes or None, f.tile, f.tta,
                             f.overwrite, f.dtype, f.int_scale, f.int_offset, f.shard,
                             f.channel_pattern, channels, f.progress, summaries, preemption,
                             {"auto": None, "on": True, "off": False}[f.blend])
  except batch.Stopped as e:  # an OME-Zarr image, part-way: what was written is complete
    import signal
    print(f"{signal.Signals(e.signum).name}: {e}, every block written is complete; run the "
          f"same command again to continue (exit status {loop.exit_status(e.signum)})",
          file=sys.stderr)
    sys.exit(loop.exit_status(e.signum))
  except (ValueError, OSError) as e:  # OSError: a full disk, ...
    if summaries:  # a folder run with failing files: they were listed as they happened
      summary = summaries[0]
      print(summary.line())
      for r in summary.failed:
        print(f"failed: {r.name}: {r.reason}")
      print(f"report: {summary.report_path}")
      if summary.stopped_by:
        cluster.report_plate_stop(summary, loop.exit_status(summary.stopped_by))
      print(f"error: {len(summary.failed)} job(s) failed; rerun to retry them "
            "(finished files are skipped)", file=sys.stderr)
      sys.exit(batch.EXIT_SOME_FAILED)
    print(f"error: {cluster.error_message(e)}", file=sys.stderr)
    sys.exit(1)
  if summaries:
    print(summaries[0].line())
    print(f"report: {summaries[0].report_path}")
    if summaries[0].stopped_by:
      cluster.report_plate_stop(summaries[0], loop.exit_status(summaries[0].stopped_by))
    return
  print(f"wrote {len(outputs)} file(s): {', '.join(outputs[:5])}{' ...' if len(outputs) > 5 else ''}")


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("workdir", None, "Trained workdir (model.json + checkpoints).")
  flags.DEFINE_string("input", None, "Noisy TIFF, folder of TIFFs, OME-Zarr image or plate, "
                      "or zarr array (with --axes).")
  flags.DEFINE_string("output", None, "Output TIFF, folder or OME-Zarr (.zarr).")
  flags.DEFINE_string("axes", "", "Axes of the input, e.g. CYX; default: from the file.")
  flags.DEFINE_integer("tile", DEFAULT_TILE, "Largest tile edge in pixels; 0 = whole image.")
  flags.DEFINE_bool("tta", False, "8-fold test-time augmentation.")
  flags.DEFINE_enum("blend", "auto", ["auto", "on", "off"], "Mix the noisy input back in "
                    "with the SURE-optimal weight per image (one more pass; for Gaussian "
                    "noise); auto: as the model was trained (config.predict.blend).")
  flags.DEFINE_bool("overwrite", False, "Replace existing outputs (folders: recompute "
                    "them; without it finished outputs are skipped).")
  flags.DEFINE_string("shard", "", "i/N: denoise only shard i (0-based) of N of a folder or "
                      "plate.")
  flags.DEFINE_enum("dtype", "float32", ["float32", "input"], "Output dtype: float32, or "
                    "the input's (integers: round((x - int_offset) / int_scale), clipped).")
  flags.DEFINE_float("int_scale", 1.0, "--dtype input: data units per integer step.")
  flags.DEFINE_float("int_offset", 0.0, "--dtype input: data value stored as 0.")
  flags.DEFINE_string("channel_pattern", None, "Group single-channel files into fields: "
                      "'phenix' or a regex with (?P<channel>...); default: as in training.")
  flags.DEFINE_string("channels", "", "Channel ids in model order, e.g. 5,3,2; default: as "
                      "in training.")
  flags.DEFINE_bool("progress", True, "Progress bar for folders (stderr).")
  flags.mark_flags_as_required(["workdir", "input", "output"])
  from n2v_jax import cli
  cli.run(main)
