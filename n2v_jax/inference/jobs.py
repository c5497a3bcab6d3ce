"""The loop of a folder or plate run, shared by TIFF folders and OME-Zarr plates.

* Each input is a job (a TIFF, a field of single-channel files, a plate's field).
* Outputs are written atomically, so an output that exists is complete: it is skipped
  (reported as skipped) unless `overwrite`; a crashed run resumes where it stopped.
* `--shard i/N` (0 <= i < N) keeps the jobs whose name hashes (CRC-32 of the file name
  or field key) to i modulo N: the N shards never overlap and together cover every job,
  whatever order or machine lists the folder.
* A job that fails (unreadable, wrong channel count, wrong spatial axes, NaN, ...) is
  recorded with its name and reason; the others go on. A JSON report is written to the
  output folder and `Summary.failed` is non-empty then.
* A write error about the output folder (full disk or quota, read-only, no permission:
  `files.stops_plate`) stops the plate instead: every following job would fail the same
  way. The report is written (if it can be) and a `WriteError` names the file; nothing
  partial is left under an output's name, so once space is freed the same command
  continues.
* Several processes on one output folder (without `--shard`) never write the same output
  at once: a job is claimed with a hidden `.<name>.lock` file (`locks.claim_job`); a job
  another live process holds is skipped and reported as in progress there.
* `preemption` (an active `Preemption`): after SIGTERM/SIGINT the run stops after the
  current job and `Summary.stopped_by` holds the signal.
"""

from __future__ import annotations

import dataclasses
import os
import time
import zlib
from typing import Any, Callable

from n2v_jax import reporter
from n2v_jax.errors import N2VError, WriteError
from n2v_jax.inference.options import PredictOptions
from n2v_jax.io import fields as fields_lib, files, locks
from n2v_jax.preemption import Preemption


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
  """A job stopped part-way by a signal (an active Preemption): what it wrote is
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

  @property
  def outputs(self) -> list[str]:
    return [o for r in self.results for o in r.outputs]

  def line(self) -> str:
    i, n = self.shard
    where = f" in shard {i}/{n} ({self.total_jobs} in the {self.container})" if n > 1 else ""
    noted = sum(bool(r.notes) for r in self.results)
    busy = sum(bool(r.reason) for r in self.of("skipped"))  # claimed by another process
    return (f"denoised {len(self.of('done'))}, skipped {len(self.of('skipped')) - busy} "
            f"(already done){f', {busy} in progress elsewhere' if busy else ''}, failed "
            f"{len(self.failed)} of {len(self.results)} job(s){where} in "
            f"{self.seconds:.1f} s" + (f"; {noted} with notes" if noted else ""))


class JobsFailed(N2VError):
  """Some jobs of a folder or plate failed (the others were done); `.summary` lists them."""

  def __init__(self, summary: Summary):
    first = summary.failed[0]
    super().__init__(f"{len(summary.failed)} of {len(summary.results)} job(s) failed "
                     f"(first: {first.name}: {first.reason}); see {summary.report_path}")
    self.summary = summary


def check_not_input(input_path: str, output_path: str) -> None:
  """The input is never modified: an output at the input's own path is refused."""
  if os.path.abspath(input_path) == os.path.abspath(output_path):
    raise N2VError(f"--output {output_path} is the input; the input is never modified")


def shard_of(name: str, n: int) -> int:
  return zlib.crc32(os.path.basename(name).encode("utf-8")) % n


def _reason(exc: BaseException, job: Job) -> str:
  text = str(exc) or type(exc).__name__
  if not isinstance(exc, N2VError):  # not a message of ours: say what kind of failure
    text = f"{type(exc).__name__}: {text}"
  for p in job.inputs:  # messages usually start with the path: keep it short
    if text.startswith(p + ": "):
      return text[len(p) + 2:]
  return text


def run_jobs(job_list: list[Job], failed: list[Result], run: Callable[[Job], Result],
             finished: Callable[[Job], bool], output_dir: str, options: PredictOptions,
             preemption: Preemption | None, started: float, report_info: dict,
             unit: str = "file", container: str = "folder") -> Summary:
  """The loop of a folder or plate run: the jobs of options.shard, each claimed and run (or
  skipped when `finished`), failures recorded, a stop on a signal or a write error, the
  report (options.report). `failed`: jobs that failed before running (incomplete fields)."""
  i, n = options.shard
  total = len(job_list) + len(failed)
  job_list = [j for j in job_list if shard_of(j.shard_key, n) == i]
  failed = [r for r in failed if shard_of(r.name, n) == i]
  results = list(failed)
  bar = reporter.progress(len(job_list), unit=unit, enabled=options.progress)
  stop, stopped_by = None, 0  # a write error that every later job would meet; a signal
  for job in job_list:
    if preemption is not None and preemption.signum is not None:
      stopped_by = preemption.signum
      break  # after a whole job: every output written is complete
    needed = options.overwrite or not finished(job)
    with locks.claim_job(output_dir, job.shard_key, needed) as holder:
      try:
        result = (Result(job.name, "skipped", f"in progress in another process ({holder})")
                  if holder else run(job))
      except Stopped as exc:  # part-way through a job: what it wrote is complete
        stopped_by = exc.signum
        break
      except Exception as exc:  # one bad file must not stop a plate
        result = Result(job.name, "failed", _reason(exc, job))
        stop = exc if files.stops_plate(exc) else None
    results.append(result)
    bar.update(1)
    bar.postfix(refresh=False, failed=len([r for r in results if r.status == "failed"]))
    if result.status == "failed" and stop is None:
      bar.write(f"failed: {job.name}: {result.reason}")
    if stop is not None:
      break
  bar.close()
  summary = Summary(results, (i, n), total, time.perf_counter() - started,
                    stopped_by=stopped_by, container=container)
  if options.report:
    name = "n2v_batch_report.json" if n == 1 else f"n2v_batch_report_shard{i}of{n}.json"
    summary.report_path = os.path.join(output_dir, name)
    try:
      files.write_json_atomic(summary.report_path, _report_dict(summary, report_info))
    except OSError:
      if stop is None:
        raise
  if stop is not None:
    ran = len(results) - len(failed)
    raise WriteError(getattr(stop, "filename", None) or output_dir, stop, hint=(
        f"stopped the plate after {ran} of {len(job_list)} job(s); free space (or fix the "
        "folder) and rerun: finished files are skipped"))
  return summary


def _report_dict(summary: Summary, info: dict) -> dict[str, Any]:
  return {
      **info, "shard": list(summary.shard),
      "total_jobs_in_folder": summary.total_jobs, "seconds": summary.seconds,
      "counts": {s: len(summary.of(s)) for s in ("done", "skipped", "failed")},
      "results": [dataclasses.asdict(r) for r in summary.results],
  }
