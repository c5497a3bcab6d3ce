"""bioimage.io model packages: `export_bioimageio(workdir, output)`, what
`python -m n2v_jax.export` runs.

A trained workdir becomes one zip that Fiji/deepImageJ, napari (bioimage.io plugin) and
`bioimageio.core` run without n2v_jax: `rdf.yaml` (rdf), ONNX weights (weights), a test
input (test_tensors) with n2v_jax's own prediction of it, a before/after cover, a README
with the citations (readme), and the run's config.json and model.json.

Intensities: with `data.transform=none` the network works on normalized values and the
package says so in bioimage.io terms (`fixed_zero_mean_unit_variance` with the stored
per-channel values before, `scale_linear` back to data units after). The format has no
Anscombe step, so an Anscombe model carries its whole intensity mapping (transform,
normalization and their inverses) inside the ONNX graph: raw counts in, counts out.

The workdir is read as prediction reads it (`load_predictor`: JSON + orbax); no code from
it runs. The zip is written to a temporary file and renamed into place.
"""

import os
import tempfile
import zipfile

import numpy as np
import tifffile

from n2v_jax.bioimage import rdf, readme as readme_lib, test_tensors, weights
from n2v_jax.errors import N2VError, NotFoundError
from n2v_jax.inference import predictor
from n2v_jax.inference.options import PredictOptions
from n2v_jax.io import figures, files
from n2v_jax.workdir import saved_config
from n2v_jax.workdir.model_meta import MODEL_JSON


def _onnx_prediction(onnx_path: str, pred: predictor.Predictor, image: np.ndarray) -> np.ndarray:
  """What a consumer computes: the package's processing around ONNX Runtime, (*spatial, C)."""
  import onnxruntime
  x = np.asarray(image, np.float32)
  if pred.transform == "none":  # the rdf's fixed_zero_mean_unit_variance
    x = (x - pred.mean.astype(np.float32)) / pred.std.astype(np.float32)
  session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
  y = session.run(None, {weights.INPUT: np.moveaxis(x, -1, 0)[None]})[0]
  y = np.moveaxis(y[0], 0, -1)
  if pred.transform == "none":  # scale_linear
    y = y * pred.std.astype(np.float32) + pred.mean.astype(np.float32)
  return y


def _check_output(output: str, overwrite: bool) -> None:
  if os.path.isdir(output):
    raise N2VError(f"--output {output} is a folder; give a .zip file name")
  files.refuse_existing(output, overwrite)
  files.check_output_folder(output)


def export_bioimageio(workdir: str, output: str, name: str | None = None,
                      authors: list[str] | tuple = (), license_id: str = rdf.DEFAULT_LICENSE,
                      test_input: str | np.ndarray | None = None, test_axes: str | None = None,
                      overwrite: bool = False) -> dict:
  """Writes the bioimage.io package of a trained workdir to `output` (a .zip); returns
  {'output', 'max_abs', 'relative'}: ONNX Runtime vs n2v_jax on the test input.

  test_input: a TIFF/.npy path (axes from the file or `test_axes`) or an array
  (*spatial, C); default: a region of the first training image, from config.json."""
  if not os.path.isdir(workdir):
    raise NotFoundError(f"{workdir}: no such workdir")
  _check_output(output, overwrite)
  pred = predictor.load_predictor(workdir)
  name = rdf.check_name(name) if name else rdf.default_name(workdir, pred.meta)
  config_path = saved_config.path(workdir)
  config = files.read_json(config_path) if os.path.exists(config_path) else {}
  summary_path = os.path.join(workdir, "summary.json")
  summary = files.read_json(summary_path) if os.path.exists(summary_path) else None

  image = test_tensors.choose_test_input(pred, workdir, test_input, test_axes)
  # n2v_jax's own prediction, in one call, of the network alone (the SURE blend is not in
  # the package)
  expected = predictor.predict_image(pred, image, PredictOptions(tile=0, blend=False))
  with tempfile.TemporaryDirectory() as tmp:
    paths = {k: os.path.join(tmp, v) for k, v in [
        ("weights", "weights.onnx"), ("test_input", "test_input.npy"),
        ("test_output", "test_output.npy"), ("sample_input", "sample_input.tif"),
        ("sample_output", "sample_output.tif"), ("cover", "cover.png"), ("readme", "README.md"),
        ("rdf", "rdf.yaml")]}
    import onnx
    onnx.save(weights.onnx_model(pred), paths["weights"])
    as_tensor = lambda a: np.ascontiguousarray(np.moveaxis(a, -1, 0)[None], np.float32)
    np.save(paths["test_input"], as_tensor(image))
    np.save(paths["test_output"], as_tensor(expected))
    # the same as TIFFs, for people and viewers (the format's sample tensors), batch and
    # single channel squeezed
    for key, array in (("sample_input", image), ("sample_output", expected)):
      tifffile.imwrite(paths[key], as_tensor(array).squeeze(), photometric="minisblack")
    value_range = float(expected.max() - expected.min()) or 1.0
    max_abs = float(np.abs(_onnx_prediction(paths["weights"], pred, image) - expected).max())
    check = {"max_abs": max_abs, "relative": max_abs / value_range}
    if check["relative"] > rdf.TOLERANCE_OF_RANGE:
      raise N2VError(f"the ONNX graph differs from n2v_jax by {check['relative']:.2e} of the "
                     "output range on the test input; not writing a package")
    figures.before_after_figure(image[..., 0], expected[..., 0], None, paths["cover"],
                                titles=("input", rdf.method_name(pred.meta)))
    with open(paths["readme"], "w") as f:
      f.write(readme_lib.readme(pred, name, config, summary, check))
    description = rdf.describe(pred, name, list(authors), license_id, paths,
                               rdf.TOLERANCE_OF_RANGE * value_range, config)
    with open(paths["rdf"], "w") as f:
      f.write(rdf.to_yaml(description))
    attachments = {"config.json": config_path, "model.json":
                   os.path.join(workdir, MODEL_JSON)}
    _write_zip(output, [(p, os.path.basename(p)) for p in paths.values()]
               + [(p, n) for n, p in attachments.items() if os.path.exists(p)], overwrite)
  return {"output": output, **check}


def _write_zip(output: str, entries: list[tuple[str, str]], overwrite: bool) -> None:
  """All or nothing (files.atomic_output); entries readable when unpacked."""
  with files.atomic_output(output, overwrite) as tmp, zipfile.ZipFile(tmp, "w") as z:
    for path, arcname in entries:
      info = zipfile.ZipInfo.from_file(path, arcname)
      info.external_attr = 0o644 << 16  # the temporary files were 0600
      info.compress_type = zipfile.ZIP_DEFLATED
      with open(path, "rb") as f:
        z.writestr(info, f.read())
