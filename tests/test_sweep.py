"""A tiny sweep, run twice: the second run skips every point; tables match the points."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from n2v_jax.training import sweep
from tests.helpers import REPO

STUDY = '''
from n2v_jax.configs import test_tiny

def get_config():
  config = test_tiny.get_config()
  config.train.num_steps = 4
  config.model.batch_norm = False
  return config

def sweep():
  points = [{"mask.perc_pix": p, "seed": s} for p in (5.0, 10.0) for s in (0, 1)]
  return points + [{"mask.perc_pix": 5.0, "opt.learning_rate": 3e-3, "seed": 0}]

def evaluate(point_dir):  # an extra per-point metric, as a test-set PSNR would be
  import json, os
  return {"score": json.load(open(os.path.join(point_dir, "summary.json")))["psnr_denoised"] + 1}
'''


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "n2v_jax.sweep", *args], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=300)


def test_sweep_runs_skips_and_tables_match(tmp_path):
  config = tmp_path / "config.py"
  config.write_text(STUDY)
  out = tmp_path / "sweep"
  logs = []
  counts = sweep.run_sweep(str(config), str(out), log=logs.append)
  assert counts == {"points": 5, "skipped": 0, "trained": 5}
  # Seeds, rates and masking settings may differ within one program: all 5 points in one.
  assert sum("in one program" in l for l in logs) == 1
  names = sorted(p for p in os.listdir(out) if os.path.isdir(out / p))
  assert names == sorted(["perc_pix=5__seed=0", "perc_pix=5__seed=1", "perc_pix=10__seed=0",
                          "perc_pix=10__seed=1", "perc_pix=5__learning_rate=0.003__seed=0"])
  point = json.load(open(out / "perc_pix=5__seed=1" / "point.json"))
  assert len(point["trained_with"]) == 5 and point["overrides"]["seed"] == 1
  mtimes = {n: [os.path.getmtime(out / n / f) for f in ("summary.json", "eval.json")]
            for n in names}

  r = _cli("--config", str(config), "--workdir", str(out))
  assert r.returncode == 0, r.stderr
  assert "5 finished (skipped), 0 to train" in r.stdout
  assert "training" not in r.stdout
  assert "evaluating" not in r.stdout
  assert {n: [os.path.getmtime(out / n / f) for f in ("summary.json", "eval.json")]
          for n in names} == mtimes

  summaries = {n: json.load(open(out / n / "summary.json")) for n in names}
  rows = list(csv.DictReader(open(out / "results.csv")))
  assert len(rows) == 3
  for row in rows:
    members = [n for n in names if f"perc_pix={float(row['mask.perc_pix']):g}__" in n
               and (("learning_rate" in n) == (float(row["opt.learning_rate"]) != 1e-3))]
    assert int(row["seeds"]) == len(members)
    psnr = [summaries[n]["psnr_denoised"] for n in members]
    assert float(row["psnr_denoised_mean"]) == pytest.approx(np.mean(psnr), abs=1e-9)
    assert float(row["score_mean"]) == pytest.approx(np.mean(psnr) + 1, abs=1e-9)
    if len(psnr) > 1:
      assert float(row["psnr_denoised_std"]) == pytest.approx(np.std(psnr, ddof=1), abs=1e-9)
  per_point = {r["point"]: r for r in csv.DictReader(open(out / "points.csv"))}
  for n in names:
    assert float(per_point[n]["psnr_denoised"]) == pytest.approx(summaries[n]["psnr_denoised"])
  md = (out / "results.md").read_text()
  assert md.count("\n| ") == 4 and "±" in md and "| score |" in md  # header + 3 rows
  assert (out / "results.png").stat().st_size > 0


def test_vmap_groups_split_on_static_differences():
  from tests.helpers import tiny_config
  configs = [tiny_config(**{"seed": 0}), tiny_config(**{"seed": 1, "mask.perc_pix": 10.0}),
             tiny_config(**{"model.features": 8}), tiny_config(**{"opt.learning_rate": 3e-3,
                                                                  "mask.strategy": "median"}),
             tiny_config(**{"model.features": 8, "seed": 2}), tiny_config(**{"seed": 3})]
  assert sweep.vmap_groups(configs, max_vmap=16) == [[0, 1, 3, 5], [2, 4]]
  assert sweep.vmap_groups(configs, max_vmap=3) == [[0, 1, 3], [5], [2, 4]]


def test_bad_study_is_one_line_error(tmp_path):
  config = tmp_path / "config.py"
  config.write_text(STUDY.replace('"mask.perc_pix": p', '"mask.no_such_field": p'))
  r = _cli("--config", str(config), "--workdir", str(tmp_path / "w"))
  assert r.returncode == 1 and "Traceback" not in r.stderr
  assert r.stderr.strip().startswith("error:") and "mask.no_such_field" in r.stderr
