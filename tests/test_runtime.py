"""CPU virtual devices (n2v_jax.training.runtime): chosen before JAX starts, recorded in
config.json."""

import json
import os
import subprocess
import sys

import pytest

from n2v_jax.training import config as train_config
from n2v_jax.training import runtime
from tests.helpers import REPO, tiny_config


def test_auto_device_count_divides_the_batch_and_respects_the_memory_budget():
  assert runtime.auto_cpu_devices(16, 0) == 8
  assert runtime.auto_cpu_devices(4, 0) == 4
  assert runtime.auto_cpu_devices(12, 0) == 6
  assert runtime.auto_cpu_devices(7, 0) == 7
  assert runtime.auto_cpu_devices(13, 0) == 1
  budget = runtime.MAX_REPLICATED_BYTES
  assert runtime.auto_cpu_devices(16, budget // 4) == 4  # 8 copies would not fit
  assert runtime.auto_cpu_devices(16, budget) == 1


def test_bad_cpu_devices_are_refused_with_the_field_named():
  with pytest.raises(ValueError, match="train.cpu_devices=-1"):
    train_config.validate(tiny_config(**{"train.cpu_devices": -1}))
  with pytest.raises(ValueError, match="divisible by train.cpu_devices=3"):
    train_config.validate(tiny_config(**{"train.cpu_devices": 3}))


_SCRIPT = r"""
import json, sys
from n2v_jax.training import trainer
from tests.helpers import tiny_config
config = tiny_config(**{"train.num_steps": 2, "train.log_every": 1, "train.eval_every": 1,
                        "train.cpu_devices": int(sys.argv[2])})
trainer.train_and_evaluate(config, sys.argv[1], stop_after=2)
import jax
print(json.dumps({"devices": jax.device_count()}))
"""


def _start(tmp_path, name, cpu_devices, xla_flags=""):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags)
  workdir = str(tmp_path / name)
  return workdir, subprocess.Popen([sys.executable, "-c", _SCRIPT, workdir, str(cpu_devices)],
                                   cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)


def _finish(workdir, proc):
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  with open(os.path.join(workdir, "config.json")) as f:
    recorded = json.load(f)["runtime"]["devices"]
  return json.loads(out.strip().splitlines()[-1])["devices"], recorded, err


def test_a_fresh_process_splits_the_cpu_and_records_it(tmp_path):
  # Concurrently. Tiny config: batch 4, so 'auto' gives 4 devices, printed and recorded; a
  # device count the user forced through XLA_FLAGS is left alone.
  auto = _start(tmp_path, "auto", 0)
  forced = _start(tmp_path, "forced", 0, "--xla_force_host_platform_device_count=2")
  seen, recorded, err = _finish(*auto)
  assert seen == recorded == 4
  assert "Splitting the CPU into 4 XLA devices" in err and "Training on 4 cpu device(s)" in err
  seen, recorded, _ = _finish(*forced)
  assert seen == recorded == 2
