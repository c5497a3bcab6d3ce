"""SIGTERM/SIGINT during training: checkpoint at the current step, one line, exit 128+signal;
the same command resumes and ends where an uninterrupted run ends, bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from n2v_jax import preemption
from n2v_jax.inference import predictor
from n2v_jax.training import trainer
from n2v_jax.workdir import checkpoint
from tests.helpers import REPO, tiny_config

# Long enough that the signal lands mid-run; checkpoint_every above num_steps, so the only
# checkpoint before the end is the one the signal makes.
OVERRIDES = {"train.num_steps": 1000, "train.log_every": 2, "train.eval_every": 2,
             "train.checkpoint_every": 5000}


def _command(workdir):
  return [sys.executable, "-m", "n2v_jax.train", "--config", "configs/test_tiny.py",
          "--workdir", str(workdir)] + [f"--config.{k}={v}" for k, v in OVERRIDES.items()]


def _params(workdir):
  return jax.tree.leaves(predictor.load_predictor(str(workdir)).variables)


# The resume-equality half runs for SIGTERM only (what schedulers send); SIGINT takes the
# same path once the handler has set the flag, and its half would double the test's time.
@pytest.mark.parametrize("signum, check_resume", [(signal.SIGTERM, True), (signal.SIGINT, False)])
def test_signal_checkpoints_and_resumes_exactly(tmp_path, signum, check_resume):
  workdir = tmp_path / "w"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(_command(workdir), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size):
    time.sleep(0.2)  # training is under way once the first log line is written
  proc.send_signal(signum)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == preemption.exit_status(signum) == 128 + signum, err
  assert "Traceback" not in err
  lines = [l for l in err.splitlines() if l.startswith(signal.Signals(signum).name)]
  assert len(lines) == 1 and "run the same command again to resume" in lines[0], err
  stopped = checkpoint.latest_step(str(workdir))
  assert stopped is not None and 0 < stopped < OVERRIDES["train.num_steps"]
  assert f"after step {stopped}," in lines[0]
  if not check_resume:
    return
  # The same command again resumes from that step and runs to the end.
  r = subprocess.run(_command(workdir), cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr
  assert f"Resuming from the checkpoint at step {stopped}." in r.stderr
  full = tmp_path / "full"
  trainer.train_and_evaluate(tiny_config(**OVERRIDES), str(full))
  for a, b in zip(_params(full), _params(workdir)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  steps = [json.loads(l)["step"] for l in open(metrics)]
  assert steps == list(range(2, OVERRIDES["train.num_steps"] + 1, 2))  # nothing lost or doubled


def test_preemption_flag_stops_loop_in_process(tmp_path):
  """The loop's side without a real signal: a requested stop saves that step."""
  with preemption.Preemption() as p:
    p.signum = signal.SIGTERM  # as the handler would set it
    result = trainer.train_and_evaluate(tiny_config(), str(tmp_path), preemption=p)
  assert result == {"stopped_at": 1, "signal": signal.SIGTERM}
  assert checkpoint.latest_step(str(tmp_path)) == 1
