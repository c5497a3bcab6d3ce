"""Batch denoising of a folder (a plate): skip finished files, shard, report failures.

    python -m n2v_jax.predict --workdir DIR --input FOLDER --output FOLDER [--shard i/N]

* Each input is a job: one TIFF, or (with a channel pattern) one field of
  single-channel files, written back as the same single-channel file names.
* Outputs are written atomically, so an output that exists is complete: it is skipped
  (reported as skipped) unless `overwrite`; a crashed run resumes where it stopped.
* `--shard i/N` (0 <= i < N) keeps the jobs whose name hashes (CRC-32 of the file name
  or field key) to i modulo N: the N shards never overlap and together cover every job,
  whatever order or machine lists the folder.
* A job that fails (unreadable, wrong channel count, wrong spatial axes, NaN, ...) is
  recorded with its name and reason; the others go on. A JSON report is written to the
  output folder and `Summary.failed` is non-empty then.
* A write error about the output folder (full disk or quota, read-only, no permission:
  `cluster.stops_plate`) stops the plate instead: every following job would fail the same
  way. The report is written (if it can be) and a `cluster.WriteError` names the file;
  nothing partial is left under an output's name (writes are atomic), so once space is
  freed the same command continues.
* Several processes on one output folder (without `--shard`) never write the same output
  at once: a job is claimed with a hidden `.<name>.lock` file (an flock, dropped if its
  process dies; the file is removed when the job ends); a job another live process holds
  is skipped and reported as in progress there.
* `preemption` (an active `loop.Preemption`): after SIGTERM/SIGINT the run stops after the
  current job and `Summary.stopped_by` holds the signal.
* Output dtype: 'float32' (default) or 'input': the input's dtype. For integer inputs
  the stored value is `round((denoised - offset) / scale)` clipped to the dtype's range
  (default scale 1, offset 0: the same intensity units as the input), and
  `denoised ~= stored * scale + offset`; scale and offset are written to the file
  (`n2v_scale`, `n2v_offset`, and for ImageJ files the calibration `c0`/`c1`), and
  `read_denoised` applies them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import zlib
from typing import Any, Callable

import numpy as np
import tifffile

from n2v_jax import cluster, fields as fields_lib, inference, tiff_io

DTYPES = ("float32", "input")
EXIT_SOME_FAILED = 2  # CLI exit status when some files of a folder failed (1: nothing ran)


@dataclasses.dataclass
class Job:
  name: str  # file name, or field key for grouped channels, or a plate's 'A/1/0'
  inputs: list[str]
  outputs: list[str]
  field: fields_lib.Field | None = None
  key: str = ""  # for the shard and the claim file when `name` has '/' (a plate's field)

  @property
  def shard_key(self) -> str:
    return self.key or self.name


class Stopped(Exception):
  """A job stopped part-way by a signal (an active loop.Preemption): what it wrote is
  complete and the same command continues it."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum


@dataclasses.dataclass
class Result:
  name: str
  status: str  # 'done', 'skipped' or 'failed'
  reason: str = ""
  outputs: list[str] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)
  seconds: float = 0.0


@dataclasses.dataclass
class Summary:
  results: list[Result]
  shard: tuple[int, int]
  total_jobs: int  # in the whole folder, before sharding
  seconds: float
  report_path: str = ""
  stopped_by: int = 0  # the signal that stopped the run after a job (0: it ran to the end)
  container: str = "folder"  # what the jobs came from ('plate': an OME-Zarr plate's fields)

  def of(self, status: str) -> list[Result]:
    return [r for r in self.results if r.status == status]

  @property
  def failed(self) -> list[Result]:
    return self.of("failed")

  def line(self) -> str:
    i, n = self.shard
    where = f" in shard {i}/{n} ({self.total_jobs} in the {self.container})" if n > 1 else ""
    noted = sum(bool(r.notes) for r in self.results)
    busy = sum(bool(r.reason) for r in self.of("skipped"))  # claimed by another process
    return (f"denoised {len(self.of('done'))}, skipped {len(self.of('skipped')) - busy} "
            f"(already done){f', {busy} in progress elsewhere' if busy else ''}, failed "
            f"{len(self.failed)} of {len(self.results)} job(s){where} in "
            f"{self.seconds:.1f} s" + (f"; {noted} with notes" if noted else ""))


def parse_shard(text: str | None) -> tuple[int, int]:
  if not text:
    return 0, 1
  try:
    i, n = (int(v) for v in str(text).split("/"))
  except ValueError:
    raise ValueError(f"--shard {text!r}: expected i/N with integers, e.g. 0/4") from None
  if n < 1 or not 0 <= i < n:
    raise ValueError(f"--shard {text!r}: expected 0 <= i < N (shards are numbered from 0)")
  return i, n


def shard_of(name: str, n: int) -> int:
  return zlib.crc32(os.path.basename(name).encode("utf-8")) % n


def plan(input_dir: str, output_dir: str, pattern: str = "", channels=None,
         ) -> tuple[list[Job], list[Result]]:
  """Jobs for a folder, plus failures found while grouping (incomplete fields)."""
  paths = tiff_io.list_images(input_dir)
  if not pattern:
    return [Job(os.path.basename(p), [p], [os.path.join(output_dir, os.path.basename(p))])
            for p in paths], []
  found, unmatched, incomplete = fields_lib.group_fields(paths, pattern, channels, strict=False)
  if not found and not incomplete:
    raise ValueError(f"{input_dir}: no file name matches the channel pattern {pattern!r} "
                     f"(e.g. {os.path.basename(paths[0])})")
  jobs = [Job(f.key, f.paths, [os.path.join(output_dir, os.path.basename(p)) for p in f.paths], f)
          for f in found]
  failed = [Result(key, "failed", reason) for key, reason in incomplete]
  failed += [Result(os.path.basename(p), "failed",
                    f"file name does not match the channel pattern {pattern!r}") for p in unmatched]
  return jobs, failed


def to_output_dtype(denoised: np.ndarray, in_dtype: np.dtype, dtype: str, scale: float = 1.0,
                    offset: float = 0.0) -> tuple[np.ndarray, dict, list[str]]:
  """(array to write, extra metadata, notes) for `dtype` in DTYPES."""
  if dtype not in DTYPES:
    raise ValueError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
  in_dtype = np.dtype(in_dtype)
  if dtype == "float32":
    return denoised.astype(np.float32), {}, []
  if in_dtype.kind == "f":
    return denoised.astype(in_dtype), {}, []
  if in_dtype.kind not in "ui":
    raise ValueError(f"input dtype {in_dtype} cannot be written back; use --dtype float32")
  if not scale > 0:
    raise ValueError(f"--int_scale {scale}: expected > 0")
  info = np.iinfo(in_dtype)
  q = np.rint((denoised.astype(np.float64) - offset) / scale)
  low, high = int((q < info.min).sum()), int((q > info.max).sum())
  notes = []
  if low or high:
    notes.append(f"{low + high} pixel(s) clipped to the {in_dtype} range "
                 f"({low} below {info.min}, {high} above {info.max})")
  meta = {"n2v_scale": float(scale), "n2v_offset": float(offset)}
  if scale != 1.0 or offset != 0.0:  # ImageJ calibration: value = c0 + c1 * stored
    meta.update({"cf": 0, "c0": float(offset), "c1": float(scale), "vunit": "denoised"})
  return np.clip(q, info.min, info.max).astype(in_dtype), meta, notes


def read_denoised(path: str) -> np.ndarray:
  """An output of `denoise_folder` as float32 data units (undoes the integer scaling)."""
  with tifffile.TiffFile(path) as tif:
    data = tif.asarray()
    meta = dict(tif.imagej_metadata or {})
    if tif.is_shaped and tif.shaped_metadata:
      meta.update(tif.shaped_metadata[0])
  scale, offset = float(meta.get("n2v_scale", 1.0)), float(meta.get("n2v_offset", 0.0))
  return (data.astype(np.float64) * scale + offset).astype(np.float32)


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


def _denoise_array(pred, name: str, data: np.ndarray, axes: str, tile: int, tta: bool):
  array, spatial_axes = tiff_io.to_canonical(data, axes)
  if min(array.shape[1:-1], default=0) < 1 or array.shape[0] < 1:
    raise ValueError(f"{name}: empty image (shape {data.shape}, axes {axes})")
  inference.check_input(pred, name, array, spatial_axes)
  notes = _input_notes(array)
  out = np.stack([inference.predict_image(pred, s.astype(np.float32), tile, tta) for s in array])
  return tiff_io.from_canonical(out, axes, data.shape), notes


def run_job(pred, job: Job, *, axes: str | None, tile: int, tta: bool, overwrite: bool,
            dtype: str, scale: float, offset: float) -> Result:
  t0 = time.perf_counter()
  todo = [o for o in job.outputs if overwrite or not os.path.exists(o)]
  if not todo:
    return Result(job.name, "skipped", outputs=list(job.outputs))
  if job.field is None:
    img = tiff_io.read_image(job.inputs[0], axes)
    out, notes = _denoise_array(pred, job.inputs[0], img.data, img.axes, tile, tta)
    out, meta, more = to_output_dtype(out, img.data.dtype, dtype, scale, offset)
    tiff_io.write_image(job.outputs[0], out, img.axes, like=img, overwrite=overwrite,
                        extra_metadata=meta)
  else:
    data, field_axes, images = fields_lib.read_field(job.field, axes)
    name = os.path.join(os.path.dirname(job.inputs[0]), job.name)
    out, notes = _denoise_array(pred, name, data, field_axes, tile, tta)
    out, meta, more = to_output_dtype(out, data.dtype, dtype, scale, offset)
    for c, (img, path) in enumerate(zip(images, job.outputs)):
      if path not in todo:
        continue
      plane = out[c].reshape(img.data.shape)  # back to the file's own layout (size-1 C kept)
      tiff_io.write_image(path, plane, img.axes, like=img, overwrite=overwrite,
                          extra_metadata=meta)
  return Result(job.name, "done", outputs=list(job.outputs), notes=notes + more,
                seconds=time.perf_counter() - t0)


def _reason(exc: BaseException, job: Job) -> str:
  text = str(exc) or type(exc).__name__
  if not isinstance(exc, (ValueError, FileNotFoundError, FileExistsError)):
    text = f"{type(exc).__name__}: {text}"
  for p in job.inputs:  # messages usually start with the path: keep it short
    if text.startswith(p + ": "):
      return text[len(p) + 2:]
  return text


def denoise_folder(pred, input_dir: str, output_dir: str, *, axes: str | None = None,
                   tile: int = inference.DEFAULT_TILE, tta: bool = False, overwrite: bool = False,
                   shard: str | tuple[int, int] | None = None, dtype: str = "float32",
                   scale: float = 1.0, offset: float = 0.0, pattern: str = "",
                   channels=None, progress: bool = True, report: bool = True,
                   preemption=None) -> Summary:
  """Denoise every TIFF (or field) of `input_dir` in this shard into `output_dir`."""
  t0 = time.perf_counter()
  if os.path.abspath(input_dir) == os.path.abspath(output_dir):
    raise ValueError(f"--output {output_dir} is the input folder; the input is never modified")
  if dtype not in DTYPES:
    raise ValueError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
  i, n = shard if isinstance(shard, tuple) else parse_shard(shard)
  if not 0 <= i < n:
    raise ValueError(f"shard {i}/{n}: expected 0 <= i < N")
  jobs, failed = plan(input_dir, output_dir, pattern, channels)
  os.makedirs(output_dir, exist_ok=True)
  run = lambda job: run_job(pred, job, axes=axes, tile=tile, tta=tta, overwrite=overwrite,
                            dtype=dtype, scale=scale, offset=offset)
  finished = lambda job: all(os.path.exists(o) for o in job.outputs)
  return run_jobs(jobs, failed, run, finished, output_dir, shard=(i, n), overwrite=overwrite,
                  progress=progress, report=report, preemption=preemption, started=t0,
                  report_info={"input": os.path.abspath(input_dir), "dtype": dtype,
                               "int_scale": scale, "int_offset": offset})


def run_jobs(jobs: list[Job], failed: list[Result], run: Callable[[Job], Result],
             finished: Callable[[Job], bool], output_dir: str, *, shard: tuple[int, int],
             overwrite: bool, progress: bool, report: bool, preemption, started: float,
             report_info: dict, unit: str = "file", container: str = "folder") -> Summary:
  """The loop of a folder or plate run: the jobs of this shard, each claimed and run (or
  skipped when `finished`), failures recorded, a stop on a signal or a write error, the
  report. `failed`: jobs that failed before running (e.g. incomplete fields)."""
  i, n = shard
  total = len(jobs) + len(failed)
  jobs = [j for j in jobs if shard_of(j.shard_key, n) == i]
  failed = [r for r in failed if shard_of(r.name, n) == i]
  results = list(failed)
  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=len(jobs), unit=unit, dynamic_ncols=True, file=sys.stderr)
  stop, stopped_by = None, 0  # a write error that every later job would meet; a signal
  for job in jobs:
    if preemption is not None and preemption.signum is not None:
      stopped_by = preemption.signum
      break  # after a whole job: every output written is complete
    needed = overwrite or not finished(job)
    with cluster.claim_job(output_dir, job.shard_key, needed) as holder:
      try:
        result = (Result(job.name, "skipped", f"in progress in another process ({holder})")
                  if holder else run(job))
      except Stopped as exc:  # part-way through a job: what it wrote is complete
        stopped_by = exc.signum
        break
      except Exception as exc:  # one bad file must not stop a plate
        result = Result(job.name, "failed", _reason(exc, job))
        stop = exc if cluster.stops_plate(exc) else None
    results.append(result)
    if bar is not None:
      bar.update(1)
      bar.set_postfix(failed=len([r for r in results if r.status == "failed"]), refresh=False)
    if result.status == "failed" and stop is None:
      msg = f"failed: {job.name}: {result.reason}"
      (bar.write(msg, file=sys.stderr) if bar is not None else print(msg, file=sys.stderr))
    if stop is not None:
      break
  if bar is not None:
    bar.close()
  summary = Summary(results, (i, n), total, time.perf_counter() - started,
                    stopped_by=stopped_by, container=container)
  if report:
    name = "n2v_batch_report.json" if n == 1 else f"n2v_batch_report_shard{i}of{n}.json"
    summary.report_path = os.path.join(output_dir, name)
    try:
      cluster.write_json_atomic(summary.report_path, _report_dict(summary, report_info))
    except OSError:
      if stop is None:
        raise
  if stop is not None:
    ran = len(results) - len(failed)
    raise cluster.WriteError(getattr(stop, "filename", None) or output_dir, stop, hint=(
        f"stopped the plate after {ran} of {len(jobs)} job(s); free space (or fix the "
        "folder) and rerun: finished files are skipped"))
  return summary


def _report_dict(summary: Summary, info: dict) -> dict[str, Any]:
  return {
      **info, "shard": list(summary.shard),
      "total_jobs_in_folder": summary.total_jobs, "seconds": summary.seconds,
      "counts": {s: len(summary.of(s)) for s in ("done", "skipped", "failed")},
      "results": [dataclasses.asdict(r) for r in summary.results],
  }
