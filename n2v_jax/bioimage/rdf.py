"""The package's description, rdf.yaml (bioimage.io model description format 0.5): what
the tensors are, the processing around the ONNX graph, the sizes a consumer may use, the
citations."""

import datetime
import hashlib
import os
import re

from n2v_jax.bioimage import weights
from n2v_jax.errors import N2VError
from n2v_jax.inference import predictor
from n2v_jax.workdir.model_meta import ModelMeta

# The newest model description format that the pinned validator (bioimageio.spec) knows.
FORMAT_VERSION = "0.5.12"
DEFAULT_LICENSE = "CC-BY-4.0"
# What consumers on other hardware may differ by: 0.1 % of the test output's range (GPU
# convolutions, e.g. TF32, differ from CPU float32 by about that); measured on CPU ~1e-6.
TOLERANCE_OF_RANGE = 1e-3

CITATIONS = {
    "n2v": {"text": "Krull, A., Buchholz, T.-O., Jug, F. Noise2Void - Learning Denoising from "
                    "Single Noisy Images. CVPR 2019, 2129-2137.",
            "doi": "10.1109/CVPR.2019.00223"},
    "n2v2": {"text": "Hoeck, E., Buchholz, T.-O., Brachmann, A., Jug, F., Freytag, A. N2V2 - "
                     "Fixing Noise2Void Checkerboard Artifacts with Modified Sampling Strategies "
                     "and a Tweaked Network Architecture. ECCV 2022 Workshops (BIC).",
             "doi": "10.48550/arXiv.2211.08512"},
    "n2n": {"text": "Lehtinen, J., Munkberg, J., Hasselgren, J., Laine, S., Karras, T., "
                    "Aittala, M., Aila, T. Noise2Noise: Learning Image Restoration without Clean "
                    "Data. ICML 2018.", "doi": "10.48550/arXiv.1803.04189"},
    "care": {"text": "Weigert, M. et al. Content-aware image restoration: pushing the limits of "
                     "fluorescence microscopy. Nature Methods 15, 1090-1097 (2018).",
             "doi": "10.1038/s41592-018-0216-7"},
}
METHOD_NAMES = {"n2v": "Noise2Void", "n2n": "Noise2Noise", "care": "CARE"}
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_+\- ()]")


def method_name(meta: ModelMeta) -> str:
  name = METHOD_NAMES[meta.algorithm]
  return name + (" (N2V2 U-Net)" if meta.n2v2 else "")


def citations(meta: ModelMeta) -> list[dict]:
  """The method's paper, and N2V2's when the network is N2V2's."""
  cites = [CITATIONS[meta.algorithm]]
  if meta.n2v2:
    cites.append(CITATIONS["n2v2"])
  return cites


def check_name(name: str) -> str:
  if not 5 <= len(name) <= 128 or _NAME_CHARS.search(name):
    raise N2VError(f"--name {name!r}: bioimage.io names are 5-128 characters of letters, "
                   "digits, spaces and _ + - ( )")
  return name


def default_name(workdir: str, meta: ModelMeta) -> str:
  base = _NAME_CHARS.sub("_", os.path.basename(os.path.normpath(workdir)))
  return f"{METHOD_NAMES[meta.algorithm]} denoising {base}"[:64].rstrip()


def size_constraints(pred: predictor.Predictor) -> tuple[int, int, int]:
  """(step, min, halo) of every spatial axis: sizes are multiples of 2**depth (the
  pooling), at least one step beyond twice the receptive-field halo (which a tile's
  consumer crops from each side)."""
  step, halo = pred.divisor, pred.halo
  return step, 2 * halo + step, halo


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def tensor_axes(meta: ModelMeta, constraints: tuple[int, int, int], output: bool) -> list[dict]:
  step, min_size, halo = constraints
  axes = [{"type": "batch"}, {"type": "channel", "channel_names": meta.channel_labels()}]
  for a in meta.spatial_axes.lower():
    if output:  # same size as the input; `halo` pixels of each side see the image border
      axes.append({"type": "space", "id": a, "size": {"tensor_id": "input", "axis_id": a},
                   "halo": halo})
    else:
      axes.append({"type": "space", "id": a, "size": {"min": min_size, "step": step}})
  return axes


def processing(pred: predictor.Predictor) -> tuple[list[dict], list[dict]]:
  """(preprocessing, postprocessing) around the ONNX graph; empty where the graph does it."""
  pre = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
  post = []
  if pred.transform == "none":
    mean, std = [float(m) for m in pred.mean], [float(s) for s in pred.std]
    pre.append({"id": "fixed_zero_mean_unit_variance",
                "kwargs": {"axis": "channel", "mean": mean, "std": std}})
    post.append({"id": "scale_linear", "kwargs": {"axis": "channel", "gain": std,
                                                  "offset": mean}})
  post.append({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}})
  return pre, post


def describe(pred: predictor.Predictor, name: str, authors: list[str], license_id: str,
             paths: dict, tolerance: float, config: dict) -> dict:
  """The rdf.yaml content (model description format 0.5)."""
  meta, nd = pred.meta, len(pred.spatial_axes)
  constraints = size_constraints(pred)
  pre, post = processing(pred)
  entry = lambda key: {"source": os.path.basename(paths[key]), "sha256": _sha256(paths[key])}
  intensity_note = ("raw data units (normalized by the preprocessing)" if pred.transform == "none"
                    else "raw photon counts >= 0 (the Anscombe transform and normalization "
                         "are inside the ONNX graph)")
  return {
      "format_version": FORMAT_VERSION,
      "type": "model",
      "name": name,
      "description": (f"{method_name(meta)} denoiser for {nd}D {meta.in_channels}-channel "
                      f"images, trained with n2v_jax. Input: {intensity_note}; output: the "
                      "denoised image in the same units."),
      "authors": [{"name": a} for a in authors],
      "cite": citations(meta),
      "license": license_id,
      "tags": ["denoising", meta.algorithm, "n2v_jax", "unet", f"{nd}d", "onnx"]
              + (["n2v2"] if meta.n2v2 else []),
      "documentation": {"source": "README.md"},
      "covers": [{"source": "cover.png"}],
      "attachments": [{"source": "config.json"}, {"source": "model.json"}],
      "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "inputs": [{
          "id": "input",
          "description": f"noisy image, {intensity_note}",
          "axes": tensor_axes(meta, constraints, output=False),
          "test_tensor": entry("test_input"),
          "sample_tensor": entry("sample_input"),
          "data": {"type": "float32"},
          # How a consumer fills the halo it adds around an image or a block at the image's
          # border: n2v_jax reflects without repeating the edge pixel (inference.tiling),
          # while bioimageio.core's default, 'symmetric', repeats it and changes the
          # output near every border.
          "pad": {"mode": "reflect"},
          "preprocessing": pre,
      }],
      "outputs": [{
          "id": "output",
          "description": "denoised image, in the input's units",
          "axes": tensor_axes(meta, constraints, output=True),
          "test_tensor": entry("test_output"),
          "sample_tensor": entry("sample_output"),
          "data": {"type": "float32"},
          "postprocessing": post,
      }],
      "weights": {"onnx": {**entry("weights"), "opset_version": weights.OPSET}},
      "config": {
          "bioimageio": {"reproducibility_tolerance": [{
              "absolute_tolerance": tolerance, "relative_tolerance": TOLERANCE_OF_RANGE,
              "mismatched_elements_per_million": 100}]},
          "n2v_jax": {"algorithm": meta.algorithm, "model": meta.model,
                      "spatial_axes": meta.spatial_axes, "transform": meta.transform,
                      "normalization": meta.normalization, "train_steps":
                      config.get("train", {}).get("num_steps")},
      },
  }


def to_yaml(content: dict) -> str:
  import yaml

  class Plain(yaml.SafeDumper):  # no &id001 anchors where a list appears twice
    def ignore_aliases(self, data):
      return True
  return yaml.dump(content, Dumper=Plain, sort_keys=False, allow_unicode=True)
