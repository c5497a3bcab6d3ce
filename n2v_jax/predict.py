"""Prediction: `python -m n2v_jax.predict --workdir DIR --input PATH --output PATH` (also
`n2v-predict`).

A TIFF to a TIFF, a folder (or plate of single-channel files) to a folder, an OME-Zarr
image (or zarr array) to an OME-Zarr image, an OME-Zarr HCS plate to a plate
(`inference.paths.predict_path`). A folder or plate with failing files exits 2; on
SIGTERM/SIGINT a folder or plate stops after the current file, an OME-Zarr image after the
current block (exit 128 + signal); rerun the same command to continue.
"""

import contextlib
import os
import sys

from absl import flags

from n2v_jax import cli
from n2v_jax.errors import N2VError
from n2v_jax.inference import jobs, options as options_lib, paths
from n2v_jax.preemption import Preemption


def _options(f) -> options_lib.PredictOptions:
  return options_lib.PredictOptions(
      tile=f.tile, tta=f.tta, blend={"auto": None, "on": True, "off": False}[f.blend],
      axes=f.axes or None, dtype=f.dtype, int_scale=f.int_scale, int_offset=f.int_offset,
      overwrite=f.overwrite, shard=f.shard, channel_pattern=f.channel_pattern,
      channels=f.channels or None, check_channel_names=f.check_channel_names,
      progress=f.progress)


def _main(argv) -> None:
  del argv
  f = flags.FLAGS
  # On SIGTERM/SIGINT a folder stops after the current file, an OME-Zarr after the current
  # block (a zarr store is a folder too).
  folder = os.path.isdir(f.input)
  try:
    with Preemption() if folder else contextlib.nullcontext() as preemption:
      summary = paths.predict_path(f.workdir, f.input, f.output, _options(f), preemption)
  except jobs.Stopped as e:  # an OME-Zarr image, part-way: what was written is complete
    cli.stopped(e.signum, f"{e}, every block written is complete")
  except jobs.JobsFailed as e:  # a folder or plate: the failures were listed as they happened
    _report(e.summary, failed=True)
    first = e.summary.failed[0]
    print(f"error: {os.path.join(f.input, first.name)}: {first.reason} "
          f"({len(e.summary.failed)} of {len(e.summary.results)} job(s) failed; rerun to retry "
          "them, finished files are skipped)", file=sys.stderr)
    sys.exit(cli.EXIT_SOME_FAILED)
  except (N2VError, OSError) as e:
    cli.fail(e)
  if summary.container in ("folder", "plate"):
    _report(summary)
    return
  outputs = summary.outputs
  print(f"wrote {len(outputs)} file(s): {', '.join(outputs[:5])}"
        f"{' ...' if len(outputs) > 5 else ''}")


def _report(summary: jobs.Summary, failed: bool = False) -> None:
  """A folder's or plate's summary line, its failures, its report; a stop by a signal."""
  print(summary.line())
  for r in summary.failed if failed else ():
    print(f"failed: {r.name}: {r.reason}")
  print(f"report: {summary.report_path}")
  if summary.stopped_by:
    cli.stopped(summary.stopped_by, f"stopped after {len(summary.results)} job(s), every "
                "output written is complete")


def main() -> None:
  flags.DEFINE_string("workdir", None, "Trained workdir (model.json + checkpoints).")
  flags.DEFINE_string("input", None, "Noisy TIFF, folder of TIFFs, OME-Zarr image or plate, "
                      "or zarr array (with --axes).")
  flags.DEFINE_string("output", None, "Output TIFF, folder or OME-Zarr (.zarr).")
  flags.DEFINE_string("axes", "", "Axes of the input, e.g. CYX; default: from the file.")
  flags.DEFINE_integer("tile", options_lib.DEFAULT_TILE,
                       "Largest tile edge in pixels; 0 = whole image.")
  flags.DEFINE_bool("tta", False, "8-fold test-time augmentation.")
  flags.DEFINE_enum("blend", "auto", ["auto", "on", "off"], "Mix the noisy input back in "
                    "with the SURE-optimal weight per image (one more pass; for Gaussian "
                    "noise); auto: as the model was trained (config.predict.blend).")
  flags.DEFINE_bool("overwrite", False, "Replace existing outputs (folders: recompute "
                    "them; without it finished outputs are skipped).")
  flags.DEFINE_string("shard", "", "i/N: denoise only shard i (0-based) of N of a folder or "
                      "plate.")
  flags.DEFINE_enum("dtype", "float32", list(options_lib.OUTPUT_DTYPES), "Output dtype: "
                    "float32, or the input's (integers: round((x - int_offset) / int_scale), "
                    "clipped).")
  flags.DEFINE_float("int_scale", 1.0, "--dtype input: data units per integer step.")
  flags.DEFINE_float("int_offset", 0.0, "--dtype input: data value stored as 0.")
  flags.DEFINE_string("channel_pattern", None, "Group single-channel files into fields: "
                      "'phenix' or a regex with (?P<channel>...); default: as in training.")
  flags.DEFINE_string("channels", "", "Channel ids in model order, e.g. 5,3,2; default: as "
                      "in training.")
  flags.DEFINE_bool("check_channel_names", True, "Refuse an input whose channel names "
                    "(ImageJ labels, OME, omero) differ from those the model was trained on.")
  flags.DEFINE_bool("progress", True, "Progress bar for folders (stderr).")
  flags.mark_flags_as_required(["workdir", "input", "output"])
  cli.run(_main)


if __name__ == "__main__":
  main()
