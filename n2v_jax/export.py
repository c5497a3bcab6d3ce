"""bioimage.io model packages: `python -m n2v_jax.export --workdir DIR --output MODEL.zip`.

A trained workdir becomes one zip that Fiji/deepImageJ, napari (bioimage.io plugin) and
`bioimageio.core` run without n2v_jax: `rdf.yaml` (model description format 0.5), ONNX
weights (`onnx_export`), a test input with n2v_jax's own prediction of it, a before/after
cover, a README with the citations, and the run's config.json and model.json.

Intensities: with `data.transform=none` the network works on normalized values and the
package says so in bioimage.io terms (`fixed_zero_mean_unit_variance` with the stored
per-channel values before, `scale_linear` back to data units after). The format has no
Anscombe step, so an Anscombe model carries its whole intensity mapping (transform,
normalization and their inverses) inside the ONNX graph: raw counts in, counts out.

The workdir is read as prediction reads it (inference.load_predictor: JSON + orbax); no
code from it runs. The zip is written to a temporary file and renamed into place.
"""

import datetime
import hashlib
import os
import re
import sys
import tempfile
import zipfile

import ml_collections
import numpy as np
import tifffile

from n2v_jax import checkpoint, cluster, config_lib, inference, onnx_export, report, sources
from n2v_jax import tiff_io

# The newest model description format that the pinned validator (bioimageio.spec) knows.
FORMAT_VERSION = "0.5.12"
DEFAULT_LICENSE = "CC-BY-4.0"
# Test-input edge (pixels per spatial axis), kept small so the package stays small.
TEST_EDGE = {2: 256, 3: 64}
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


def method_name(meta: dict) -> str:
  name = METHOD_NAMES[meta["algorithm"]]
  return name + (" (N2V2 U-Net)" if meta["model"]["n2v2"] else "")


def citations(meta: dict) -> list[dict]:
  """The method's paper, and N2V2's when the network is N2V2's."""
  cites = [CITATIONS[meta["algorithm"]]]
  if meta["model"]["n2v2"]:
    cites.append(CITATIONS["n2v2"])
  return cites


def check_name(name: str) -> str:
  if not 5 <= len(name) <= 128 or _NAME_CHARS.search(name):
    raise ValueError(f"--name {name!r}: bioimage.io names are 5-128 characters of letters, "
                     "digits, spaces and _ + - ( )")
  return name


def default_name(workdir: str, meta: dict) -> str:
  base = _NAME_CHARS.sub("_", os.path.basename(os.path.normpath(workdir)))
  return f"{METHOD_NAMES[meta['algorithm']]} denoising {base}"[:64].rstrip()


# ------------------------------------------------------------------ sizes and test image


def size_constraints(pred: inference.Predictor) -> tuple[int, int, int]:
  """(step, min, halo) of every spatial axis: sizes are multiples of 2**depth (the
  pooling), at least one step beyond twice the receptive-field halo (which a tile's
  consumer crops from each side)."""
  step, halo = pred.divisor, pred.halo
  return step, 2 * halo + step, halo


def _read_image(path: str, axes: str | None) -> np.ndarray:
  """The first sample (S/T index 0) of a TIFF or .npy as (*spatial, C) float32."""
  if path.endswith(".npy"):
    data, axes = tiff_io.open_npy(path, axes)
  else:
    img = tiff_io.read_image(path, axes)
    data, axes = img.data, img.axes
  array, _ = tiff_io.to_canonical(data, axes)
  return np.asarray(array[0], np.float32)


def training_region(workdir: str, edge: int) -> np.ndarray:
  """A centred region (at most `edge` per axis) of the first training sample, read as
  training read it (from config.json: data.path, or the built-in synthetic image)."""
  config = config_lib.with_added_fields(checkpoint.read_json(os.path.join(workdir, "config.json")))
  data_cfg = ml_collections.ConfigDict(config["data"])
  if not data_cfg.path and data_cfg.axes:
    raise ValueError(f"{workdir} was trained on a NumPy array, which the workdir does not keep; "
                     "give a test image with --test_input")
  try:
    source = sources.open_source(data_cfg, config["seed"])
  except FileNotFoundError as e:
    raise FileNotFoundError(f"the training data is not there any more ({e}); give a test "
                            "image with --test_input") from None
  size = np.minimum(source.sizes[0], edge)
  return source.read(0, (source.sizes[0] - size) // 2, size)


def choose_test_input(pred: inference.Predictor, workdir: str,
                      test_input: str | np.ndarray | None, test_axes: str | None) -> np.ndarray:
  """The package's test input (*spatial, C) float32: per axis, the centred largest multiple
  of the divisor, at most TEST_EDGE (or the minimum size); reflect-padded up to the minimum
  size where the image is smaller."""
  nd = len(pred.spatial_axes)
  step, min_size, _ = size_constraints(pred)
  edge = max(TEST_EDGE[nd] // step * step, min_size)
  if test_input is None:
    image = training_region(workdir, edge)
  else:
    name = test_input if isinstance(test_input, str) else "the test input"
    image = (_read_image(test_input, test_axes) if isinstance(test_input, str)
             else np.asarray(test_input, np.float32))
    if image.ndim != nd + 1:
      raise ValueError(f"{name}: shape {image.shape}, expected (*{pred.spatial_axes}, C) for "
                       f"this {nd}D model")
    inference.check_input(pred, name, image, pred.spatial_axes)
  spatial = image.shape[:-1]
  target = [min(max(s // step * step, min_size), edge) for s in spatial]
  kept = [min(s, t) for s, t in zip(spatial, target)]
  image = image[tuple(slice((s - k) // 2, (s - k) // 2 + k) for s, k in zip(spatial, kept))]
  pads = [(0, t - k) for t, k in zip(target, kept)] + [(0, 0)]
  return np.ascontiguousarray(np.pad(image, pads, mode="reflect"), np.float32)


# ------------------------------------------------------------------ the description


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def channel_names(meta: dict) -> list[str]:
  return list(meta.get("channel_names") or [f"channel{i}" for i in range(meta["in_channels"])])


def tensor_axes(meta: dict, constraints: tuple[int, int, int], output: bool) -> list[dict]:
  step, min_size, halo = constraints
  axes = [{"type": "batch"}, {"type": "channel", "channel_names": channel_names(meta)}]
  for a in meta["spatial_axes"].lower():
    if output:  # same size as the input; `halo` pixels of each side see the image border
      axes.append({"type": "space", "id": a, "size": {"tensor_id": "input", "axis_id": a},
                   "halo": halo})
    else:
      axes.append({"type": "space", "id": a, "size": {"min": min_size, "step": step}})
  return axes


def processing(pred: inference.Predictor) -> tuple[list[dict], list[dict]]:
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


def describe(pred: inference.Predictor, name: str, authors: list[str], license_id: str,
             files: dict, tolerance: float, config: dict) -> dict:
  """The rdf.yaml content (model description format 0.5)."""
  meta, nd = pred.meta, len(pred.spatial_axes)
  constraints = size_constraints(pred)
  pre, post = processing(pred)
  entry = lambda key: {"source": os.path.basename(files[key]), "sha256": _sha256(files[key])}
  intensity_note = ("raw data units (normalized by the preprocessing)" if pred.transform == "none"
                    else "raw photon counts >= 0 (the Anscombe transform and normalization "
                         "are inside the ONNX graph)")
  return {
      "format_version": FORMAT_VERSION,
      "type": "model",
      "name": name,
      "description": (f"{method_name(meta)} denoiser for {nd}D {meta['in_channels']}-channel "
                      f"images, trained with n2v_jax. Input: {intensity_note}; output: the "
                      "denoised image in the same units."),
      "authors": [{"name": a} for a in authors],
      "cite": citations(meta),
      "license": license_id,
      "tags": ["denoising", meta["algorithm"], "n2v_jax", "unet", f"{nd}d", "onnx"]
              + (["n2v2"] if meta["model"]["n2v2"] else []),
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
      "weights": {"onnx": {**entry("weights"), "opset_version": onnx_export.OPSET}},
      "config": {
          "bioimageio": {"reproducibility_tolerance": [{
              "absolute_tolerance": tolerance, "relative_tolerance": TOLERANCE_OF_RANGE,
              "mismatched_elements_per_million": 100}]},
          "n2v_jax": {"algorithm": meta["algorithm"], "model": meta["model"],
                      "spatial_axes": meta["spatial_axes"], "transform": meta["transform"],
                      "normalization": meta["normalization"], "train_steps":
                      config.get("train", {}).get("num_steps")},
      },
  }


def readme(pred: inference.Predictor, name: str, config: dict, summary: dict | None,
           check: dict) -> str:
  """The package's README.md: what goes in and out, how it was trained and checked, how to
  run it, what to cite."""
  meta, nd = pred.meta, len(pred.spatial_axes)
  step, min_size, halo = size_constraints(pred)
  axes = "batch, channel, " + ", ".join(meta["spatial_axes"].lower())
  if pred.transform == "none":
    units = (f"Raw intensities in the training data's units. The package's preprocessing "
             f"normalizes each channel with the training statistics ({meta['normalization']}: "
             f"offset {np.round(pred.mean, 6).tolist()}, scale {np.round(pred.std, 6).tolist()}) "
             "and its postprocessing maps the result back.")
  else:
    units = ("Raw photon counts (>= 0; negative values count as 0). The model was trained "
             "after the Anscombe transform 2*sqrt(x + 3/8); that transform, the per-channel "
             "normalization and their inverses are inside the ONNX graph, so the package has "
             "no normalization step of its own.")
  train = config.get("train", {})
  data = config.get("data", {})
  psnr = (f"On the training data's ground truth: PSNR {summary['psnr_noisy']:.2f} dB (noisy) -> "
          f"{summary['psnr_denoised']:.2f} dB (denoised)." if summary and "psnr_denoised" in summary
          else "No ground truth was given in training, so no PSNR was measured; compare "
               "before/after on your own data.")
  cites = "\n".join(f"- {c['text']} https://doi.org/{c['doi']}" for c in citations(meta))
  return f"""# {name}

{method_name(meta)} denoising of {nd}D images with {meta['in_channels']} channel(s)
({', '.join(channel_names(meta))}), trained with n2v_jax (Noise2Void in JAX/Flax) and
exported to ONNX.

## Input and output

- Axes: {axes} (float32; other types are cast).
- Size: every spatial axis a multiple of {step}, at least {min_size}. The network sees
  {halo} pixels around each output pixel: when tiling, overlap tiles by {halo} pixels on
  each side and keep their centres (the `halo` of the output axes).
- Intensities: {units}
- Output: the denoised image, same shape, in the input's units.

## Training

{meta['algorithm']} on {data.get('path') or 'the built-in synthetic image'}:
{train.get('num_steps')} steps of {train.get('batch_size')} patches of {meta['patch_shape']};
U-Net depth {meta['model']['depth']}, {meta['model']['features']} features,
{'N2V2 (MaxBlurPool, no top skip)' if meta['model']['n2v2'] else 'N2V'} architecture. The full
configuration is attached as `config.json`; `model.json` holds what prediction needs.
This package holds the network alone: n2v_jax's optional SURE blend with the noisy input
(`predict --blend`) is not part of it.

## Validation

{psnr}
The ONNX weights reproduce n2v_jax's own prediction of the test input (`test_input.npy` ->
`test_output.npy`) to {check['relative']:.1e} of the output's range (max |difference|
{check['max_abs']:.3g}, ONNX Runtime on CPU).

## How to run it

- Fiji with deepImageJ: install deepImageJ, then "Install model" from this zip (local file),
  open an image and run the model from the deepImageJ Run dialog.
- napari: the bioimage.io plugin (napari-bioimageio / bioimageio.core) loads the zip and
  predicts the open layer.
- Python: `bioimageio.core` (`bioimageio predict` or `load_model_description` + `predict`).

## Citation

If you use this model, cite:

{cites}
"""


# ------------------------------------------------------------------ the package


def _onnx_prediction(onnx_path: str, pred: inference.Predictor, image: np.ndarray) -> np.ndarray:
  """What a consumer computes: the package's processing around ONNX Runtime, (*spatial, C)."""
  import onnxruntime
  x = np.asarray(image, np.float32)
  if pred.transform == "none":  # the rdf's fixed_zero_mean_unit_variance
    x = (x - pred.mean.astype(np.float32)) / pred.std.astype(np.float32)
  session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
  y = session.run(None, {onnx_export.INPUT: np.moveaxis(x, -1, 0)[None]})[0]
  y = np.moveaxis(y[0], 0, -1)
  if pred.transform == "none":  # scale_linear
    y = y * pred.std.astype(np.float32) + pred.mean.astype(np.float32)
  return y


def onnx_model(pred: inference.Predictor):
  """The predictor's network as ONNX: normalized units, or data units for Anscombe."""
  return onnx_export.unet_to_onnx(pred.model, pred.variables, pred.in_channels,
                                  len(pred.spatial_axes),
                                  None if pred.transform == "none" else pred.normalize,
                                  border=pred.halo)


def _check_output(output: str, overwrite: bool) -> None:
  if os.path.isdir(output):
    raise ValueError(f"--output {output} is a folder; give a .zip file name")
  cluster.refuse_existing(output, overwrite)


def export_bioimageio(workdir: str, output: str, name: str | None = None,
                      authors: list[str] | tuple = (), license_id: str = DEFAULT_LICENSE,
                      test_input: str | np.ndarray | None = None, test_axes: str | None = None,
                      overwrite: bool = False) -> dict:
  """Writes the bioimage.io package of a trained workdir to `output` (a .zip); returns
  {'output', 'max_abs', 'relative'}: ONNX Runtime vs n2v_jax on the test input.

  test_input: a TIFF/.npy path (axes from the file or `test_axes`) or an array
  (*spatial, C); default: a region of the first training image, from config.json."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"{workdir}: no such workdir")
  _check_output(output, overwrite)
  pred = inference.load_predictor(workdir, blend=False)  # the network alone is exported
  name = check_name(name) if name else default_name(workdir, pred.meta)
  config_path = os.path.join(workdir, "config.json")
  config = checkpoint.read_json(config_path) if os.path.exists(config_path) else {}
  summary_path = os.path.join(workdir, "summary.json")
  summary = checkpoint.read_json(summary_path) if os.path.exists(summary_path) else None

  image = choose_test_input(pred, workdir, test_input, test_axes)
  expected = inference.predict_image(pred, image, tile=0)  # n2v_jax's own, in one call
  with tempfile.TemporaryDirectory() as tmp:
    files = {k: os.path.join(tmp, v) for k, v in [
        ("weights", "weights.onnx"), ("test_input", "test_input.npy"),
        ("test_output", "test_output.npy"), ("sample_input", "sample_input.tif"),
        ("sample_output", "sample_output.tif"), ("cover", "cover.png"), ("readme", "README.md"),
        ("rdf", "rdf.yaml")]}
    import onnx
    onnx.save(onnx_model(pred), files["weights"])
    as_tensor = lambda a: np.ascontiguousarray(np.moveaxis(a, -1, 0)[None], np.float32)
    np.save(files["test_input"], as_tensor(image))
    np.save(files["test_output"], as_tensor(expected))
    # the same as TIFFs, for people and viewers (the format's sample tensors), batch and
    # single channel squeezed
    for key, array in (("sample_input", image), ("sample_output", expected)):
      tifffile.imwrite(files[key], as_tensor(array).squeeze(), photometric="minisblack")
    value_range = float(expected.max() - expected.min()) or 1.0
    max_abs = float(np.abs(_onnx_prediction(files["weights"], pred, image) - expected).max())
    check = {"max_abs": max_abs, "relative": max_abs / value_range}
    if check["relative"] > TOLERANCE_OF_RANGE:
      raise RuntimeError(f"the ONNX graph differs from n2v_jax by {check['relative']:.2e} of the "
                         "output range on the test input; not writing a package")
    report.before_after_figure(image[..., 0], expected[..., 0], None, files["cover"],
                               titles=("input", method_name(pred.meta)))
    with open(files["readme"], "w") as f:
      f.write(readme(pred, name, config, summary, check))
    rdf = describe(pred, name, list(authors), license_id, files,
                   TOLERANCE_OF_RANGE * value_range, config)
    with open(files["rdf"], "w") as f:
      f.write(to_yaml(rdf))
    attachments = {"config.json": config_path, "model.json":
                   os.path.join(workdir, checkpoint.MODEL_JSON)}
    _write_zip(output, [(p, os.path.basename(p)) for p in files.values()]
               + [(p, n) for n, p in attachments.items() if os.path.exists(p)], overwrite)
  return {"output": output, **check}


def to_yaml(content: dict) -> str:
  import yaml

  class Plain(yaml.SafeDumper):  # no &id001 anchors where a list appears twice
    def ignore_aliases(self, data):
      return True
  return yaml.dump(content, Dumper=Plain, sort_keys=False, allow_unicode=True)


def _write_zip(output: str, entries: list[tuple[str, str]], overwrite: bool) -> None:
  """All or nothing (cluster.atomic_output); entries readable when unpacked."""
  with cluster.atomic_output(output, overwrite) as tmp, zipfile.ZipFile(tmp, "w") as z:
    for path, arcname in entries:
      info = zipfile.ZipInfo.from_file(path, arcname)
      info.external_attr = 0o644 << 16  # the temporary files were 0600
      info.compress_type = zipfile.ZIP_DEFLATED
      with open(path, "rb") as f:
        z.writestr(info, f.read())


def main(argv) -> None:
  del argv
  from absl import flags
  f = flags.FLAGS
  try:
    result = export_bioimageio(f.workdir, f.output, f.name or None, f.authors or (), f.license,
                               f.test_input or None, f.test_axes or None, f.overwrite)
  except (ValueError, OSError, RuntimeError) as e:  # RuntimeError: the ONNX graph differs
    print(f"error: {cluster.error_message(e)}", file=sys.stderr)
    sys.exit(1)
  print(f"wrote {result['output']} (ONNX vs n2v_jax on the test input: max |difference| "
        f"{result['max_abs']:.3g}, {result['relative']:.1e} of the output range)")
  if not f.authors:
    print("note: no --authors given; add them before sharing the model on bioimage.io",
          file=sys.stderr)


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("workdir", None, "Trained workdir (model.json + checkpoints).")
  flags.DEFINE_string("output", None, "The package to write, e.g. my_model.zip.")
  flags.DEFINE_string("name", "", "Model name (letters, digits, spaces, _+-()); default: "
                      "from the workdir.")
  flags.DEFINE_list("authors", [], "Authors, comma-separated, e.g. 'Jane Doe,John Roe'.")
  flags.DEFINE_string("license", DEFAULT_LICENSE, "SPDX license id of the model.")
  flags.DEFINE_string("test_input", "", "Test image (TIFF or .npy); default: a region of the "
                      "first training image.")
  flags.DEFINE_string("test_axes", "", "Axes of --test_input, e.g. CYX; default: from the file.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
  flags.mark_flags_as_required(["workdir", "output"])
  from n2v_jax import cli
  cli.run(main)
