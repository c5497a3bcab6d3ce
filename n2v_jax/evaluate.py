"""Scoring: `python -m n2v_jax.evaluate --workdir W --noisy NOISY_DIR --clean CLEAN_DIR
--output OUT_DIR` (also `n2v-evaluate`): PSNR and SSIM of a trained model against clean
images, with and without TTA and the SURE blend (`inference.evaluation`)."""

from absl import flags

from n2v_jax import cli
from n2v_jax.inference import evaluation, options as options_lib

_MODES = {"off": (False,), "on": (True,), "both": (False, True)}


def _main(argv) -> None:
  del argv
  f = flags.FLAGS
  with cli.reporting_errors():
    summary = evaluation.evaluate(
        f.workdir, f.noisy, f.clean, f.output, tta_modes=_MODES[f.tta],
        blend_modes=None if f.blend == "auto" else _MODES[f.blend],
        options=options_lib.PredictOptions(tile=f.tile, overwrite=f.overwrite),
        data_range=f.data_range)
  mean, std = summary["mean"], summary["std"]
  print(f"{summary['images']} images, data range {summary['data_range']:g}")
  for key in [k for k in mean if k.endswith("psnr") or k.endswith("ssim") or "clean_range" in k]:
    print(f"  {key:26s} {mean[key]:8.3f} ± {std[key]:.3f}")


def main() -> None:
  flags.DEFINE_string("workdir", None, "Trained workdir.")
  flags.DEFINE_string("noisy", None, "Folder of noisy images (TIFF or PNG).")
  flags.DEFINE_string("clean", None, "Folder of clean images with the same file stems.")
  flags.DEFINE_string("output", None, "Folder for per_image.csv and evaluation.json.")
  flags.DEFINE_enum("tta", "both", list(_MODES), "Score without/with 8-fold TTA.")
  flags.DEFINE_enum("blend", "auto", ["auto", *_MODES], "Score without/with the SURE blend "
                    "with the input (inference.blend); auto: as the model was trained "
                    "(config.predict.blend).")
  flags.DEFINE_integer("tile", options_lib.DEFAULT_TILE,
                       "Largest tile edge for prediction; 0 = whole image.")
  flags.DEFINE_float("data_range", None, "Fixed PSNR data range (default 255 for 8-bit clean "
                     "images, else the clean set's max - min).")
  flags.DEFINE_bool("overwrite", False, "Replace existing result files.")
  flags.mark_flags_as_required(["workdir", "noisy", "clean"])
  cli.run(_main)


if __name__ == "__main__":
  main()
