"""The project is installed (install.sh: pip install -e .): its command-line entry points
exist and start, from any working directory, without the checkout on the path."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

COMMANDS = {"n2v-train": "n2v_jax.train:main", "n2v-predict": "n2v_jax.predict:main",
            "n2v-evaluate": "n2v_jax.evaluate:main", "n2v-export": "n2v_jax.export:main",
            "n2v-sweep": "n2v_jax.sweep:main", "n2v-noise-model": "n2v_jax.noise_model:main"}


def test_console_scripts_are_registered():
  found = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
           if e.name.startswith("n2v-")}
  assert found == COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_console_script_runs_outside_the_checkout(name, tmp_path):
  script = os.path.join(os.path.dirname(sys.executable), name)
  assert os.path.exists(script), f"{script}: run `pip install -e .` (install.sh does)"
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  r = subprocess.run([script, "--help"], cwd=tmp_path, capture_output=True, text=True,
                     env={**env, "JAX_PLATFORMS": "cpu"}, timeout=120)
  # absl's --help exits with status 1 after listing the program's flags
  assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
  assert "--workdir" in r.stdout or "--output" in r.stdout
  assert ("--config" in r.stdout) == (name in ("n2v-train", "n2v-sweep"))
