"""The configs: `default.py` lists every field with its meaning; the others derive from it.

Run one with `python -m n2v_jax.train --config configs/NAME.py` (configs/ beside the repo is
this folder); load one in Python with `from n2v_jax.configs import NAME; NAME.get_config()`.
"""

import os

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def data_root() -> str:
  """The shared data folder: $N2V_DATA, else ../shared/data beside the repository. Its data
  sets have their own licences: they are read from there, never copied into the repo."""
  return os.environ.get("N2V_DATA", os.path.join(_REPO, "..", "shared", "data"))
