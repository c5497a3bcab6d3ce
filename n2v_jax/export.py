"""Export: `python -m n2v_jax.export --workdir DIR --output MODEL.zip` (also `n2v-export`):
the bioimage.io package of a trained workdir, for Fiji/deepImageJ, napari and
bioimageio.core (`bioimage.package`)."""

import sys

from absl import flags

from n2v_jax import cli
from n2v_jax.bioimage import package, rdf


def _main(argv) -> None:
  del argv
  f = flags.FLAGS
  with cli.reporting_errors():
    result = package.export_bioimageio(f.workdir, f.output, f.name or None, f.authors or (),
                                       f.license, f.test_input or None, f.test_axes or None,
                                       f.overwrite)
  print(f"wrote {result['output']} (ONNX vs n2v_jax on the test input: max |difference| "
        f"{result['max_abs']:.3g}, {result['relative']:.1e} of the output range)")
  if not f.authors:
    print("note: no --authors given; add them before sharing the model on bioimage.io",
          file=sys.stderr)


def main() -> None:
  flags.DEFINE_string("workdir", None, "Trained workdir (model.json + checkpoints).")
  flags.DEFINE_string("output", None, "The package to write, e.g. my_model.zip.")
  flags.DEFINE_string("name", "", "Model name (letters, digits, spaces, _+-()); default: "
                      "from the workdir.")
  flags.DEFINE_list("authors", [], "Authors, comma-separated, e.g. 'Jane Doe,John Roe'.")
  flags.DEFINE_string("license", rdf.DEFAULT_LICENSE, "SPDX license id of the model.")
  flags.DEFINE_string("test_input", "", "Test image (TIFF or .npy); default: a region of the "
                      "first training image.")
  flags.DEFINE_string("test_axes", "", "Axes of --test_input, e.g. CYX; default: from the file.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
  flags.mark_flags_as_required(["workdir", "output"])
  cli.run(_main)


if __name__ == "__main__":
  main()
