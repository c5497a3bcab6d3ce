"""Running a package n2v_jax exported, from the zip alone (rdf.yaml, the ONNX weights,
model.json): what a consumer computes, for those who have the package but not the workdir
(the napari plugin's Predict widget). ONNX Runtime, on the CPU."""

import json
import zipfile

import numpy as np

from n2v_jax.errors import N2VError, NotFoundError
from n2v_jax.workdir.model_meta import MODEL_JSON, ModelMeta


class PackageModel:
  """A bioimage.io zip exported by n2v_jax: `predict(image)` on (*spatial, C) raw data."""

  def __init__(self, zip_path: str):
    import onnxruntime
    import yaml
    try:
      with zipfile.ZipFile(zip_path) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        meta_json = json.loads(z.read(MODEL_JSON))
        weights = z.read(rdf["weights"]["onnx"]["source"])
    except FileNotFoundError:
      raise NotFoundError(f"{zip_path}: no such file") from None
    except (zipfile.BadZipFile, KeyError, TypeError, ValueError) as e:
      raise N2VError(f"{zip_path}: not a bioimage.io package exported by n2v_jax "
                     f"({type(e).__name__}: {e})") from None
    self.path = zip_path
    self.meta = ModelMeta.from_json(meta_json, f"{zip_path}:{MODEL_JSON}")
    self.inputs, self.outputs = rdf["inputs"][0], rdf["outputs"][0]
    sizes = [a["size"] for a in self.inputs["axes"] if a["type"] == "space"]
    self.step, self.min_size = int(sizes[0]["step"]), int(sizes[0]["min"])
    self._session = onnxruntime.InferenceSession(weights, providers=["CPUExecutionProvider"])

  spatial_axes = property(lambda self: self.meta.spatial_axes)
  in_channels = property(lambda self: self.meta.in_channels)

  def _per_channel(self, values, ndim: int) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(1, -1, *[1] * (ndim - 2))

  def predict(self, image: np.ndarray) -> np.ndarray:
    """(*spatial, C) raw -> (*spatial, C) denoised float32: the rdf's preprocessing, the graph
    on the image reflect-padded up to a size it takes, the postprocessing, cropped back."""
    x = np.moveaxis(np.asarray(image, np.float32), -1, 0)[None]
    for step in self.inputs.get("preprocessing", []):
      if step["id"] == "fixed_zero_mean_unit_variance":
        x = (x - self._per_channel(step["kwargs"]["mean"], x.ndim)) / self._per_channel(
            step["kwargs"]["std"], x.ndim)
    spatial = x.shape[2:]
    target = [max(self.min_size, -(-s // self.step) * self.step) for s in spatial]
    pads = [(0, 0), (0, 0)] + [(0, t - s) for s, t in zip(spatial, target)]
    mode = self.inputs.get("pad", {}).get("mode", "reflect")
    x = np.pad(x, pads, mode=mode if all(s > 1 for s in spatial) else "edge")
    y = self._session.run(None, {self._session.get_inputs()[0].name: x})[0]
    for step in self.outputs.get("postprocessing", []):
      if step["id"] == "scale_linear":
        y = y * self._per_channel(step["kwargs"]["gain"], y.ndim) + self._per_channel(
            step["kwargs"]["offset"], y.ndim)
    y = y[(0, slice(None), *[slice(0, s) for s in spatial])]
    return np.ascontiguousarray(np.moveaxis(y, 0, -1), np.float32)

