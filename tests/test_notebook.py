"""notebooks/single_image_demo.ipynb runs top to bottom (nbclient), with a tiny budget."""

import os

import pytest

from tests.helpers import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = os.path.join(REPO, "notebooks", "single_image_demo.ipynb")


def test_single_image_demo_runs(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1 and "NUM_STEPS" in params[0].source
  params[0].source += f"\nNUM_STEPS = 8\nWORKDIR = {str(tmp_path / 'demo')!r}\n"
  client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                   resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}})
  client.execute()  # raises CellExecutionError on the first failing cell
  for name in ("denoised.tif", "noisy_vs_denoised.png", "metrics.jsonl", "summary.json"):
    assert (tmp_path / "demo" / name).exists(), name
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) >= 4  # input, blind spots, loss curve, side by side


def test_saved_notebook_shows_a_real_run():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.get("execution_count") for c in code), "commit the notebook executed"
  text = "".join(o.get("text", "") for c in code for o in c.get("outputs", []))
  assert "trained" in text and not any(o.get("output_type") == "error"
                                       for c in code for o in c.get("outputs", []))
