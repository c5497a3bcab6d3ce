"""The documentation that is made from the code is up to date."""

import os

from n2v_jax.configs import reference
from tests.helpers import REPO


def test_configuration_reference_is_made_from_default_py():
  with open(os.path.join(REPO, "docs", "configuration.md")) as f:
    committed = f.read()
  assert committed == reference.markdown(), (
      "docs/configuration.md differs from configs/default.py; remake it with "
      "`python -m n2v_jax.configs.reference > docs/configuration.md`")


def test_every_field_is_documented():
  rows = [l for l in reference.markdown().splitlines() if l.startswith("| `")]
  undocumented = [r.split("`")[1] for r in rows if r.rstrip().endswith("|  |")]
  assert not undocumented, f"fields without a comment in configs/default.py: {undocumented}"
  assert len(rows) > 60
