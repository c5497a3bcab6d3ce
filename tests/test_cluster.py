"""Runs that survive clusters: damaged checkpoints, one writer per workdir, full disks,
plate runs stopped by a signal, bad inputs refused in one line."""

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from n2v_jax import errors
from n2v_jax import preemption
from n2v_jax.inference import folders
from n2v_jax.inference import predictor
from n2v_jax.inference.options import PredictOptions
from n2v_jax.io import figures
from n2v_jax.io import files
from n2v_jax.io import locks
from n2v_jax.io import tiff
from n2v_jax.training import multi
from n2v_jax.training import trainer
from n2v_jax.workdir import checkpoint
from tests.helpers import REPO, noisy_stack, tiny_config, write_tiff

ENV = dict(os.environ, JAX_PLATFORMS="cpu")
# 6 steps: checkpoints 2, 4, 6; no validation set (one compilation less per run)
EVERY_2 = {"train.checkpoint_every": 2, "data.val_fraction": 0.0}


def _cli(*args, **kwargs):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        env=ENV, timeout=300, **kwargs)


def _params(workdir):
  return [np.asarray(x) for x in jax.tree.leaves(predictor.load_predictor(str(workdir)).variables)]


def _same(a, b):
  return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _hidden(folder):
  return sorted(f for f in os.listdir(folder) if f.startswith(".") or f.endswith(".tmp"))


def _truncate_all(step_dir):  # what a full disk or a crash mid-write leaves
  for root, _, names in os.walk(step_dir):
    for f in names:
      path = os.path.join(root, f)
      os.truncate(path, os.path.getsize(path) // 2)


def _remove_manifest(step_dir):  # a missing piece
  os.remove(os.path.join(step_dir, "default", "manifest.ocdbt"))


def _changed_values(step_dir):  # a flipped bit in the array data, which orbax does not check
  path = os.path.join(step_dir, "_CHECKPOINT_METADATA")
  meta = json.load(open(path))
  # the same mismatch, made deterministic: a bit of the network's variables, so that both
  # the whole state's checksum (training) and the variables' one (prediction) disagree
  meta["custom_metadata"][checkpoint.CRC_KEY] += 1
  meta["custom_metadata"][checkpoint.CRC_VARIABLES_KEY] += 1
  json.dump(meta, open(path, "w"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """An uninterrupted run (checkpoint_every does not change what a run computes)."""
  d = tmp_path_factory.mktemp("model")
  trainer.train_and_evaluate(tiny_config(**{**EVERY_2, "train.checkpoint_every": 4}),
                             str(d / "w"))
  return str(d / "w")


@pytest.fixture(scope="module")
def stopped_at_4(tmp_path_factory):
  """(a run stopped after step 4: checkpoints 2 and 4, the same run at step 2)."""
  d = tmp_path_factory.mktemp("stopped")
  w, at_2 = d / "w", d / "at_2"
  assert trainer.train_and_evaluate(tiny_config(**EVERY_2), str(w), stop_after=2) == {
      "stopped_at": 2}
  shutil.copytree(w, at_2)
  trainer.train_and_evaluate(tiny_config(**EVERY_2), str(w), stop_after=4)
  return w, at_2


def _copy(src, tmp_path):
  shutil.copytree(src, tmp_path / "w")
  return tmp_path / "w"


# ------------------------------------------------------------------ damaged checkpoints


@pytest.mark.parametrize("damage, resume", [(_truncate_all, True), (_remove_manifest, False),
                                            (_changed_values, False)])
def test_damaged_checkpoint_falls_back_to_the_newest_good_one(tmp_path, capfd, stopped_at_4,
                                                              model_dir, damage, resume):
  w = _copy(stopped_at_4[0], tmp_path)
  damage(str(w / "checkpoints" / "4"))
  capfd.readouterr()

  # predict uses step 2 and says so in one line; it removes nothing
  assert _same(_params(w), _params(stopped_at_4[1]))
  err = capfd.readouterr().err
  assert "Traceback" not in err and "Exception ignored" not in err, err
  warned = [l for l in err.splitlines() if l.startswith("warning: checkpoint step 4")]
  assert len(warned) == 1 and str(w / "checkpoints") in warned[0], err
  assert warned[0].endswith("; using step 2") and "removed" not in warned[0]
  assert checkpoint.latest_step(str(w)) == 4
  if not resume:  # the rest does not depend on how the checkpoint was damaged
    return

  # training resumes from step 2 (the damaged step removed, then saved again) and ends
  # where an uninterrupted run ends
  trainer.train_and_evaluate(tiny_config(**EVERY_2), str(w))
  err = capfd.readouterr().err
  assert "Traceback" not in err, err
  warned = [l for l in err.splitlines() if l.startswith("warning:")]
  assert len(warned) == 1 and warned[0].endswith("; removed it; using step 2"), err
  assert "Resuming from the checkpoint at step 2." in err
  assert checkpoint.manager(str(w), read_only=True).all_steps() == [2, 4, 6]
  assert _same(_params(w), _params(model_dir))
  assert [json.loads(l)["step"] for l in open(w / "metrics.jsonl")] == [2, 4, 6]


def test_no_readable_checkpoint_is_one_error_line(tmp_path, stopped_at_4):
  w = _copy(stopped_at_4[0], tmp_path)
  _truncate_all(str(w / "checkpoints" / "4"))
  _remove_manifest(str(w / "checkpoints" / "2"))
  with pytest.raises(ValueError, match="no checkpoint can be read") as e:
    predictor.load_predictor(str(w))
  assert "\n" not in str(e.value) and "step 4: " in str(e.value)
  tif = write_tiff(tmp_path / "in.tif", noisy_stack(0, (32, 32)), "YX")
  r = _cli("-m", "n2v_jax.predict", "--workdir", str(w), "--input", tif, "--output",
           str(tmp_path / "out.tif"))
  assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
  assert r.stderr.strip().splitlines() == [f"error: {e.value}"]
  assert not (tmp_path / "out.tif").exists()


# ------------------------------------------------------------------ one writer per workdir

HOLD = """
import sys, time
from n2v_jax.io import locks
@locks.holds_locks
def hold():
  locks.lock_workdir(sys.argv[1])
  print("locked", flush=True)
  time.sleep(120)
hold()
"""


def test_second_run_is_refused_and_a_killed_runs_lock_does_not_block(tmp_path):
  w = tmp_path / "w"
  os.makedirs(w)
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(w)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    r = _cli("-m", "n2v_jax.train", "--config", "configs/test_tiny.py", "--workdir", str(w))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "in use by another run" in lines[0], r.stderr
    assert f"pid {holder.pid} on " in lines[0] and "started " in lines[0]
    assert os.listdir(w) == [locks.LOCK_FILE]  # the refused run wrote nothing
    # n2v_jax.multi (sweeps) locks every workdir before writing any of them
    free = tmp_path / "free"
    with pytest.raises(errors.InUseError, match=f"pid {holder.pid}"):
      multi.train_many([tiny_config(), tiny_config(seed=1)], [str(free), str(w)])
    assert not (free / "config.json").exists()
  finally:
    holder.kill()  # kill -9: the lock file stays, its lock goes with the process
    holder.wait()
  assert json.loads((w / locks.LOCK_FILE).read_text())["pid"] == holder.pid
  assert trainer.train_and_evaluate(tiny_config(**EVERY_2), str(w), stop_after=1) == {
      "stopped_at": 1}
  with open(w / locks.LOCK_FILE) as f:  # released when the run returned
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  assert checkpoint.latest_step(str(w)) == 1
  assert predictor.load_predictor(str(w)).in_channels == 1  # the lock file bothers no reader


def test_lock_released_when_the_run_raises(tmp_path):
  @locks.holds_locks
  def failing(workdir):
    locks.lock_workdir(workdir)
    raise ValueError("boom")

  for _ in range(2):  # the second call would be refused if the first kept the lock
    with pytest.raises(ValueError, match="boom"):
      failing(str(tmp_path))


# ------------------------------------------------------------------ full disk


def test_full_disk_during_training_names_the_path_and_the_rerun_continues(
    tmp_path, monkeypatch, stopped_at_4):
  w = _copy(stopped_at_4[0], tmp_path)
  real_save = ocp.CheckpointManager.save

  def full_at_6(self, step, *args, **kwargs):  # tensorstore's error, as a real full disk
    if step == 6:
      raise ValueError(f'RESOURCE_EXHAUSTED: Error writing local file "{self.directory}/6.'
                       'orbax-checkpoint-tmp/default.orbax-checkpoint-tmp/_sharding": Failed '
                       "to write 11379 bytes to file 8: No space left on device "
                       "[os_error_code='28']")
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_at_6)
  with pytest.raises(errors.WriteError) as e:
    trainer.train_and_evaluate(tiny_config(**EVERY_2), str(w))
  assert errors.one_line(e.value) == (
      f"could not write {w}/checkpoints/6: No space left on device")
  with open(w / "metrics.jsonl", "a") as f:
    f.write('{"step": 8, "train_lo')  # a last line a full disk cut short
  monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)  # space freed
  trainer.train_and_evaluate(tiny_config(**EVERY_2), str(w))
  assert checkpoint.latest_step(str(w)) == 6
  assert [json.loads(l)["step"] for l in open(w / "metrics.jsonl")] == [2, 4, 6]

  real_replace = os.replace

  def full_replace(src, dst, *args, **kwargs):
    if str(dst).endswith("summary.json"):
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_replace(src, dst, *args, **kwargs)

  monkeypatch.setattr(os, "replace", full_replace)
  os.remove(w / "summary.json")
  with pytest.raises(errors.WriteError) as e:  # the finished run redoes its evaluation
    trainer.train_and_evaluate(tiny_config(**EVERY_2), str(w))
  assert str(e.value) == f"could not write {w}/summary.json: No space left on device"
  assert not (w / "summary.json").exists() and _hidden(w) == [locks.LOCK_FILE]


def _short_write(fh, data, **kwargs):
  fh.write(b"II*\x00partial")
  raise OSError("65536 requested and 44968 written")  # tifffile's own check, no errno


def _enospc(fh, data, **kwargs):
  fh.write(b"II*\x00partial")
  raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("failing_write", [_enospc, _short_write])
def test_full_disk_stops_a_plate_and_the_rerun_continues(tmp_path, monkeypatch, model_dir,
                                                         failing_write):
  src, out = tmp_path / "in", tmp_path / "out"
  os.makedirs(src)
  for i in range(4):
    write_tiff(src / f"f{i}.tif", noisy_stack(i, (32, 32)), "YX")
  pred = predictor.load_predictor(model_dir)
  real_imwrite, calls = tiff.tifffile.imwrite, []

  def imwrite(fh, data, **kwargs):
    calls.append(1)
    return (real_imwrite if len(calls) == 1 else failing_write)(fh, data, **kwargs)

  monkeypatch.setattr(tiff.tifffile, "imwrite", imwrite)
  if failing_write is _short_write:  # the folder is full as the write fails
    free = os.statvfs(str(tmp_path))
    monkeypatch.setattr(files.os, "statvfs", lambda p: os.statvfs_result(
        (*free[:4], 0, *free[5:])))
  with pytest.raises(errors.WriteError) as e:
    folders.denoise_folder(pred, str(src), str(out), PredictOptions(progress=False))
  assert str(e.value).startswith(f"could not write {out}/f1.tif: No space left on device; "
                                 "stopped the plate after 2 of 4 job(s)")
  assert len(calls) == 2  # the plate stopped at the first failing write
  assert sorted(os.listdir(out)) == ["f0.tif", "n2v_batch_report.json"]  # nothing partial
  report = json.load(open(out / "n2v_batch_report.json"))
  assert report["counts"] == {"done": 1, "skipped": 0, "failed": 1}
  monkeypatch.undo()  # space freed: the same run goes on where it stopped
  summary = folders.denoise_folder(pred, str(src), str(out), PredictOptions(progress=False))
  assert (len(summary.of("done")), len(summary.of("skipped"))) == (3, 1)
  assert _hidden(out) == []


# ------------------------------------------------------------------ plate runs


def test_plate_stops_after_the_current_file_on_sigterm(tmp_path, model_dir):
  src, out = tmp_path / "in", tmp_path / "out"
  os.makedirs(src)
  names = [f"f{i}.tif" for i in range(6)]
  for i, n in enumerate(names):
    write_tiff(src / n, noisy_stack(i, (128, 128)), "YX")
  # TTA on small tiles: each file takes long enough for the signal to land mid-plate
  proc = subprocess.Popen([sys.executable, "-m", "n2v_jax.predict", "--workdir", model_dir,
                           "--input", str(src), "--output", str(out), "--tta", "--tile", "32",
                           "--noprogress"], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and not (out / "f0.tif").exists():
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=240)
  assert proc.returncode == preemption.exit_status(signal.SIGTERM) == 143, stderr
  assert "Traceback" not in stderr
  lines = [l for l in stderr.splitlines() if l.startswith("SIGTERM")]
  assert len(lines) == 1 and "run the same command again" in lines[0], stderr
  done = sorted(f for f in os.listdir(out) if f.endswith(".tif"))
  assert 1 <= len(done) < len(names) and _hidden(out) == []
  for f in done:  # whole files only
    assert tiff.read_image(str(out / f)).data.shape == (128, 128)
  report = json.load(open(out / "n2v_batch_report.json"))
  assert report["counts"]["done"] == len(done) and f"denoised {len(done)}," in stdout
  summary = folders.denoise_folder(predictor.load_predictor(model_dir), str(src), str(out),
                                   PredictOptions(progress=False))
  assert len(summary.of("skipped")) == len(done)
  assert len(summary.of("done")) == len(names) - len(done)


def test_plate_skips_a_job_another_process_holds(tmp_path, model_dir):
  src, out = tmp_path / "in", tmp_path / "out"
  os.makedirs(src)
  os.makedirs(out)
  for i in range(3):
    write_tiff(src / f"f{i}.tif", noisy_stack(i, (32, 32)), "YX")
  held = subprocess.Popen([sys.executable, "-c", (
      "import fcntl, json, os, sys, time\n"
      "f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX)\n"
      "f.write(json.dumps({'pid': os.getpid(), 'host': 'h', 'started': 't'})); f.flush()\n"
      "print('held', flush=True); time.sleep(120)"), str(out / ".f1.tif.lock")],
      stdout=subprocess.PIPE, text=True)
  try:
    assert held.stdout.readline().strip() == "held"
    summary = folders.denoise_folder(predictor.load_predictor(model_dir), str(src), str(out),
                                     PredictOptions(progress=False))
  finally:
    held.kill()
    held.wait()
  busy = [r for r in summary.results if r.reason]
  assert [r.name for r in busy] == ["f1.tif"] and busy[0].status == "skipped"
  assert f"pid {held.pid}" in busy[0].reason
  assert "denoised 2, skipped 0 (already done), 1 in progress elsewhere" in summary.line()
  assert sorted(os.listdir(out)) == [".f1.tif.lock", "f0.tif", "f2.tif",
                                     "n2v_batch_report.json"]
  # the holder is gone (killed): its claim no longer counts, the job runs, the claim goes
  summary = folders.denoise_folder(predictor.load_predictor(model_dir), str(src), str(out),
                                   PredictOptions(progress=False))
  assert [r.name for r in summary.of("done")] == ["f1.tif"] and _hidden(out) == []


# ------------------------------------------------------------------ bad training inputs


@pytest.mark.parametrize("make_args, message", [
    # tifffile's warning about the file used to come as a second line
    (lambda d: [f"--config.data.path={_write(d / 'c.tif', b'II*' + bytes(1) + b'x' * 500)}"],
     "not a readable TIFF file"),
    # a syntax error in a config file used to be a traceback
    (lambda d: ["--config", _write(d / "cfg.py", b"def get_config(:\n")],
     "invalid syntax (line 1)"),
    (lambda d: ["--config.train.nosuchfield=1"], "unknown config field 'nosuchfield'"),
])
def test_bad_inputs_are_one_error_line(tmp_path, make_args, message):
  args = make_args(tmp_path)
  r = _cli("-m", "n2v_jax.train", "--config", "configs/test_tiny.py", "--workdir",
           str(tmp_path / "w"), *args)
  assert r.returncode == 1, r.stderr
  lines = [l for l in r.stderr.splitlines() if not l.startswith("Training on")]
  assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
  assert not (tmp_path / "w").exists()


def _write(path, data: bytes) -> str:
  path.write_bytes(data)
  return str(path)


def test_loss_plot_of_a_constant_image_warns_nothing(tmp_path, recwarn):
  """A constant image trains to losses of 0 (and finite outputs): the plot used to warn."""
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text("".join(json.dumps({"step": s, "train_loss": 0.0, "val_loss": 0.0}) + "\n"
                             for s in (2, 4)))
  figures.plot_losses(str(metrics), str(tmp_path / "loss.png"))
  assert (tmp_path / "loss.png").exists()
  assert not [w for w in recwarn if "log-scaled" in str(w.message)]


def test_atomic_output_is_complete_or_untouched(tmp_path, monkeypatch):
  path = tmp_path / "out.bin"
  umask = os.umask(0o022)
  os.umask(umask)
  with files.atomic_output(str(path)) as tmp:
    assert os.path.dirname(tmp) == str(tmp_path) and not path.exists()
    open(tmp, "wb").write(b"new")
  assert path.read_bytes() == b"new" and _hidden(tmp_path) == []
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
  os.chmod(path, 0o640)
  with files.atomic_output(str(path)) as tmp:  # a replacement keeps the old permissions
    open(tmp, "wb").write(b"newer")
  assert path.read_bytes() == b"newer" and os.stat(path).st_mode & 0o777 == 0o640

  with pytest.raises(RuntimeError, match="broken"), files.atomic_output(str(path)) as tmp:
    open(tmp, "wb").write(b"part")
    raise RuntimeError("broken writer")
  assert path.read_bytes() == b"newer" and _hidden(tmp_path) == []

  late = tmp_path / "late.bin"
  with pytest.raises(FileExistsError, match="pass --overwrite"):
    with files.atomic_output(str(late), overwrite=False) as tmp:
      open(tmp, "wb").write(b"ours")
      late.write_bytes(b"theirs")  # another process wrote it meanwhile: never clobbered
  assert late.read_bytes() == b"theirs" and _hidden(tmp_path) == []

  monkeypatch.setattr(os, "statvfs", lambda p: os.statvfs_result((4096,) * 2 + (0,) * 8))
  with pytest.raises(errors.WriteError) as e, files.atomic_output(str(path)) as tmp:
    raise OSError("65536 requested and 44968 written")  # a short write: no errno, no space
  assert str(e.value) == f"could not write {path}: No space left on device"
  assert path.read_bytes() == b"newer" and _hidden(tmp_path) == []
