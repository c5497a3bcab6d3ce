"""Noise models (n2v_jax.nn.noise_models): the GMM's likelihood is a density over the
observation; fitting recovers a known Gaussian and a known Poisson-Gaussian noise; the
histogram model; save/load without pickles."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from n2v_jax.errors import N2VError
from n2v_jax.io import tiff
from n2v_jax.nn import noise_models as nm


def _random_gmm(seed=0, components=3):
  rng = np.random.default_rng(seed)
  weight = rng.normal(0, 0.5, (3 * components, 2)).astype(np.float32)
  weight[components:2 * components] += 2.0  # variances around e^2
  return nm.GMM(jnp.asarray(weight), 10.0, 200.0, 0.5)


@pytest.mark.parametrize("signal", [10.0, 60.0, 200.0])
def test_gmm_likelihood_integrates_to_one_and_has_the_signal_as_mean(signal):
  model = _random_gmm()
  x = np.linspace(signal - 400, signal + 400, 200_001).astype(np.float32)
  p = np.asarray(nm.gmm_likelihood(model, jnp.asarray(x), jnp.full(x.shape, signal)),
                 np.float64)
  x = x.astype(np.float64)  # the float32 grid's own points, integrated in float64
  assert abs(np.trapezoid(p, x) - 1.0) < 1e-3
  assert abs(np.trapezoid(p * x, x) - signal) < 1e-3 * signal  # zero-mean noise
  mean, var = nm.gmm_moments(model, jnp.asarray(signal))
  assert abs(float(mean) - signal) < 1e-3 * signal
  assert abs(np.trapezoid(p * (x - signal) ** 2, x) - float(var)) < 1e-2 * float(var)


def _pairs(kind, n=400_000, seed=0):
  rng = np.random.default_rng(seed)
  signal = rng.uniform(20, 400, n).astype(np.float32)
  if kind == "gaussian":
    return signal, signal + rng.normal(0, 6.0, n).astype(np.float32), lambda s: 36.0 + 0 * s
  gain, read = 2.0, 4.0  # Poisson-Gaussian: var = gain * signal + read^2
  observed = gain * rng.poisson(signal / gain) + rng.normal(0, read, n)
  return signal, observed.astype(np.float32), lambda s: gain * s + read ** 2


@pytest.mark.parametrize("kind", ["gaussian", "poisson_gaussian"])
def test_fit_recovers_the_variance_of_known_noise(kind):
  signal, observed, true_var = _pairs(kind)
  model = nm.fit_gmm(signal, observed, components=3, coefficients=2, steps=600,
                     learning_rate=0.05, batch=50_000)
  s = jnp.linspace(40, 380, 18)
  mean, var = nm.gmm_moments(model, s)
  np.testing.assert_allclose(np.asarray(mean), np.asarray(s), rtol=1e-3)
  np.testing.assert_allclose(np.asarray(var), true_var(np.asarray(s)), rtol=0.10)


def test_histogram_model_is_a_density_per_signal_bin():
  signal, observed, true_var = _pairs("poisson_gaussian", n=1_000_000)
  model = nm.histogram_model(signal, observed, bins=128, value_range=(0.0, 512.0))
  width = 512.0 / 128
  rows = np.asarray(model.density).sum(axis=1) * width
  filled = rows > 0
  np.testing.assert_allclose(rows[filled], 1.0, rtol=1e-5)
  # the likelihood at the signal is about the peak of a normal with the true variance
  s = 200.0
  p = float(nm.histogram_likelihood(model, jnp.asarray(s), jnp.asarray(s)))
  assert abs(p - 1 / np.sqrt(2 * np.pi * true_var(s))) < 0.25 * p


def test_save_and_load_round_trip_without_pickles(tmp_path):
  signal, observed, _ = _pairs("gaussian", n=20_000)
  models = [_random_gmm(1), nm.histogram_model(signal, observed, bins=32)]
  nm.save(models, str(tmp_path / "nm"))
  assert sorted(os.listdir(tmp_path / "nm")) == ["noise_model.json", "noise_model_0.npy",
                                                 "noise_model_1.npy"]
  back = nm.load(str(tmp_path / "nm"))
  x, s = jnp.linspace(0, 300, 50), jnp.linspace(20, 250, 50)
  for a, b in zip(models, back):
    assert type(a) is type(b)
    np.testing.assert_array_equal(np.asarray(nm.likelihood(a, x, s)),
                                  np.asarray(nm.likelihood(b, x, s)))
  with pytest.raises(N2VError, match="no such noise model"):
    nm.load(str(tmp_path / "missing"))
  with pytest.raises(N2VError, match="signal is constant"):
    nm.fit_gmm(np.ones(100), np.ones(100), steps=1)


def _cli(*args):
  import subprocess
  import sys
  from tests.helpers import REPO
  return subprocess.run([sys.executable, "-m", "n2v_jax.noise_model", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_calibration_from_a_static_stack_on_the_command_line(tmp_path):
  """Frames of a static sample under Poisson-Gaussian noise: their average is the signal."""
  rng = np.random.default_rng(4)
  yy, xx = np.mgrid[:64, :64]
  clean = 30 + 300 * (np.sin(yy / 6) * np.cos(xx / 9) + 1) / 2
  gain, read = 2.0, 4.0
  frames = gain * rng.poisson(clean / gain, (40, 64, 64)) + rng.normal(0, read, (40, 64, 64))
  path = str(tmp_path / "frames.tif")
  tiff.write_image(path, frames.astype(np.float32), "SYX")
  r = _cli("--noisy", path, "--output", str(tmp_path / "nm"), "--steps", "600")
  assert r.returncode == 0 and "wrote 1 noise model(s)" in r.stdout, r.stderr
  assert os.path.getsize(tmp_path / "nm" / "noise_model.png") > 10_000
  (model,) = nm.load(str(tmp_path / "nm"))
  s = jnp.linspace(60, 300, 9)
  _, var = nm.gmm_moments(model, s)
  np.testing.assert_allclose(np.asarray(var), gain * np.asarray(s) + read ** 2, rtol=0.12)
  again = _cli("--noisy", path, "--output", str(tmp_path / "nm"), "--steps", "1")
  assert again.returncode == 1 and "--overwrite" in again.stderr.splitlines()[-1]


def test_bootstrap_from_a_trained_workdir(tmp_path):
  from n2v_jax.inference import noise_fit
  from n2v_jax.training import trainer
  from tests.helpers import noisy_stack, tiny_config
  path = str(tmp_path / "noisy.tif")
  tiff.write_image(path, noisy_stack(0, (2, 48, 48)), "SYX")
  trainer.train_and_evaluate(tiny_config(**{"data.path": path, "train.num_steps": 2}),
                             str(tmp_path / "w"))
  signal, observation = noise_fit.bootstrap_pairs(str(tmp_path / "w"))
  assert signal.shape == observation.shape == (2 * 48 * 48, 1)
  models = noise_fit.fit(signal, observation, "histogram", bins=32)
  noise_fit.save(models, str(tmp_path / "nm"), signal)
  assert len(nm.load(str(tmp_path / "nm"))) == 1
