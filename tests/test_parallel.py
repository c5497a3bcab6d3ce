"""Data parallelism: a 4-device CPU run equals a 1-device run with the same global batch.

Each run is a subprocess: the device count (XLA_FLAGS) must be fixed before jax starts.
"""

import json
import os
import subprocess
import sys

import numpy as np

from tests.helpers import REPO

_SCRIPT = r"""
import json, sys
import jax, numpy as np
from n2v_jax.inference import predictor
from n2v_jax.inference.options import PredictOptions
from n2v_jax.training import runtime, trainer
from tests.helpers import tiny_config
workdir = sys.argv[1]
config = tiny_config(**{"train.batch_size": 8, "train.num_steps": 4, "train.checkpoint_every": 4,
                        "data.val_fraction": 0.0, "train.log_every": 1})
# 1) One step of the step the trainer builds, from the same state: on n devices the batch is
#    really partitioned (per-device patches (B/n, ...), gradients all-reduced).
import functools
from n2v_jax.data import dataset as data_lib, sources
from n2v_jax.nn import unet as models
from n2v_jax.training import steps
devices, batch_sharding, replicated = runtime.shardings(config.train)
raw = sources.open_source(config.data, config.seed)
patch = tuple(config.data.patch_shape)
ds = data_lib.build_dataset(config.data, raw, patch, config.seed)
model, tx = models.make_model(config.model, ds.in_channels), steps.make_optimizer(config.opt)
spec = steps.step_spec(config, patch)
put = (lambda x: jax.device_put(x, replicated)) if replicated is not None else jax.numpy.asarray
state = jax.tree.map(put, steps.create_train_state(jax.random.key(0), model, tx,
                                                   (1, *patch, ds.in_channels)))
fn = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, spec=spec,
                               opt_cfg=config.opt, num_steps=4, batch_sharding=batch_sharding))
args = (state, put(ds.train_NSC), put(ds.train_sizes), jax.random.key(1))
hlo = fn.lower(*args).compile().as_text()
n = len(devices)
out_state, metrics = fn(*args)
kernel = out_state.variables["params"]["final"]["kernel"]
np.savez(f"{workdir}_step1.npz", loss=np.asarray(metrics["loss"]),
         *[np.asarray(x) for x in jax.tree.leaves(out_state.variables["batch_stats"])])
print(json.dumps({"per_device_batch": f"f32[{8 // n},{patch[0]},{patch[1]},1]" in hlo,
                  "all_reduce": "all-reduce" in hlo,
                  "params_replicated": kernel.sharding.is_fully_replicated,
                  "params_devices": len(kernel.sharding.device_set)}))
# 2) A whole training run through the trainer.
trainer.train_and_evaluate(config, workdir, stop_after=4)  # skips the final denoising
variables = predictor.load_predictor(workdir).variables
flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
np.savez(f"{workdir}/params.npz", **{jax.tree_util.keystr(k): np.asarray(x) for k, x in flat})
# 3) Prediction: tiles spread over all devices, equal to the whole image in one call.
pred = predictor.load_predictor(workdir)
image = np.random.default_rng(3).normal(size=(61, 45, 1)).astype(np.float32)
tile = 2 * pred.halo + 2 * pred.divisor
np.savez(f"{workdir}_pred.npz", tiled=predictor.predict_image(pred, image,
                                                              PredictOptions(tile=tile)),
         whole=predictor.predict_image(pred, image,
                                       PredictOptions(tile=0)), n_devices=pred.n_devices)
"""


def _start(tmp_path, name, n_devices):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")
  workdir = str(tmp_path / name)
  proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, workdir], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  return workdir, proc


def _finish(proc):
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  proc.stdout, proc.stderr = out, err
  return proc


def test_four_devices_equal_one_device(tmp_path):
  (one, p1), (four, p4) = _start(tmp_path, "one", 1), _start(tmp_path, "four", 4)  # concurrently
  proc1, proc4 = _finish(p1), _finish(p4)
  checks = json.loads(proc4.stdout.strip().splitlines()[0])
  assert checks == {"per_device_batch": True, "all_reduce": True, "params_replicated": True,
                    "params_devices": 4}
  assert json.loads(proc1.stdout.strip().splitlines()[0])["all_reduce"] is False
  # After one step from the same state: the loss and BatchNorm's running statistics, which
  # average over the *global* batch (per-shard statistics would differ at the 1e-2 level).
  a, b = np.load(one + "_step1.npz"), np.load(four + "_step1.npz")
  assert len(a.files) == len(b.files) > 1
  for k in a.files:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7)
  assert "Training on 4 cpu device(s)" in proc4.stderr
  assert "Training on 1 cpu device(s)" in proc1.stderr
  assert json.load(open(os.path.join(four, "config.json")))["runtime"]["devices"] == 4
  assert json.load(open(os.path.join(one, "config.json")))["runtime"]["devices"] == 1
  # Per-step losses: each depends on all earlier updates.
  loss1 = [json.loads(l)["train_loss"] for l in open(os.path.join(one, "metrics.jsonl"))]
  loss4 = [json.loads(l)["train_loss"] for l in open(os.path.join(four, "metrics.jsonl"))]
  assert len(loss1) == 4
  np.testing.assert_allclose(loss1, loss4, rtol=1e-5)
  # Parameters after 4 steps: only the summation order differs (per-device partial
  # gradients, then an all-reduce). Adam divides by sqrt(v), so a parameter whose gradient is
  # near zero moves by up to ~lr on rounding alone; 3e-4 is well below one step (lr=1e-3).
  # Conv biases that feed BatchNorm have an exactly-zero gradient (BN subtracts the mean), so
  # Adam turns pure rounding noise into +-lr steps: in both runs they are noise; skipped.
  a, b = (np.load(os.path.join(d, "params.npz")) for d in (one, four))
  assert a.files == b.files
  compared = [k for k in a.files if not ("_conv" in k and "bias" in k)]
  assert len(compared) > 10
  for k in compared:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=3e-4, err_msg=k)
  # Prediction: tiles over 4 devices (or 1) equal the whole image in one call.
  p1, p4 = np.load(one + "_pred.npz"), np.load(four + "_pred.npz")
  assert int(p4["n_devices"]) == 4 and int(p1["n_devices"]) == 1
  for p in (p1, p4):
    assert np.abs(p["whole"]).max() > 0
    np.testing.assert_allclose(p["tiled"], p["whole"], rtol=1e-4, atol=1e-4)
