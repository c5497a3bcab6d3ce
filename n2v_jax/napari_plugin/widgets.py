"""The dock widgets: Train, Predict, Export.

Each runs its work in a worker thread (napari's `create_worker`), so the viewer stays
responsive, and sends the library's messages and progress through a `reporter.Reporter` of
its own (Qt signals, delivered in the GUI thread). Bad choices (a labels or RGB layer, axes
that do not fit, a model of another channel count) are checked before anything is written
and shown in the widget's message line, as are the library's errors: never a traceback.
Stop asks the training loop to stop as SIGTERM would: it checkpoints the current step, and
the next Train with the same workdir resumes from there.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable

import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, Label, LineEdit,
                              ProgressBar, PushButton, SpinBox)
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from n2v_jax import reporter
from n2v_jax.choices import PAIRED_ALGORITHMS
from n2v_jax.errors import N2VError, one_line
from n2v_jax.inference.options import DEFAULT_TILE, PredictOptions
from n2v_jax.io import omezarr, tiff
from n2v_jax.io.axes import from_canonical, to_canonical, validate_axes
from n2v_jax.preemption import Preemption

# The widget's algorithm -> (the packaged config it starts from, config.algorithm).
ALGORITHM_LABELS = {"N2V": ("default", "n2v"), "N2V2": ("n2v2", "n2v"),
              "structN2V": ("structn2v", "n2v"), "N2N (with a target layer)": ("default", "n2n"),
              "CARE (with a clean target layer)": ("default", "care")}
GUESSED_AXES = {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}
NONE = "(none)"


class _Signals(QObject):
  status = Signal(str)
  progress = Signal(int, int, dict)  # steps done, total, the bar's values (loss, val, ...)


class _WidgetBar(reporter.Bar):
  def __init__(self, signals: _Signals, total: int, initial: int):  # no tqdm
    self._signals, self._n, self._total = signals, initial, total

  def update(self, n: int) -> None:
    self._n += n

  def postfix(self, refresh: bool = True, **values: Any) -> None:
    self._signals.progress.emit(self._n, self._total, dict(values))

  def write(self, line: str) -> None:
    self._signals.status.emit(line)

  def close(self) -> None:
    pass


class WidgetReporter(reporter.Reporter):
  """The library's messages and progress bars as Qt signals (emitted from the worker)."""

  def __init__(self, signals: _Signals):
    self.signals = signals

  def status(self, line: str) -> None:
    self.signals.status.emit(line)

  def warning(self, line: str) -> None:
    self.signals.status.emit(f"warning: {line}")

  def result(self, line: str) -> None:
    self.signals.status.emit(line)

  def progress(self, total: int, initial: int = 0, unit: str = "step",
               enabled: bool = True) -> reporter.Bar:
    return _WidgetBar(self.signals, total, initial)


def _path(widget: FileEdit) -> str:
  text = "" if widget.value is None else str(widget.value)
  return "" if text in ("", ".") else text


def image_data(layer: Any, what: str = "the layer") -> np.ndarray:
  """The pixels of an image layer (level 0 of a multiscale one), refused with a message for
  layers that are not intensity images."""
  import napari
  if not isinstance(layer, napari.layers.Image):
    raise N2VError(f"{layer.name!r} is a {layer.__class__.__name__} layer; choose an image layer "
                   f"for {what}")
  if layer.rgb:
    raise N2VError(f"{layer.name!r} is an RGB(A) colour image; n2v_jax denoises intensity "
                   "channels: open them as a multi-channel image (e.g. a TIFF hyperstack)")
  data = layer.data[0] if layer.multiscale else layer.data
  return np.asarray(data)


class _Base(Container):
  """A column of fields, a message line; work in a worker thread with its messages here."""

  def __init__(self, viewer: Any, widgets: list):
    self.viewer = viewer
    self.message = Label(value="")
    self.progress_bar = ProgressBar(value=0, min=0, max=1, visible=False)
    super().__init__(widgets=[*widgets, self.progress_bar, self.message])
    self.signals = _Signals()
    self.signals.status.connect(self._show)
    self.worker, self.running = None, False  # running: from Train/Predict/Export to its end
    self.lines: list[str] = []  # every message the library sent, for the record
    self.last_error = ""
    for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
      event.connect(lambda *_: self.reset_choices())

  def _layer_names(self, _widget: Any = None) -> list[str]:
    return [layer.name for layer in self.viewer.layers]

  def _optional_layers(self, _widget: Any = None) -> list[str]:
    return [NONE, *self._layer_names()]

  def _show(self, line: str) -> None:
    self.lines.append(line)
    self.message.value = line

  def _error(self, exc: BaseException) -> None:
    self.last_error = f"error: {one_line(exc)}"
    self.message.value = self.last_error
    self._busy(False)

  def _busy(self, busy: bool) -> None:
    pass

  def _start(self, fn: Callable, *args: Any, done: Callable[[Any], None], **kwargs: Any
             ) -> None:
    """fn(*args, **kwargs) in a worker thread, with the library's messages sent here;
    done(result) in the GUI thread; an error becomes the message line."""
    self.last_error = ""
    signals = self.signals

    def work():
      with reporter.use(WidgetReporter(signals)):
        return fn(*args, **kwargs)
    worker = create_worker(work, _ignore_errors=True)
    worker.returned.connect(done)
    worker.errored.connect(self._error)
    worker.finished.connect(self._finished)
    self.worker, self.running = worker, True
    self._busy(True)
    worker.start()

  def _finished(self) -> None:
    self.running = False  # after `returned` or `errored` was handled
    self._busy(False)


class TrainWidget(_Base):
  """Train N2V, N2V2, structN2V (or N2N/CARE with a target layer) on an image layer or on a
  TIFF, folder or OME-Zarr path, into a workdir; Stop checkpoints, Train again resumes."""

  def __init__(self, napari_viewer: Any):
    self.viewer = napari_viewer  # before the fields: their choices list its layers
    self.image = ComboBox(label="image", choices=self._layer_names)
    self.path = FileEdit(label="or path", mode="r", nullable=True)
    self.axes = LineEdit(label="axes", value="")
    self.algorithm = ComboBox(label="algorithm", choices=list(ALGORITHM_LABELS), value="N2V")
    self.target = ComboBox(label="target", choices=self._optional_layers)
    self.steps = SpinBox(label="steps", value=300, min=1, max=10_000_000)
    self.patch = SpinBox(label="patch size", value=64, min=8, max=1024, step=8)
    self.batch = SpinBox(label="batch size", value=16, min=1, max=4096)
    self.workdir = FileEdit(label="workdir", mode="d")
    self.train_button = PushButton(text="Train")
    self.stop_button = PushButton(text="Stop", enabled=False)
    super().__init__(napari_viewer, [self.image, self.path, self.axes, self.algorithm,
                                     self.target, self.steps, self.patch, self.batch,
                                     self.workdir, self.train_button, self.stop_button])
    self._plot = _LossPlot()
    self.native.layout().addWidget(self._plot.canvas)
    self.image.changed.connect(self._guess_axes)
    self.train_button.clicked.connect(self.train)
    self.stop_button.clicked.connect(self.stop)
    self.signals.progress.connect(self._on_progress)
    self.preemption: Preemption | None = None
    self.summary: dict | None = None
    self._guess_axes()

  def _guess_axes(self, *_: Any) -> None:
    if self.image.value:  # a guess, editable
      self.axes.value = GUESSED_AXES.get(self.viewer.layers[self.image.value].ndim, "")

  def _busy(self, busy: bool) -> None:
    self.train_button.enabled, self.stop_button.enabled = not busy, busy
    self.progress_bar.visible = busy or self.progress_bar.value > 0

  def _on_progress(self, done: int, total: int, values: dict) -> None:
    self.progress_bar.max, self.progress_bar.value = total, done
    self._plot.add(done, values)
    self.message.value = f"step {done}/{total}: " + ", ".join(f"{k} {v}"
                                                              for k, v in values.items())

  def config(self):
    """The run's config from the fields (validated, nothing written)."""
    from importlib import import_module

    from n2v_jax.training import config as config_lib
    module, algorithm = ALGORITHM_LABELS[self.algorithm.value]
    config = import_module(f"n2v_jax.configs.{module}").get_config()
    config.algorithm = algorithm
    steps = int(self.steps.value)
    config.train.num_steps, config.train.batch_size = steps, int(self.batch.value)
    config.train.log_every = max(1, min(config.train.log_every, steps // 20))
    config.train.eval_every = 2 * config.train.log_every
    config.train.checkpoint_every = max(config.train.log_every, steps // 2)
    config.opt.warmup_steps = min(config.opt.warmup_steps, max(0, steps // 10))
    config.train.progress, config.train.cpu_devices = True, 1  # the GUI's bar; no split
    config.train.tensorboard = True
    config.data.axes = validate_axes(self.axes.value) if self.axes.value else ""
    spatial = 3 if "Z" in config.data.axes else 2
    config.data.patch_shape = (int(self.patch.value),) * spatial
    config_lib.validate(config)
    return config

  def _inputs(self, config) -> list[tuple[str, np.ndarray, str]]:
    """[(config field, pixels, axes)] of the layers to train on, checked; [] for a path."""
    if _path(self.path):
      config.data.path = _path(self.path)
      if config.algorithm in PAIRED_ALGORITHMS:
        raise N2VError(f"{config.algorithm}: give the targets as a layer, or train from the "
                       "command line with --config.data.target_path")
      return []
    if not self.image.value:
      raise N2VError("no image: add an image layer (or File > Open Sample > n2v_jax), or give "
                     "a path")
    layer = self.viewer.layers[self.image.value]
    data = image_data(layer, "training")
    axes = validate_axes(config.data.axes or GUESSED_AXES.get(data.ndim, ""), data.ndim)
    sizes = [data.shape[axes.index(a)] for a in axes if a in "ZYX"]
    config.data.patch_shape = (int(self.patch.value),) * len(sizes)
    if any(s < p for s, p in zip(sizes, config.data.patch_shape)):
      raise N2VError(f"{layer.name!r}: {axes} size {tuple(sizes)} is smaller than the patch "
                     f"{tuple(config.data.patch_shape)}; choose a smaller patch size")
    out = [("path", data, axes)]
    if config.algorithm in PAIRED_ALGORITHMS:
      if self.target.value in (None, NONE):
        raise N2VError(f"{self.algorithm.value}: choose the target layer")
      target = image_data(self.viewer.layers[self.target.value], "the target")
      if target.shape != data.shape:
        raise N2VError(f"target {self.target.value!r} has shape {target.shape}, the image "
                       f"{data.shape}; they must match pixel for pixel")
      out.append(("target_path", target, axes))
    return out

  def train(self) -> None:
    try:
      workdir = _path(self.workdir)
      if not workdir:
        raise N2VError("choose a workdir (a new folder, or one to resume)")
      config = self.config()
      inputs = self._inputs(config)
      for field, data, axes in inputs:  # kept in the workdir: resume and export read them
        path = os.path.join(workdir, "data", {"path": "input.tif"}.get(field, "target.tif"))
        _keep(path, data, axes)
        config.data[field], config.data.axes = path, axes
    except (N2VError, OSError) as e:
      self._error(e)
      return
    from n2v_jax.training import trainer
    self.preemption, self.summary = Preemption(), None  # not entered: Stop sets it
    self._plot.clear()
    self.progress_bar.value = 0
    self._start(trainer.train_and_evaluate, config, workdir, None, None, self.preemption,
                done=self._trained)

  def _trained(self, summary: dict) -> None:
    self.summary = summary
    if "stopped_at" in summary:
      self.message.value = (f"stopped at step {summary['stopped_at']} (checkpointed); Train "
                            "again to resume")
    elif "psnr_denoised" in summary:
      self.message.value = (f"done: PSNR {summary['psnr_noisy']:.2f} -> "
                            f"{summary['psnr_denoised']:.2f} dB")
    else:
      self.message.value = f"done: {summary.get('steps')} steps in {summary.get('workdir')}"

  def stop(self) -> None:
    if self.preemption is not None and self.running:
      self.preemption.signum = signal.SIGINT
      self.message.value = "stopping after the current step..."


def _keep(path: str, data: np.ndarray, axes: str) -> None:
  """The layer's pixels as a TIFF in the workdir: written once; a later Train must find the
  same pixels there (resuming on another image would mix two runs)."""
  if os.path.exists(path):
    kept = tiff.read_image(path)
    if kept.axes != axes or not np.array_equal(kept.data, data):
      raise N2VError(f"{path}: this workdir was trained on other pixels; choose a new workdir")
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tiff.write_image(path, data, axes)


class _LossPlot:
  def __init__(self):
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure
    self.figure = Figure(figsize=(3.5, 2.2), tight_layout=True)
    self.canvas = FigureCanvasQTAgg(self.figure)
    self.canvas.setMinimumHeight(150)
    self.axes = self.figure.add_subplot()
    self.clear()

  def clear(self) -> None:
    self.points: dict[str, list[tuple[int, float]]] = {}
    self._draw()

  def add(self, step: int, values: dict) -> None:
    for key in ("loss", "val"):
      if key in values:
        self.points.setdefault(key, []).append((step, float(values[key])))
    self._draw()

  def _draw(self) -> None:
    ax = self.axes
    ax.clear()
    for key, pts in self.points.items():
      ax.plot(*zip(*pts), label="training" if key == "loss" else "validation")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.tick_params(labelsize=7)
    if self.points:
      ax.legend(fontsize=7)
    self.canvas.draw_idle()


class PredictWidget(_Base):
  """Denoise an image layer with a trained workdir or an exported bioimage.io package; or an
  OME-Zarr image or plate, block by block, into an output opened lazily."""

  def __init__(self, napari_viewer: Any):
    self.viewer = napari_viewer  # before the fields: their choices list its layers
    self.model = FileEdit(label="workdir", mode="d", nullable=True)
    self.package = FileEdit(label="or package", mode="r", filter="*.zip", nullable=True)
    self.image = ComboBox(label="image", choices=self._layer_names)
    self.axes = LineEdit(label="axes", value="")
    self.zarr_input = FileEdit(label="or OME-Zarr", mode="d", nullable=True)
    self.zarr_output = FileEdit(label="output", mode="w", nullable=True)
    self.tile = SpinBox(label="tile", value=DEFAULT_TILE, min=0, max=1 << 16)
    self.tta = CheckBox(label="TTA", value=False)
    self.blend = ComboBox(label="blend", choices=["auto", "on", "off"], value="auto")
    self.predict_button = PushButton(text="Predict")
    super().__init__(napari_viewer, [self.model, self.package, self.image, self.axes,
                                     self.zarr_input, self.zarr_output, self.tile, self.tta,
                                     self.blend, self.predict_button])
    self.predict_button.clicked.connect(self.predict)
    self.image.changed.connect(self._guess_axes)
    self.result_layer = None
    self._guess_axes()

  def _guess_axes(self, *_: Any) -> None:
    if self.image.value:
      self.axes.value = GUESSED_AXES.get(self.viewer.layers[self.image.value].ndim, "")

  def _busy(self, busy: bool) -> None:
    self.predict_button.enabled = not busy

  def options(self) -> PredictOptions:
    return PredictOptions(tile=int(self.tile.value), tta=bool(self.tta.value),
                          blend={"auto": None, "on": True, "off": False}[self.blend.value])

  def predict(self) -> None:
    try:
      if _path(self.zarr_input):
        self._predict_zarr()
      else:
        self._predict_layer()
    except (N2VError, OSError) as e:
      self._error(e)

  def _model(self):
    """(predictor or package model, its ModelMeta), loaded in the worker; the meta now."""
    from n2v_jax.bioimage import runner
    from n2v_jax.workdir.model_meta import ModelMeta
    if _path(self.package):
      model = runner.PackageModel(_path(self.package))
      return (lambda: model), model.meta
    workdir = _path(self.model)
    if not workdir:
      raise N2VError("choose a trained workdir (or an exported .zip package)")
    meta = ModelMeta.read(workdir)
    from n2v_jax.inference import predictor
    return (lambda: predictor.load_predictor(workdir)), meta

  def _predict_layer(self) -> None:
    if not self.image.value:
      raise N2VError("no image: add an image layer first")
    layer = self.viewer.layers[self.image.value]
    data = image_data(layer, "denoising")
    axes = validate_axes(self.axes.value or GUESSED_AXES.get(data.ndim, ""), data.ndim)
    load, meta = self._model()
    array, spatial = to_canonical(data, axes)
    if spatial != meta.spatial_axes or array.shape[-1] != meta.in_channels:
      raise N2VError(f"{layer.name!r} ({axes}, {array.shape[-1]} channel(s)) does not fit the "
                     f"model: it was trained on {meta.spatial_axes} data with "
                     f"{meta.in_channels} channel(s)")
    options = self.options()

    def work():
      from n2v_jax.inference import predictor
      model = load()
      if hasattr(model, "predict"):  # a package: ONNX Runtime
        out = np.stack([model.predict(s) for s in array])
      else:
        predictor.check_input(model, layer.name, array, spatial)
        out = np.stack([predictor.predict_image(model, s.astype(np.float32), options)
                        for s in array])
      return from_canonical(out, axes, data.shape)

    def done(out: np.ndarray) -> None:
      self.result_layer = self.viewer.add_image(
          out, name=f"{layer.name} (n2v_jax)", scale=layer.scale, translate=layer.translate,
          colormap=layer.colormap.name)
      self.message.value = f"denoised {layer.name!r}"
    self.message.value = f"denoising {layer.name!r}..."
    self._start(work, done=done)

  def _predict_zarr(self) -> None:
    from n2v_jax.inference import paths
    if _path(self.package):
      raise N2VError("an OME-Zarr input is denoised with a workdir (block by block); a "
                     "package predicts layers")
    workdir, source, out = _path(self.model), _path(self.zarr_input), _path(self.zarr_output)
    if not workdir or not out:
      raise N2VError("choose the workdir and an output (.ome.zarr) for the OME-Zarr input")
    options = self.options()

    def done(summary) -> None:
      for image_path in summary.outputs:
        self.result_layer = open_lazily(self.viewer, image_path)
      self.message.value = f"wrote {out}"
    self.message.value = f"denoising {source} block by block..."
    self._start(paths.predict_path, workdir, source, out, options, done=done)


def open_lazily(viewer: Any, path: str) -> Any:
  """An OME-Zarr image as a (multiscale) layer read chunk by chunk, with its scale."""
  import dask.array as da
  import zarr
  image = omezarr.open_image(path)
  group = zarr.open_group(image.path, mode="r")
  levels = [da.from_zarr(group[d["path"]]) for d in image.multiscale["datasets"]]
  scale = [1.0] * len(image.axes)
  for t in image.multiscale["datasets"][0].get("coordinateTransformations", []):
    if t.get("type") == "scale":
      scale = [float(s) for s in t["scale"]]
  kwargs = {}
  if "C" in image.axes:
    c = image.axes.index("C")
    kwargs["channel_axis"] = c
    scale = scale[:c] + scale[c + 1:]
  return viewer.add_image(levels if len(levels) > 1 else levels[0], multiscale=len(levels) > 1,
                          name=os.path.basename(path.rstrip("/")), scale=scale, **kwargs)


class ExportWidget(_Base):
  """Write the bioimage.io package (ONNX weights, rdf.yaml, test tensors) of a workdir."""

  def __init__(self, napari_viewer: Any):
    self.viewer = napari_viewer  # before the fields: their choices list its layers
    self.workdir = FileEdit(label="workdir", mode="d")
    self.output = FileEdit(label="package", mode="w", filter="*.zip")
    self.model_name = LineEdit(label="name", value="")
    self.authors = LineEdit(label="authors", value="")
    self.overwrite = CheckBox(label="overwrite", value=False)
    self.export_button = PushButton(text="Export")
    super().__init__(napari_viewer, [self.workdir, self.output, self.model_name, self.authors,
                                     self.overwrite, self.export_button])
    self.export_button.clicked.connect(self.export)
    self.result: dict | None = None

  def _busy(self, busy: bool) -> None:
    self.export_button.enabled = not busy

  def export(self) -> None:
    from n2v_jax.bioimage import package
    workdir, output = _path(self.workdir), _path(self.output)
    if not workdir or not output:
      self._error(N2VError("choose the trained workdir and the package's .zip"))
      return
    authors = [a.strip() for a in self.authors.value.split(",") if a.strip()]

    def done(result: dict) -> None:
      self.result = result
      self.message.value = (f"wrote {result['output']} (ONNX vs n2v_jax: "
                            f"{result['relative']:.1e} of the output range)")
    self.message.value = "exporting..."
    self._start(package.export_bioimageio, workdir, output, self.model_name.value or None,
                authors, overwrite=bool(self.overwrite.value), done=done)
