"""The napari plugin in a real viewer under a virtual X server (pytest-xvfb starts one;
Qt's offscreen platform has no OpenGL here): the manifest, the sample, Train -> Predict ->
Export end to end, Stop and resume, bad choices shown in the widget."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="the napari extra is not installed "
                             "(pip install -e '.[napari]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")
if not os.environ.get("DISPLAY"):
  pytest.skip("no X display: install Xvfb (Debian: xvfb) for pytest-xvfb to start one",
              allow_module_level=True)

from n2v_jax.inference import metrics  # noqa: E402
from n2v_jax.training import trainer  # noqa: E402
from tests.helpers import REPO, tiny_config, write_tiff  # noqa: E402
from tests.omezarr_files import write_ome  # noqa: E402

TIMEOUT_MS = 240_000


def _wait(qtbot, widget):
  qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def _click(qtbot, widget, button):
  button.native.click()
  qtbot.waitUntil(lambda: widget.running or widget.last_error, timeout=10_000)
  _wait(qtbot, widget)


def _dock(viewer, name):
  _, widget = viewer.window.add_plugin_dock_widget("n2v_jax", name)
  return widget


def test_manifest_is_valid_and_napari_finds_its_contributions():
  from npe2 import PluginManager
  r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "npe2"), "validate",
                      "n2v_jax"], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert r.returncode == 0 and "valid" in r.stdout, r.stdout + r.stderr
  pm = PluginManager.instance()
  pm.discover()
  manifest = pm.get_manifest("n2v_jax")  # from the installed package's entry point
  assert {w.display_name for w in manifest.contributions.widgets} == {"Train", "Predict",
                                                                       "Export"}
  assert [s.key for s in manifest.contributions.sample_data] == ["noisy"]


@pytest.fixture
def sample_viewer(make_napari_viewer):
  viewer = make_napari_viewer()
  viewer.open_sample("n2v_jax", "noisy")
  return viewer


def test_train_predict_export_end_to_end(sample_viewer, qtbot, tmp_path):
  viewer = sample_viewer
  assert [l.name for l in viewer.layers] == ["noisy", "clean"]
  train = _dock(viewer, "Train")
  assert train.image.value == "noisy" and train.axes.value == "YX"
  train.workdir.value, train.steps.value = str(tmp_path / "w"), 60
  train.patch.value, train.batch.value = 32, 8
  _click(qtbot, train, train.train_button)
  assert train.last_error == "" and train.summary == {"steps": 60,
                                                       "workdir": str(tmp_path / "w")}
  assert len(train._plot.points["loss"]) >= 5  # the live curve got the logged losses

  predict = _dock(viewer, "Predict")
  predict.model.value, predict.image.value = str(tmp_path / "w"), "noisy"
  _click(qtbot, predict, predict.predict_button)
  assert predict.last_error == ""
  denoised = viewer.layers["noisy (n2v_jax)"]
  clean, noisy = viewer.layers["clean"].data, viewer.layers["noisy"].data
  assert denoised.data.shape == noisy.shape
  assert tuple(denoised.scale) == tuple(viewer.layers["noisy"].scale)
  gain = metrics.psnr(clean, denoised.data, 1.0) - metrics.psnr(clean, noisy, 1.0)
  assert gain > 4.0, gain  # measured: 13.98 -> 21.21 dB after 60 steps

  export = _dock(viewer, "Export")
  export.workdir.value, export.output.value = str(tmp_path / "w"), str(tmp_path / "m.zip")
  export.authors.value = "A Tester"
  _click(qtbot, export, export.export_button)
  assert export.last_error == "" and (tmp_path / "m.zip").exists()
  predict.model.value, predict.package.value = None, str(tmp_path / "m.zip")
  _click(qtbot, predict, predict.predict_button)
  from_package = viewer.layers["noisy (n2v_jax) [1]"].data
  # the package (ONNX Runtime) gives the workdir's result (256 x 256: a size it takes)
  assert np.abs(from_package - denoised.data).max() < 1e-4 * np.ptp(denoised.data)

  # an OME-Zarr image, denoised block by block into a file and opened lazily, pyramid kept
  src = write_ome(tmp_path / "field.ome.zarr", noisy[None], "CYX", (1, 64, 64), names=None)
  predict.model.value, predict.package.value = str(tmp_path / "w"), None
  predict.zarr_input.value, predict.zarr_output.value = src, str(tmp_path / "out.ome.zarr")
  _click(qtbot, predict, predict.predict_button)
  assert predict.last_error == ""
  lazy = viewer.layers["out.ome.zarr"]
  assert lazy.multiscale and len(lazy.data) == 2 and not isinstance(lazy.data[0], np.ndarray)
  np.testing.assert_allclose(np.asarray(lazy.data[0]), denoised.data, rtol=1e-4,
                             atol=1e-4 * np.ptp(denoised.data))
  viewer.layers.remove("out.ome.zarr")
  predict.zarr_input.value = predict.zarr_output.value = None

  # the viewer as a user sees it now: noisy and denoised side by side, Train and Predict
  # (N2V_SCREENSHOT=docs/napari_plugin.png writes the README's picture)
  path = os.environ.get("N2V_SCREENSHOT") or str(tmp_path / "viewer.png")
  viewer.window.remove_dock_widget(export.native)
  viewer.layers.remove("noisy (n2v_jax) [1]")
  viewer.layers["clean"].visible = False
  viewer.grid.enabled = True
  viewer.window.resize(1500, 900)
  viewer.screenshot(path=path, canvas_only=False)
  assert os.path.getsize(path) > 10_000


def test_stop_checkpoints_and_train_resumes(sample_viewer, qtbot, tmp_path):
  viewer = sample_viewer
  train = _dock(viewer, "Train")
  workdir = tmp_path / "w"
  train.workdir.value, train.steps.value = str(workdir), 60
  train.patch.value, train.batch.value = 32, 8
  stops = []
  train.signals.progress.connect(lambda *_: stops or (stops.append(1), train.stop()))
  train.train_button.native.click()
  _wait(qtbot, train)
  stopped = train.summary["stopped_at"]
  assert 0 < stopped < 60 and "Train again to resume" in train.message.value
  train.signals.progress.disconnect()
  train.signals.progress.connect(train._on_progress)
  _click(qtbot, train, train.train_button)
  assert train.summary == {"steps": 60, "workdir": str(workdir)}
  assert any(f"step {stopped}" in line and "Resum" in line for line in train.lines), train.lines
  steps = [json.loads(l)["step"] for l in open(workdir / "metrics.jsonl")]
  assert steps == sorted(set(steps)) and steps[-1] == 60  # one run, continued


def test_bad_choices_are_a_message_and_write_nothing(sample_viewer, qtbot, tmp_path):
  viewer = sample_viewer
  viewer.add_labels(np.zeros((64, 64), np.uint8), name="labels")
  viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="photo", rgb=True)
  viewer.add_image(np.zeros((2, 64, 64), np.float32), name="two channels")
  train = _dock(viewer, "Train")
  train.workdir.value = str(tmp_path / "w")
  for layer, axes, words in [("labels", "YX", "is a Labels layer"),
                             ("photo", "YX", "RGB(A) colour image"),
                             ("noisy", "ZYX", "axes 'ZYX'")]:
    train.image.value, train.axes.value = layer, axes
    train.train_button.native.click()
    assert train.last_error.startswith("error: ") and words in train.last_error, (
        layer, train.last_error)
    assert not train.running
  assert not os.listdir(tmp_path)  # no workdir

  trained = str(tmp_path / "trained")  # a 1-channel model
  trainer.train_and_evaluate(tiny_config(**{"train.num_steps": 2}), trained)
  before = sorted(os.listdir(tmp_path))
  predict = _dock(viewer, "Predict")
  for model, layer, axes, words in [
      (str(tmp_path / "nope"), "noisy", "YX", "not a trained workdir"),
      (trained, "two channels", "CYX", "does not fit the model"),
      (trained, "labels", "YX", "is a Labels layer")]:
    predict.model.value, predict.image.value, predict.axes.value = model, layer, axes
    predict.predict_button.native.click()
    assert predict.last_error.startswith("error: ") and words in predict.last_error, (
        layer, predict.last_error)
  assert sorted(os.listdir(tmp_path)) == before
  assert [l.name for l in viewer.layers] == ["noisy", "clean", "labels", "photo",
                                             "two channels"]


def test_trains_from_a_path_and_care_from_a_target_layer(sample_viewer, qtbot, tmp_path):
  viewer = sample_viewer
  path = write_tiff(tmp_path / "field.tif", viewer.layers["noisy"].data, "YX")
  train = _dock(viewer, "Train")
  train.path.value, train.workdir.value = path, str(tmp_path / "from_path")
  train.steps.value, train.patch.value, train.batch.value = 6, 32, 4
  _click(qtbot, train, train.train_button)
  assert train.last_error == "" and train.summary["steps"] == 6
  config = json.load(open(tmp_path / "from_path" / "config.json"))
  assert config["data"]["path"] == path

  train.path.value, train.workdir.value = None, str(tmp_path / "care")
  train.algorithm.value, train.target.value = "CARE (with a clean target layer)", "clean"
  _click(qtbot, train, train.train_button)
  assert train.last_error == "" and "psnr_denoised" in train.summary  # scored on the target
  config = json.load(open(tmp_path / "care" / "config.json"))
  assert config["algorithm"] == "care" and config["data"]["target_path"].endswith("target.tif")
