"""The evaluation command on a tiny synthetic set, checked against direct computation."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from n2v_jax.data import synthetic
from n2v_jax.inference import evaluation
from n2v_jax.inference import predictor
from n2v_jax.training import trainer
from n2v_jax.inference.options import PredictOptions
from tests.helpers import REPO, tiny_config


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
  d = tmp_path_factory.mktemp("evalset")
  (d / "noisy").mkdir()
  (d / "clean").mkdir()
  for i in range(3):
    noisy, clean = synthetic.noisy_pair(i, (40 + 8 * i, 36), noise_sigma=0.1)
    tifffile.imwrite(d / "noisy" / f"im{i}.tif", (noisy[..., 0] * 255).astype(np.float32))
    tifffile.imwrite(d / "clean" / f"im{i}.tif", (clean[..., 0] * 255).round().astype(np.uint8))
  trainer.train_and_evaluate(tiny_config(**{"train.num_steps": 2}), str(d / "w"))
  return d


def test_scores_match_direct_computation(tiny_set, tmp_path):
  d = tiny_set
  out = tmp_path / "eval"
  summary = evaluation.evaluate(str(d / "w"), str(d / "noisy"), str(d / "clean"), str(out),
                                tta_modes=(False, True), options=PredictOptions(tile=0))
  assert summary["images"] == 3 and summary["data_range"] == 255.0
  pred = predictor.load_predictor(str(d / "w"))
  psnrs = []
  for i in range(3):
    noisy = tifffile.imread(d / "noisy" / f"im{i}.tif")
    clean = tifffile.imread(d / "clean" / f"im{i}.tif").astype(np.float64)
    den = predictor.predict_image(pred, noisy[..., None], PredictOptions(tile=0))[..., 0]
    psnrs.append(10 * np.log10(255.0**2 / np.mean((clean - den) ** 2)))
  assert summary["mean"]["plain_psnr"] == pytest.approx(np.mean(psnrs), abs=1e-6)
  rows = list(csv.DictReader(open(out / "per_image.csv")))
  assert [r["image"] for r in rows] == ["im0", "im1", "im2"]
  assert float(rows[1]["plain_psnr"]) == pytest.approx(psnrs[1], abs=1e-6)
  assert {"tta_psnr", "tta_ssim", "plain_psnr_clean_range", "noisy_psnr"} <= set(rows[0])
  saved = json.load(open(out / "evaluation.json"))
  assert saved["mean"]["tta_psnr"] == pytest.approx(summary["mean"]["tta_psnr"])
  with pytest.raises(FileExistsError, match="--overwrite"):
    evaluation.evaluate(str(d / "w"), str(d / "noisy"), str(d / "clean"), str(out))


def test_blend_is_scored_beside_the_network_alone(tiny_set):
  d = tiny_set
  both = evaluation.evaluate(str(d / "w"), str(d / "noisy"), str(d / "clean"),
                             tta_modes=(False,), blend_modes=(False, True),
                             options=PredictOptions(tile=0))
  alone = evaluation.evaluate(str(d / "w"), str(d / "noisy"), str(d / "clean"),
                              tta_modes=(False,),  # auto: the model's config.predict.blend
                              options=PredictOptions(tile=0))
  assert "plain_blend_psnr" not in alone["mean"]
  assert both["mean"]["plain_psnr"] == alone["mean"]["plain_psnr"]
  pred = predictor.load_predictor(str(d / "w"))
  noisy = tifffile.imread(d / "noisy" / "im1.tif")
  clean = tifffile.imread(d / "clean" / "im1.tif").astype(np.float64)
  den = predictor.predict_image(pred, noisy[..., None],
                                PredictOptions(tile=0, blend=True))[..., 0]
  psnr = 10 * np.log10(255.0**2 / np.mean((clean - den) ** 2))
  assert both["per_image"][1]["plain_blend_psnr"] == pytest.approx(psnr, abs=1e-6)


def test_unpaired_images_are_an_error(tiny_set, tmp_path):
  (tmp_path / "clean").mkdir()
  tifffile.imwrite(tmp_path / "clean" / "im0.tif", np.zeros((40, 36), np.uint8))
  with pytest.raises(ValueError, match="no clean partner"):
    evaluation.evaluate(str(tiny_set / "w"), str(tiny_set / "noisy"), str(tmp_path / "clean"))


def test_cli(tiny_set, tmp_path):
  r = subprocess.run([sys.executable, "-m", "n2v_jax.evaluate", "--workdir", str(tiny_set / "w"),
                      "--noisy", str(tiny_set / "noisy"), "--clean", str(tiny_set / "clean"),
                      "--output", str(tmp_path / "e"), "--tta", "off", "--tile", "0"],
                     cwd=REPO, capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr
  assert "plain_psnr" in r.stdout and (tmp_path / "e" / "per_image.csv").exists()
