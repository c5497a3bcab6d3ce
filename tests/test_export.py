"""bioimage.io export: ONNX Runtime reproduces n2v_jax, the package passes the official
validator, bad inputs fail cleanly."""

import io
import os
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest
import yaml

from n2v_jax.bioimage import package
from n2v_jax.bioimage import rdf
from n2v_jax.data import dataset as dataset_lib
from n2v_jax.inference import predictor
from n2v_jax.nn import unet
from n2v_jax.training import config as train_config
from n2v_jax.training import session
from n2v_jax.training import steps
from n2v_jax.training import trainer
from n2v_jax.workdir import checkpoint, model_meta, saved_config
from n2v_jax.inference.options import PredictOptions
from tests.helpers import REPO, noisy_stack, tiny_config, write_tiff

onnxruntime = pytest.importorskip("onnxruntime")

# ONNX Runtime vs n2v_jax on CPU, relative to the output's range (measured: ~1e-6).
TOLERANCE = 1e-4

# 2d_n2v is trained; the others are workdirs as training writes them, holding perturbed
# initial parameters and batch statistics (export only reads a workdir; training them would
# cost ~15 s each on 2 cores).
CASES = {
    "2d_n2v": dict(trained=True),
    "2d_n2v2_3ch_bilinear": dict(file=((3, 40, 48), "CYX"), **{
        "model.n2v2": True, "mask.strategy": "median", "model.upsampling": "bilinear",
        "model.depth": 2}),
    "2d_anscombe": dict(file=((48, 48), "YX"), **{"data.transform": "anscombe"}),
    "3d_n2v": dict(file=((12, 24, 24), "ZYX"), **{"data.patch_shape": (8, 16, 16)}),
    "3d_n2v2_2ch_independent": dict(file=((12, 2, 24, 24), "ZCYX"), **{
        "data.patch_shape": (8, 16, 16), "model.n2v2": True,
        "model.independent_channels": True, "model.residual": True}),
}


def _untrained_workdir(config, workdir: str) -> None:
  """config.json, model.json and a checkpoint, as trainer.train_and_evaluate writes them, with
  random parameters and batch statistics away from (0, 1), so that folding matters. Drawn
  in NumPy into the state's shapes (jax.eval_shape): compiling the init of the 3D N2V2
  U-Net alone takes ~20 s here."""
  train_config.validate(config)
  dataset = dataset_lib.load(config.data, config.seed, unet.divisor(config.model.depth))
  model = unet.make_model(config.model, dataset.in_channels)
  os.makedirs(workdir, exist_ok=True)
  saved_config.write(workdir, config, {"devices": 1})
  model_meta.ModelMeta.from_run(config, dataset).write(workdir)
  abstract = jax.eval_shape(session.init_fn(model, steps.make_optimizer(config.opt), dataset),
                            jax.random.key(0))
  rng = np.random.default_rng(0)

  def draw(path, a):
    name = jax.tree_util.keystr(path)
    if "variables" not in name:  # step, optimizer and plateau state
      return np.zeros(a.shape, a.dtype)
    if name.endswith("['kernel']"):  # He: unit-variance activations through the ReLUs
      return rng.normal(0, np.sqrt(2 / np.prod(a.shape[:-1])), a.shape).astype(a.dtype)
    if name.endswith("['scale']") or name.endswith("['var']"):
      return rng.uniform(0.5, 1.5, a.shape).astype(a.dtype)
    return rng.normal(0, 0.1, a.shape).astype(a.dtype)  # biases, means
  state = jax.tree_util.tree_map_with_path(draw, abstract)
  mngr = checkpoint.manager(workdir)
  checkpoint.save(mngr, 0, state)
  mngr.wait_until_finished()


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
  """case -> (workdir, package zip), trained and exported once per module."""
  made = {}

  def get(case):
    if case not in made:
      d = tmp_path_factory.mktemp(case)
      overrides = dict(CASES[case])
      file, trained = overrides.pop("file", None), overrides.pop("trained", False)
      if file is not None:
        shape, axes = file
        overrides.update({"data.path": write_tiff(d / "train.tif", noisy_stack(1, shape), axes),
                          "data.axes": axes})
      config = tiny_config(**{"train.num_steps": 2, "data.val_fraction": 0.0, **overrides})
      if trained:
        trainer.train_and_evaluate(config, str(d / "w"))
      else:
        _untrained_workdir(config, str(d / "w"))
      result = package.export_bioimageio(str(d / "w"), str(d / "model.zip"), authors=["A Tester"])
      made[case] = str(d / "w"), result["output"]
    return made[case]
  return get


def _member(zip_path: str, name: str) -> bytes:
  with zipfile.ZipFile(zip_path) as z:
    return z.read(name)


def _npy(zip_path: str, name: str) -> np.ndarray:
  return np.load(io.BytesIO(_member(zip_path, name)), allow_pickle=False)


def _consumer_predict(zip_path: str, x_BC: np.ndarray) -> np.ndarray:
  """What a bioimage.io consumer does, from the rdf alone: preprocessing, the ONNX weights
  in ONNX Runtime, postprocessing. (B, C, *spatial) -> (B, C, *spatial)."""
  rdf = yaml.safe_load(_member(zip_path, "rdf.yaml"))
  per_channel = lambda v: np.asarray(v, np.float32).reshape(1, -1, *[1] * (x_BC.ndim - 2))
  x = x_BC.astype(np.float32)
  for step in rdf["inputs"][0]["preprocessing"]:
    if step["id"] == "fixed_zero_mean_unit_variance":
      x = (x - per_channel(step["kwargs"]["mean"])) / per_channel(step["kwargs"]["std"])
    else:
      assert step["id"] == "ensure_dtype"
  session = onnxruntime.InferenceSession(_member(zip_path, rdf["weights"]["onnx"]["source"]),
                                         providers=["CPUExecutionProvider"])
  y = session.run(None, {session.get_inputs()[0].name: x})[0]
  for step in rdf["outputs"][0]["postprocessing"]:
    if step["id"] == "scale_linear":
      y = y * per_channel(step["kwargs"]["gain"]) + per_channel(step["kwargs"]["offset"])
    else:
      assert step["id"] == "ensure_dtype"
  return y


def _n2v_jax_predict(pred, x_BC: np.ndarray) -> np.ndarray:
  whole = PredictOptions(tile=0)
  return np.stack([np.moveaxis(predictor.predict_image(pred, np.moveaxis(x, 0, -1), whole), -1, 0)
                   for x in x_BC])


def _relative_error(actual, expected) -> float:
  return float(np.abs(actual - expected).max() / (expected.max() - expected.min()))


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_reproduces_n2v_jax_on_test_input_and_other_sizes(packages, case):
  workdir, zip_path = packages(case)
  pred = predictor.load_predictor(workdir)
  x, expected = _npy(zip_path, "test_input.npy"), _npy(zip_path, "test_output.npy")
  nd = len(pred.spatial_axes)
  assert x.shape == expected.shape and x.shape[:2] == (1, pred.in_channels) and x.ndim == nd + 2
  np.testing.assert_array_equal(expected, _n2v_jax_predict(pred, x))  # n2v_jax's own output
  assert _relative_error(_consumer_predict(zip_path, x), expected) < TOLERANCE

  # another size (still min + n * step) and a batch of two different images
  rdf = yaml.safe_load(_member(zip_path, "rdf.yaml"))
  sizes = [a["size"] for a in rdf["inputs"][0]["axes"] if a["type"] == "space"]
  shape = [s["min"] + n * s["step"] for s, n in zip(sizes, (2, 1, 3))]
  assert shape != list(x.shape[2:])
  rng = np.random.default_rng(0)
  other = np.abs(x.mean() + x.std() * rng.normal(size=(2, pred.in_channels, *shape)))
  other = other.astype(np.float32)
  assert _relative_error(_consumer_predict(zip_path, other), _n2v_jax_predict(pred, other)) \
      < TOLERANCE


@pytest.mark.parametrize("case", ["2d_n2v", "3d_n2v2_2ch_independent"])
def test_package_contents(packages, case):
  workdir, zip_path = packages(case)
  with zipfile.ZipFile(zip_path) as z:
    names = set(z.namelist())
  assert {"rdf.yaml", "weights.onnx", "test_input.npy", "test_output.npy", "cover.png",
          "README.md", "config.json", "model.json"} <= names
  rdf = yaml.safe_load(_member(zip_path, "rdf.yaml"))
  assert rdf["format_version"].startswith("0.5.") and rdf["type"] == "model"
  pred = predictor.load_predictor(workdir)
  out_axes = [a for a in rdf["outputs"][0]["axes"] if a["type"] == "space"]
  assert [a["id"] for a in out_axes] == list(pred.spatial_axes.lower())
  assert all(a["halo"] == pred.halo for a in out_axes)
  in_axes = [a for a in rdf["inputs"][0]["axes"] if a["type"] == "space"]
  assert all(a["size"]["step"] == pred.divisor and a["size"]["min"] > 2 * pred.halo
             for a in in_axes)
  dois = [c["doi"] for c in rdf["cite"]]
  readme = _member(zip_path, "README.md").decode()
  assert "10.1109/CVPR.2019.00223" in dois and "Krull" in readme
  assert ("10.48550/arXiv.2211.08512" in dois) == pred.meta.n2v2
  assert ("Hoeck" in readme) == pred.meta.n2v2
  assert _member(zip_path, "model.json") == open(os.path.join(workdir, "model.json"), "rb").read()
  assert _member(zip_path, "cover.png")[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("case", list(CASES))
def test_package_passes_the_bioimageio_validator(packages, case):
  core = pytest.importorskip(
      "bioimageio.core", reason="bioimageio.core (the bioimage.io validator) is not installed")
  _, zip_path = packages(case)
  summary = core.test_model(zip_path)
  failed = [d.name for d in summary.details if d.status == "failed"]
  assert summary.status == "passed", failed


def test_bad_inputs_write_nothing(packages, tmp_path):
  workdir, zip_path = packages("2d_n2v")
  with pytest.raises(FileNotFoundError, match="no such workdir"):
    package.export_bioimageio(str(tmp_path / "nope"), str(tmp_path / "a.zip"))
  existing = tmp_path / "exists.zip"
  existing.write_bytes(b"keep me")
  with pytest.raises(FileExistsError, match="--overwrite"):
    package.export_bioimageio(workdir, str(existing))
  with pytest.raises(ValueError, match="--name"):
    package.export_bioimageio(workdir, str(tmp_path / "b.zip"), name="bad/name")
  assert existing.read_bytes() == b"keep me"
  assert sorted(os.listdir(tmp_path)) == ["exists.zip"]


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "n2v_jax.export", *args], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=300)


def test_cli(packages, tmp_path):
  workdir, _ = packages("2d_n2v")
  existing = tmp_path / "exists.zip"
  existing.write_bytes(b"keep me")
  missing = _cli("--workdir", str(tmp_path / "nope"), "--output", str(tmp_path / "m.zip"))
  exists = _cli("--workdir", workdir, "--output", str(existing))
  folder = tmp_path / "folder.npy"
  folder.mkdir()  # an OSError the library does not word itself
  folder_input = _cli("--workdir", workdir, "--output", str(tmp_path / "f.zip"),
                      "--test_input", str(folder), "--test_axes", "YXC")
  for r, message in ((missing, "no such workdir"), (exists, "--overwrite"),
                     (folder_input, f"{folder}: Is a directory")):
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], r.stderr
  assert existing.read_bytes() == b"keep me"
  assert sorted(os.listdir(tmp_path)) == ["exists.zip", "folder.npy"]
  ok = _cli("--workdir", workdir, "--output", str(existing), "--overwrite",
            "--name", "Tiny N2V test", "--authors", "Jane Doe,John Roe")
  assert ok.returncode == 0, ok.stderr
  assert "wrote" in ok.stdout
  rdf = yaml.safe_load(_member(str(existing), "rdf.yaml"))
  assert rdf["name"] == "Tiny N2V test"
  assert [a["name"] for a in rdf["authors"]] == ["Jane Doe", "John Roe"]


def test_test_input_from_a_file_is_cropped_and_padded(packages, tmp_path):
  workdir, _ = packages("2d_n2v2_3ch_bilinear")
  pred = predictor.load_predictor(workdir)
  _, min_size, _ = rdf.size_constraints(pred)
  image = noisy_stack(5, (3, min_size + 2, min_size - 2))
  path = write_tiff(tmp_path / "test.tif", image, "CYX")
  package.export_bioimageio(workdir, str(tmp_path / "m.zip"), test_input=path)
  x = _npy(str(tmp_path / "m.zip"), "test_input.npy")
  assert x.shape == (1, 3, min_size, min_size)  # Y cropped (centred), X reflect-padded
  np.testing.assert_array_equal(x[0, :, :, :min_size - 2], image[:, 1:min_size + 1])


def _core_predict(zip_path: str, x_BC: np.ndarray, block_n: int | None) -> np.ndarray:
  """What bioimage.io consumers run (`bioimageio predict`, napari's bioimage.io plugin):
  bioimageio.core's prediction pipeline, on the whole image (it pads the declared halo) or
  block by block (blocks of the parameterized size min + block_n * step, the halo around each)."""
  from bioimageio.core import predict
  sample = predict(model=zip_path, inputs=x_BC, blocksize_parameter=block_n)
  (member,) = sample.members.values()
  return np.asarray(member.data)


def _image_like(x: np.ndarray, shape, seed: int) -> np.ndarray:
  """A new noisy image with the test input's statistics: smooth structure (what the network
  denoises, so that borders matter) plus noise, of the given (B, C, *spatial) shape."""
  rng = np.random.default_rng(seed)
  grids = np.meshgrid(*[np.linspace(0, 3 * np.pi, n) for n in shape[2:]], indexing="ij")
  structure = np.prod([np.sin(g + i) for i, g in enumerate(grids)], axis=0)
  image = x.mean() + x.std() * (structure + 0.5 * rng.normal(size=shape))
  return np.abs(image).astype(np.float32)


@pytest.mark.parametrize("blockwise", [False, True], ids=["whole", "blockwise"])
@pytest.mark.parametrize("case", list(CASES))
def test_bioimageio_core_predict_reproduces_n2v_jax(packages, case, blockwise):
  """A consumer's prediction on a new image, of another size than the test tensor's, borders
  included, equals n2v_jax's: the input declares the padding the network was built around."""
  pytest.importorskip("bioimageio.core", reason="bioimageio.core is not installed")
  workdir, zip_path = packages(case)
  pred = predictor.load_predictor(workdir)
  test_x = _npy(zip_path, "test_input.npy")
  step, min_size, halo = rdf.size_constraints(pred)
  # Sizes the pipeline accepts (it checks the whole image against min + n * step, after
  # padding the halo when not blockwise), none equal to the test tensor's. Blockwise: blocks
  # whose cores are about a third of the image, so that there are inner and border blocks and
  # the last one along an axis is cut by the image's end.
  block_n = halo // step if blockwise else None
  base = min_size + (halo // step) * step if blockwise else step * (min_size // step)
  spatial = [base + k * step for k in (3, 1, 2)][:len(pred.spatial_axes)]
  x = _image_like(test_x, (1, pred.in_channels, *spatial), seed=len(case))
  assert x.shape != test_x.shape
  expected = _n2v_jax_predict(pred, x)
  actual = _core_predict(zip_path, x, block_n)
  assert actual.shape == expected.shape
  assert _relative_error(actual, expected) < 1e-5
